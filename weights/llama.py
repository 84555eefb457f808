"""Llama, Mistral, Qwen 2 and Qwen 3 checkpoints (config.json's model_type "llama", "mistral", "qwen2", "qwen3"),
as their hub repositories hold them, read into minigpt.llama.Llama.

As for the other families (weights/families.py), two things:
  llama_config   config.json read into a LlamaConfig, in either of the forms transformers writes: 4.x's rope_theta
                 and rope_scaling, or 5's rope_parameters. What minigpt/llama.py does not implement is refused with
                 a one-line message naming the field (`refuse_unless`). Where HF's four classes differ in what they
                 read (biases, the sliding window, Qwen 3's head_dim default), each is read as its own class reads it.
  llama_key_map  parameter → (key in the file, shape there, how it becomes the parameter), weights/keys.py's
                 KeyMap; key None: not in the file, made by the function (`zeros`, a bias the release lacks).

The files (meta-llama/Llama-3.2-1B, TinyLlama, SmolLM2, Mistral-7B-v0.1, Qwen2.5-0.5B, Qwen3-0.6B): model.safetensors
(sharded for the larger ones), bfloat16 as released, keys under "model." but lm_head.weight: an untied model's
unembedding (TinyLlama, Mistral), left out by a tied one (Llama-3.2-1B, Qwen) or a copy of the embedding, checked
and not read. Files written before transformers 4.31 hold each layer's rotary inv_freq, which minigpt computes.
Every layer is an nn.Linear, weight [out, in]: transposed once here, as for GPT-Neo and OPT.
"""

import re

import torch

from minigpt.llama import ROPE_TYPES, Llama, LlamaConfig

from .formats import json_field
from .keys import KeyMap, Layout, fields, from_heads, in_out, make_config, refuse_unless, same

MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
SLIDING, FULL = "sliding_attention", "full_attention"  # Qwen's layer_types


def llama_config(hf: dict, path) -> LlamaConfig:
    get = fields(hf, path)
    model_type = get("model_type", str)
    activation = get("hidden_act", str, "silu")
    refuse_unless(activation == "silu", path, f"hidden_act {activation!r}; minigpt's gated MLP is SwiGLU (silu)")
    if model_type == "llama":  # LlamaMLP's biases: the other three classes have no mlp_bias field
        refuse_unless(not get("mlp_bias", bool, False), path, "mlp_bias is true; minigpt's gated MLP has no biases")
    for name in ("attn_logit_softcapping", "final_logit_softcapping"):  # Gemma 2's; no class here reads them
        refuse_unless(hf.get(name) is None, path, f"{name} is {hf.get(name)}; {model_type} has no softcapping in minigpt")
    # pretraining_tp (Llama 2) only cut 4.x's matrix products into slices of the same sum: unread, as in transformers 5.
    shape = sizes(hf, path, d_head=128 if model_type == "qwen3" else None)  # Qwen3Config's head_dim defaults to 128
    n_heads, n_kv_heads = shape["n_heads"], shape["n_kv_heads"]  # refused naming config.json's fields
    refuse_unless(
        n_heads % n_kv_heads == 0,
        path,
        f"num_attention_heads {n_heads} is not a multiple of num_key_value_heads {n_kv_heads}: query heads cannot share "
        "key-value heads in equal groups",
    )
    qkv_bias, o_bias = attention_biases(model_type, get)
    return make_config(
        LlamaConfig,
        path,
        **shape,
        **rope(hf, path),
        qk_norm=model_type == "qwen3",
        **sliding_window(model_type, hf, path, shape["n_layers"]),
        qkv_bias=qkv_bias,
        o_bias=o_bias,
        tied=get("tie_word_embeddings", bool, False),  # HF's default, in all four config classes
    )


def sizes(hf: dict, path, d_head: int | None = None, eps: float = 1e-6) -> dict:
    """LlamaConfig's sizes as Llama's, OLMo 2's and Gemma's config.json name them (head_dim's default: d_head)."""
    get = fields(hf, path)
    d_model, n_heads = get("hidden_size", int), get("num_attention_heads", int)
    return dict(
        n_layers=get("num_hidden_layers", int),
        d_model=d_model,
        n_heads=n_heads,
        d_head=get("head_dim", int, d_head or d_model // n_heads),  # else hidden_size / heads
        d_mlp=get("intermediate_size", int),
        d_vocab=get("vocab_size", int),
        n_ctx=get("max_position_embeddings", int),
        ln_eps=get("rms_norm_eps", float, eps),
        n_kv_heads=get("num_key_value_heads", int, n_heads),  # HF's default: one key-value head per query head
    )


def attention_biases(model_type: str, get) -> tuple[bool, bool]:
    """(q, k and v have biases, the output has one), as each of HF's attention classes builds its nn.Linear layers."""
    if model_type == "qwen2":
        return True, False  # Qwen2Attention: bias=True on q, k, v, never on o_proj
    if model_type == "mistral":
        return False, False  # MistralAttention: no biases, whatever config.json says
    bias = get("attention_bias", bool, False)  # LlamaAttention, Qwen3Attention: all four or none
    return bias, bias


def rope(hf: dict, path) -> dict:
    """The rotary embedding's fields of LlamaConfig, from either form of config.json. As HF's
    convert_rope_params_to_dict: `rope_scaling or rope_parameters`, whose rope_theta wins over the top-level field
    (4.x's), whose rope_type wins over 4.x's "type"; llama3's original_max_position_embeddings, if at the top level,
    wins over the dict's (HF's standardize_rope_params), and is max_position_embeddings when absent from both."""
    get = fields(hf, path)
    name = "rope_scaling" if get("rope_scaling", dict, {}) else "rope_parameters"
    params = get(name, dict, {})
    inner = fields(params, f"{path}: {name}")
    refuse_unless(
        not any(isinstance(value, dict) for value in params.values()),
        path,
        f"{name} holds one rotary embedding per layer type; minigpt's Llama has one for every layer",
    )
    kind = params.get("rope_type", params.get("type", "default"))
    refuse_unless(
        kind in ROPE_TYPES, path, f"{name} has rope_type {kind!r}; minigpt implements the rope types {', '.join(ROPE_TYPES)}"
    )
    partial = inner("partial_rotary_factor", float, get("partial_rotary_factor", float, 1.0))
    refuse_unless(partial == 1, path, f"partial_rotary_factor is {partial}; minigpt's Llama turns the whole head")
    found = {"rope_base": float(inner("rope_theta", float, get("rope_theta", float, 10000.0))), "rope_type": kind}
    if kind in ("linear", "llama3"):
        found["rope_factor"] = float(inner("factor", float))
    if kind == "llama3":
        found["rope_low_freq_factor"] = float(inner("low_freq_factor", float))
        found["rope_high_freq_factor"] = float(inner("high_freq_factor", float))
        original = inner("original_max_position_embeddings", int, get("max_position_embeddings", int))
        found["rope_original_context"] = get("original_max_position_embeddings", int, original)
    return found


DEFAULT_WINDOW = 4096  # HF's MistralConfig, Qwen2Config, Qwen3Config, Gemma2Config and Gemma3TextConfig


def window_field(hf: dict, path) -> int | None:
    """config.json's sliding_window: absent, HF's default of 4096 positions; null, no window."""
    return fields(hf, path)("sliding_window", int, None) if "sliding_window" in hf else DEFAULT_WINDOW


def sliding_window(model_type: str, hf: dict, path, n_layers: int) -> dict:
    """LlamaConfig's window_size and local_layers. Llama: none. Mistral: sliding_window on every layer (null: none).
    Qwen 2 and 3: the window is sliding_window only if use_sliding_window; layer_types names the layers, or, in
    4.x's configs, the layers from max_window_layers on (HF's Qwen2Config.__post_init__)."""
    get = fields(hf, path)
    if model_type == "llama":
        return {}
    if model_type == "mistral":
        window = window_field(hf, path)
        return {"window_size": window, "local_layers": tuple(range(n_layers)) if window else ()}
    window = window_field(hf, path) if get("use_sliding_window", bool, False) else None
    types = get("layer_types", list, None)
    if types is None:
        first = json_field(hf, path, "max_window_layers", int, 28, minimum=0)
        types = [SLIDING if window is not None and i >= first else FULL for i in range(n_layers)]
    refuse_unless(
        len(types) == n_layers and all(kind in (SLIDING, FULL) for kind in types),
        path,
        f"layer_types is {types}; expected {n_layers} of {SLIDING!r} and {FULL!r}",
    )
    local = tuple(i for i, kind in enumerate(types) if kind == SLIDING)
    refuse_unless(
        window is not None or not local,
        path,
        "layer_types names sliding_attention layers, but use_sliding_window is false or sliding_window is null",
    )
    return {"window_size": window if local else None, "local_layers": local}


def per_head(n_heads: int, d_head: int, d_model: int):
    """nn.Linear's [n_heads·d_head, d_model] → [n_heads, d_model, d_head], one matrix per (query or key-value) head."""
    return lambda W: W.T.reshape(d_model, n_heads, d_head).permute(1, 0, 2).contiguous()


def zeros(*shape: int) -> tuple:
    """A parameter the files do not hold: zeros, made by the key map (key None)."""
    return None, (), lambda _: torch.zeros(shape)


def rms_norm(name: str, key: str, width: int) -> KeyMap:
    return {f"{name}.w": (f"{key}.weight", (width,), same)}


def llama_key_map(cfg: LlamaConfig) -> KeyMap:
    d, e, d_mlp = cfg.d_model, cfg.d_head, cfg.d_mlp
    key_map = {"W_E": ("embed_tokens.weight", (cfg.d_vocab, d), same)}
    for i in range(cfg.n_layers):
        block, at = f"blocks.{i}", f"layers.{i}"
        attn = f"{at}.self_attn"
        key_map |= rms_norm(f"{block}.ln1", f"{at}.input_layernorm", d)
        key_map |= rms_norm(f"{block}.ln2", f"{at}.post_attention_layernorm", d)
        for n, proj, h in (("Q", "q_proj", cfg.n_heads), ("K", "k_proj", cfg.n_kv_heads), ("V", "v_proj", cfg.n_kv_heads)):
            key_map[f"{block}.attn.W_{n}"] = (f"{attn}.{proj}.weight", (h * e, d), per_head(h, e, d))
            bias = (f"{attn}.{proj}.bias", (h * e,), lambda b, h=h: b.reshape(h, e).clone())
            key_map[f"{block}.attn.b_{n}"] = bias if cfg.qkv_bias else zeros(h, e)
        key_map[f"{block}.attn.W_O"] = (f"{attn}.o_proj.weight", (d, cfg.n_heads * e), from_heads(cfg, linear=True))
        key_map[f"{block}.attn.b_O"] = (f"{attn}.o_proj.bias", (d,), same) if cfg.o_bias else zeros(d)
        if cfg.qk_norm:
            for norm in ("q_norm", "k_norm"):
                key_map |= rms_norm(f"{block}.attn.{norm}", f"{attn}.{norm}", e)
        key_map[f"{block}.mlp.W_gate"] = (f"{at}.mlp.gate_proj.weight", (d_mlp, d), in_out)
        key_map[f"{block}.mlp.W_in"] = (f"{at}.mlp.up_proj.weight", (d_mlp, d), in_out)
        key_map[f"{block}.mlp.W_out"] = (f"{at}.mlp.down_proj.weight", (d, d_mlp), in_out)
        key_map[f"{block}.mlp.b_in"], key_map[f"{block}.mlp.b_out"] = zeros(d_mlp), zeros(d)
    key_map |= rms_norm("ln_final", "norm", d)
    if not cfg.tied:  # lm_head [d_vocab, d_model]; W_U its transpose as a view, as GPT-NeoX's embed_out
        key_map["W_U"] = ("lm_head.weight", (cfg.d_vocab, d), lambda W: W.T)
    return key_map


# Not read: old files' rotary buffers; lm_head.weight when tied (checked equal to W_E; read when untied: match_keys).
IGNORED = re.compile(r"layers\.\d+\.self_attn\.rotary_emb\.inv_freq|lm_head\.weight")
LAYOUT = Layout(Llama, llama_key_map, "model.", IGNORED, tied_to="embed_tokens.weight")
