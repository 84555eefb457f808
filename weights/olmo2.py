"""OLMo 2 checkpoints (allenai/OLMo-2-0425-1B …), as the hub holds them, read into minigpt/olmo2.py's OLMo2.

Files: model.safetensors (sharded for the larger models), keys under "model." except lm_head.weight, every layer
an nn.Linear without a bias: q_proj, k_proj, v_proj, o_proj; the MLP's gate_proj, up_proj, down_proj; RMSNorm
gains post_attention_layernorm, post_feedforward_layernorm, and q_norm, k_norm over the whole width; norm (the
final one); the untied lm_head. As weights/families.py says: a config reader that refuses in one line what
minigpt/olmo2.py does not implement, and a key map for weights/keys.py's shared reader.

The pieces Llama-like files share (attention with key-value heads, the gated MLP, the rotary settings) are here
too, and weights/gemma.py reads Gemma's files with them.
"""

import re

import torch

from minigpt.config import Config
from minigpt.llama import ROPE_TYPES
from minigpt.olmo2 import OLMo2, OLMo2Config

from . import families  # its helpers, read when called: families.py imports this module to register it
from .keys import KeyMap, Layout, in_out, same


def zeros(*shape: int) -> tuple[None, tuple, callable]:
    """A parameter absent from the files (a bias the layer does not have): zeros, which the rewrites may fill."""
    return (None, (), lambda _: torch.zeros(*shape))


def attention(cfg: Config, block: str, at: str) -> KeyMap:
    """W_Q [n_heads, d_model, d_head], W_K and W_V [n_kv_heads, d_model, d_head], W_O [n_heads, d_head, d_model]
    from `at`.q_proj … o_proj, nn.Linear layers stored [out, in] without biases (so b_Q … b_O are zeros)."""
    d, e, h, kv = cfg.d_model, cfg.d_head, cfg.n_heads, cfg.n_kv_heads

    def heads(n: int):  # [n·d_head, d_model] → [n, d_model, d_head]: rows are (head, d_head) in order
        return lambda W: W.view(n, e, d).transpose(1, 2).contiguous()

    return {
        f"{block}.attn.W_Q": (f"{at}.q_proj.weight", (h * e, d), heads(h)),
        f"{block}.attn.W_K": (f"{at}.k_proj.weight", (kv * e, d), heads(kv)),
        f"{block}.attn.W_V": (f"{at}.v_proj.weight", (kv * e, d), heads(kv)),
        f"{block}.attn.W_O": (f"{at}.o_proj.weight", (d, h * e), lambda W: W.T.reshape(h, e, d).contiguous()),
        f"{block}.attn.b_Q": zeros(h, e),
        f"{block}.attn.b_K": zeros(kv, e),
        f"{block}.attn.b_V": zeros(kv, e),
        f"{block}.attn.b_O": zeros(d),
    }


def gated_mlp(cfg: Config, block: str, at: str) -> KeyMap:
    """W_gate, W_in [d_model, d_mlp] and W_out [d_mlp, d_model] from gate_proj, up_proj, down_proj; zero biases."""
    d, d_mlp = cfg.d_model, cfg.d_mlp
    return {
        f"{block}.mlp.W_gate": (f"{at}.gate_proj.weight", (d_mlp, d), in_out),
        f"{block}.mlp.W_in": (f"{at}.up_proj.weight", (d_mlp, d), in_out),
        f"{block}.mlp.W_out": (f"{at}.down_proj.weight", (d, d_mlp), in_out),
        f"{block}.mlp.b_in": zeros(d_mlp),
        f"{block}.mlp.b_out": zeros(d),
    }


def rope(rope: dict, path, name: str, base: float) -> dict:
    """LlamaConfig's rotary fields from one rope dictionary (rope_scaling, or transformers 5's rope_parameters, or
    one layer type's entry of it), its theta defaulting to `base`; types other than Llama's refused, naming `name`."""
    kind = rope.get("rope_type", rope.get("type", "default"))
    families.refuse_unless(kind in ROPE_TYPES, path, f"{name} has rope_type {kind!r}; minigpt implements {', '.join(ROPE_TYPES)}")
    get = families.fields(rope, f"{path}: {name}")
    settings = {"rope_base": float(get("rope_theta", float, base)), "rope_type": kind}
    if kind != "default":
        settings["rope_factor"] = float(get("factor", float))
    if kind == "llama3":
        settings |= {
            "rope_low_freq_factor": float(get("low_freq_factor", float)),
            "rope_high_freq_factor": float(get("high_freq_factor", float)),
            "rope_original_context": get("original_max_position_embeddings", int),
        }
    return settings


def top_level_rope(hf: dict, path, default_theta: float) -> dict:
    """The rotary fields of a config.json with one rotation for every layer: transformers 4's rope_theta and
    rope_scaling (null when unscaled), or transformers 5's rope_parameters {rope_type, rope_theta, …}."""
    get = families.fields(hf, path)
    name = "rope_scaling" if get("rope_scaling", dict, {}) else "rope_parameters"
    return rope(get(name, dict, {}), path, name, get("rope_theta", float, default_theta))


def olmo2_config(hf: dict, path) -> OLMo2Config:
    get = families.fields(hf, path)
    activation = get("hidden_act", str, "silu")
    families.refuse_unless(activation == "silu", path, f"hidden_act {activation!r}; OLMo 2's MLP is SwiGLU (silu)")
    families.refuse_unless(not get("attention_bias", bool, False), path, "attention_bias is true; minigpt's OLMo 2 has no biases")
    families.refuse_unless(
        not get("tie_word_embeddings", bool, False), path, "tie_word_embeddings is true; OLMo 2 unembeds with its own lm_head"
    )
    d_model, n_heads = get("hidden_size", int), get("num_attention_heads", int)
    return families.make_config(
        OLMo2Config,
        path,
        n_layers=get("num_hidden_layers", int),
        d_model=d_model,
        n_heads=n_heads,
        d_head=get("head_dim", int, d_model // n_heads),
        d_mlp=get("intermediate_size", int),
        d_vocab=get("vocab_size", int),
        n_ctx=get("max_position_embeddings", int),
        ln_eps=get("rms_norm_eps", float, 1e-5),
        n_kv_heads=get("num_key_value_heads", int, n_heads),
        **top_level_rope(hf, path, 10000.0),
    )


def olmo2_key_map(cfg: OLMo2Config) -> KeyMap:
    d, width = cfg.d_model, cfg.n_heads * cfg.d_head
    key_map = {"W_E": ("embed_tokens.weight", (cfg.d_vocab, d), same)}
    for i in range(cfg.n_layers):
        block, at = f"blocks.{i}", f"layers.{i}"
        key_map |= attention(cfg, block, f"{at}.self_attn") | gated_mlp(cfg, block, f"{at}.mlp")
        key_map |= {
            f"{block}.attn.q_norm.w": (f"{at}.self_attn.q_norm.weight", (width,), same),
            f"{block}.attn.k_norm.w": (f"{at}.self_attn.k_norm.weight", (cfg.n_kv_heads * cfg.d_head,), same),
            f"{block}.ln1_post.w": (f"{at}.post_attention_layernorm.weight", (d,), same),
            f"{block}.ln2_post.w": (f"{at}.post_feedforward_layernorm.weight", (d,), same),
        }
    # lm_head is [d_vocab, d_model]; W_U its transpose as a view, as GPT-NeoX's embed_out.
    return key_map | {"ln_final.w": ("norm.weight", (d,), same), "W_U": ("lm_head.weight", (cfg.d_vocab, d), lambda W: W.T)}


# Older Llama-style files carry each layer's rotary frequencies as a buffer; minigpt computes them from config.json.
LAYOUT = Layout(OLMo2, olmo2_key_map, "model.", re.compile(r"layers\.\d+\.self_attn\.rotary_emb\.inv_freq"))
