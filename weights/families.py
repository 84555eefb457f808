"""GPT-Neo, OPT and GPT-NeoX (Pythia) checkpoints, as their hub repositories hold them, read into minigpt; and the
register of every family other than GPT-2 (FAMILIES, LAYOUTS), weights/llama.py's Llama, Mistral and Qwen included.

For each family, two things, as weights/checkpoint.py has them for GPT-2:
  *_config   its config.json read into the family's config. Every setting the family's file in minigpt/ does
             not implement is refused in one line naming the field; settings that do not change the forward
             pass (dropout, initialisation, token ids) are not read.
  *_key_map  each parameter of the family's model: the tensor of the file it comes from, that tensor's shape, and
             how it becomes the parameter. weights/keys.py's `read_weights`, shared by all, does the reading.

All three store their layers as torch's nn.Linear, which computes x @ weight.T + bias with weight [out, in].
minigpt computes x @ W + b with W [in, out], as GPT-2's Conv1D does, so each weight is transposed once here
(`in_out`, or `heads(..., linear=True)` for the attention's per-head matrices).
"""

import re

import torch

from minigpt.config import Config
from minigpt.gpt_neo import GPTNeo, NeoConfig
from minigpt.gpt_neox import GPTNeoX, NeoXConfig
from minigpt.llama import LlamaConfig
from minigpt.opt import OPT, OPTConfig

from . import gemma, llama, olmo2
from .formats import CheckpointError
from .keys import KeyMap, Layout, fields, from_heads, head_bias, heads, layer_norm, linear, make_config, refuse_unless, same


def projections(cfg: Config, block: str, at: str, names: dict[str, str], biases: bool = True) -> KeyMap:
    """W_Q, W_K, W_V, W_O and their biases from four nn.Linear layers `at`.{names[Q]} … (GPT-Neo's and OPT's)."""
    d, out = cfg.d_model, names["O"]
    key_map = {f"{block}.attn.W_{n}": (f"{at}.{names[n]}.weight", (d, d), heads(cfg, linear=True)) for n in "QKV"}
    key_map[f"{block}.attn.W_O"] = (f"{at}.{out}.weight", (d, d), from_heads(cfg, linear=True))
    for n in "QKV":
        # GPT-Neo's q, k and v have no bias: zeros, which folding LayerNorm then fills as it does GPT-2's.
        zeros = (None, (), lambda _: torch.zeros(cfg.n_heads, cfg.d_head))
        key_map[f"{block}.attn.b_{n}"] = (f"{at}.{names[n]}.bias", (d,), head_bias(cfg)) if biases else zeros
    return key_map | {f"{block}.attn.b_O": (f"{at}.{out}.bias", (d,), same)}


def expand_attention_types(attention_types) -> list[str]:
    """GPT-Neo's compact form, [[["global", "local"], 6]], as one type per layer (HF's expand_attention_types_params)."""
    return [kind for kinds, repeat in attention_types for _ in range(repeat) for kind in kinds]


# ---------------------------------------------------------------------------------------------------------
# GPT-Neo (minigpt/gpt_neo.py). Files: EleutherAI/gpt-neo-125m's model.safetensors, keys "transformer."-prefixed,
# older files with each layer's causal-mask buffers (attn.attention.bias, masked_bias).


def neo_config(hf: dict, path) -> NeoConfig:
    get = fields(hf, path)
    activation = get("activation_function", str, "gelu_new")
    refuse_unless(
        activation in ("gelu_new", "gelu_pytorch_tanh"), path, f"activation_function {activation!r}; GPT-Neo uses gelu_new"
    )
    n_layers = get("num_layers", int)
    attention_types = get("attention_types", list, [[["global", "local"], 12]])  # HF's default
    try:
        layers = expand_attention_types(attention_types)
    except (TypeError, ValueError):
        raise CheckpointError(f"{path}: attention_types {attention_types!r} is not [[[kinds…], repeat], …]") from None
    refuse_unless(len(layers) == n_layers, path, f"attention_types gives {len(layers)} layers, num_layers is {n_layers}")
    refuse_unless(
        set(layers) <= {"global", "local"}, path, f"attention_types {sorted(set(layers))}; GPT-Neo has global and local"
    )
    d_model, n_heads = get("hidden_size", int), get("num_heads", int)
    return make_config(
        NeoConfig,
        path,
        n_layers=n_layers,
        d_model=d_model,
        n_heads=n_heads,
        d_head=d_model // n_heads,
        d_mlp=get("intermediate_size", int, 4 * d_model),
        d_vocab=get("vocab_size", int),
        n_ctx=get("max_position_embeddings", int),
        ln_eps=get("layer_norm_epsilon", float, 1e-5),
        window_size=get("window_size", int, 256),
        local_layers=tuple(l for l, kind in enumerate(layers) if kind == "local"),
    )


def neo_key_map(cfg: NeoConfig) -> KeyMap:
    d, d_mlp = cfg.d_model, cfg.d_mlp
    key_map = {"W_E": ("wte.weight", (cfg.d_vocab, d), same), "W_pos": ("wpe.weight", (cfg.n_ctx, d), same)}
    for i in range(cfg.n_layers):
        block, at = f"blocks.{i}", f"h.{i}"
        key_map |= layer_norm(f"{block}.ln1", f"{at}.ln_1", d) | layer_norm(f"{block}.ln2", f"{at}.ln_2", d)
        names = {"Q": "q_proj", "K": "k_proj", "V": "v_proj", "O": "out_proj"}
        key_map |= projections(cfg, block, f"{at}.attn.attention", names, biases=False)
        key_map |= linear(f"{block}.mlp", "in", f"{at}.mlp.c_fc", d, d_mlp) | linear(
            f"{block}.mlp", "out", f"{at}.mlp.c_proj", d_mlp, d
        )
    return key_map | layer_norm("ln_final", "ln_f", d)


# ---------------------------------------------------------------------------------------------------------
# OPT (minigpt/opt.py). Files: facebook/opt-*'s pytorch_model.bin, float16, keys under "decoder." ("model.decoder."
# when written by OPTForCausalLM.save_pretrained), perhaps with lm_head.weight, tied to embed_tokens.


def opt_config(hf: dict, path) -> OPTConfig:
    get = fields(hf, path)
    d_model = get("hidden_size", int)
    refuse_unless(
        get("do_layer_norm_before", bool, True),
        path,
        "do_layer_norm_before is false (opt-350m): a post-LayerNorm OPT normalises the residual stream itself after "
        "each sublayer, so it is not GPT-2's pre-LayerNorm block and the study's rewrites do not hold; minigpt reads "
        "the pre-LayerNorm OPTs (opt-125m, -1.3b, -2.7b, …)",
    )
    projected = get("word_embed_proj_dim", int, d_model)
    refuse_unless(
        projected == d_model,
        path,
        f"word_embed_proj_dim {projected} differs from hidden_size {d_model}: the embedding's project_in/project_out "
        "layers are not implemented in minigpt",
    )
    activation = get("activation_function", str, "relu")
    refuse_unless(activation == "relu", path, f"activation_function {activation!r}; OPT uses relu")
    refuse_unless(get("enable_bias", bool, True), path, "enable_bias is false; minigpt's OPT has biases on every layer")
    refuse_unless(
        get("layer_norm_elementwise_affine", bool, True),
        path,
        "layer_norm_elementwise_affine is false; minigpt's OPT LayerNorms have a gain and a bias",
    )
    refuse_unless(
        not get("_remove_final_layer_norm", bool, False), path, "_remove_final_layer_norm is true; OPT has a final LayerNorm"
    )
    n_heads = get("num_attention_heads", int)
    return make_config(
        OPTConfig,
        path,
        n_layers=get("num_hidden_layers", int),
        d_model=d_model,
        n_heads=n_heads,
        d_head=d_model // n_heads,
        d_mlp=get("ffn_dim", int),
        d_vocab=get("vocab_size", int),
        n_ctx=get("max_position_embeddings", int),
        ln_eps=1e-5,  # OPT's LayerNorms are nn.LayerNorm with its default ε; config.json has no field for it
    )


OPT_POSITION_OFFSET = 2  # OPTLearnedPositionalEmbedding reads position p at row p + 2


def opt_key_map(cfg: OPTConfig) -> KeyMap:
    d, d_mlp = cfg.d_model, cfg.d_mlp
    key_map = {
        "W_E": ("decoder.embed_tokens.weight", (cfg.d_vocab, d), same),
        # Rows 0 and 1 are never read for an unpadded prompt: W_pos[p] is position p, as in GPT-2.
        "W_pos": ("decoder.embed_positions.weight", (cfg.n_ctx + OPT_POSITION_OFFSET, d), lambda W: W[OPT_POSITION_OFFSET:]),
    }
    for i in range(cfg.n_layers):
        block, at = f"blocks.{i}", f"decoder.layers.{i}"
        key_map |= layer_norm(f"{block}.ln1", f"{at}.self_attn_layer_norm", d)
        key_map |= layer_norm(f"{block}.ln2", f"{at}.final_layer_norm", d)
        names = {"Q": "q_proj", "K": "k_proj", "V": "v_proj", "O": "out_proj"}
        key_map |= projections(cfg, block, f"{at}.self_attn", names)
        key_map |= linear(f"{block}.mlp", "in", f"{at}.fc1", d, d_mlp) | linear(f"{block}.mlp", "out", f"{at}.fc2", d_mlp, d)
    return key_map | layer_norm("ln_final", "decoder.final_layer_norm", d)


# ---------------------------------------------------------------------------------------------------------
# GPT-NeoX / Pythia (minigpt/gpt_neox.py). Files: EleutherAI/pythia-*'s model.safetensors on main (pytorch_model.bin
# at the step revisions), float16, keys under "gpt_neox." except embed_out.weight, with buffers in older files.


def rotary(hf: dict, path) -> tuple[float, float]:
    """(rotary_pct, base) from either form of config.json: transformers 4.x wrote rotary_pct and rotary_emb_base
    (as every released Pythia has them); transformers 5 writes rope_parameters {rope_theta, partial_rotary_factor,
    rope_type}. As in HF's GPTNeoXConfig (transformers 5: `rope_scaling or rope_parameters`), a non-empty
    rope_scaling (4.x's field, null in every Pythia) wins where both are present."""
    get = fields(hf, path)
    name = "rope_scaling" if get("rope_scaling", dict, {}) else "rope_parameters"
    rope = get(name, dict, {})
    kind = rope.get("rope_type", rope.get("type", "default"))
    refuse_unless(kind == "default", path, f"{name} has rope_type {kind!r}; minigpt implements only the default rotary embedding")
    inner = fields(rope, f"{path}: {name}")
    pct = inner("partial_rotary_factor", float, get("rotary_pct", float, 0.25))
    base = inner("rope_theta", float, get("rotary_emb_base", float, 10000.0))
    return pct, base


def neox_config(hf: dict, path) -> NeoXConfig:
    get = fields(hf, path)
    activation = get("hidden_act", str, "gelu")
    refuse_unless(activation == "gelu", path, f"hidden_act {activation!r}; Pythia uses gelu, the exact (erf) GELU")
    refuse_unless(
        get("attention_bias", bool, True),
        path,
        "attention_bias is false; minigpt's GPT-NeoX has biases on q, k, v and the output",
    )
    refuse_unless(
        not get("tie_word_embeddings", bool, False), path, "tie_word_embeddings is true; GPT-NeoX unembeds with its own embed_out"
    )
    d_model, n_heads = get("hidden_size", int), get("num_attention_heads", int)
    pct, base = rotary(hf, path)
    return make_config(
        NeoXConfig,
        path,
        n_layers=get("num_hidden_layers", int),
        d_model=d_model,
        n_heads=n_heads,
        d_head=d_model // n_heads,
        d_mlp=get("intermediate_size", int),
        d_vocab=get("vocab_size", int),
        n_ctx=get("max_position_embeddings", int),
        ln_eps=get("layer_norm_eps", float, 1e-5),
        rotary_dims=int(d_model // n_heads * pct),  # as HF's GPTNeoXAttention.rotary_ndims
        rotary_base=float(base),
        parallel_residual=get("use_parallel_residual", bool, True),
    )


def neox_key_map(cfg: NeoXConfig) -> KeyMap:
    d, d_mlp, h, e = cfg.d_model, cfg.d_mlp, cfg.n_heads, cfg.d_head
    key_map = {"W_E": ("embed_in.weight", (cfg.d_vocab, d), same)}
    for i in range(cfg.n_layers):
        block, at = f"blocks.{i}", f"layers.{i}"
        key_map |= layer_norm(f"{block}.ln1", f"{at}.input_layernorm", d)
        key_map |= layer_norm(f"{block}.ln2", f"{at}.post_attention_layernorm", d)
        # query_key_value is nn.Linear [3·d_model, d_model] whose output rows are ordered per head: (head, q/k/v, d_head).
        qkv = f"{at}.attention.query_key_value"
        for j, n in enumerate("QKV"):
            key_map[f"{block}.attn.W_{n}"] = (
                f"{qkv}.weight",
                (3 * d, d),
                lambda W, j=j: W.view(h, 3, e, d)[:, j].mT.contiguous(),
            )
        for j, n in enumerate("QKV"):
            key_map[f"{block}.attn.b_{n}"] = (f"{qkv}.bias", (3 * d,), lambda b, j=j: b.view(h, 3, e)[:, j].clone())
        key_map[f"{block}.attn.W_O"] = (f"{at}.attention.dense.weight", (d, d), from_heads(cfg, linear=True))
        key_map[f"{block}.attn.b_O"] = (f"{at}.attention.dense.bias", (d,), same)
        key_map |= linear(f"{block}.mlp", "in", f"{at}.mlp.dense_h_to_4h", d, d_mlp)
        key_map |= linear(f"{block}.mlp", "out", f"{at}.mlp.dense_4h_to_h", d_mlp, d)
    # embed_out is [d_vocab, d_model]; W_U [d_model, d_vocab] is its transpose as a view, as GPT-2's tied
    # unembedding is W_E.T: the largest matrix is not copied.
    return (
        key_map | layer_norm("ln_final", "final_layer_norm", d) | {"W_U": ("embed_out.weight", (cfg.d_vocab, d), lambda W: W.T)}
    )


# ---------------------------------------------------------------------------------------------------------

# config.json's model_type → (its config reader, its files' layout); GPT-2 ("gpt2") is weights/checkpoint.py's own.
FAMILIES = {
    # Causal-mask buffers (minigpt builds its own) and a tied lm_head (checked against the embedding) are not read.
    "gpt_neo": (
        neo_config,
        Layout(
            GPTNeo,
            neo_key_map,
            "transformer.",
            re.compile(r"h\.\d+\.attn\.attention\.(bias|masked_bias)|lm_head\.weight"),
            "wte.weight",
        ),
    ),
    "opt": (opt_config, Layout(OPT, opt_key_map, "model.", re.compile(r"lm_head\.weight"), "decoder.embed_tokens.weight")),
    # Causal masks and the rotary frequencies (minigpt computes both from config.json).
    "gpt_neox": (
        neox_config,
        Layout(
            GPTNeoX, neox_key_map, "gpt_neox.", re.compile(r"layers\.\d+\.attention\.(bias|masked_bias|rotary_emb\.inv_freq)")
        ),
    ),
} | {model_type: (llama.llama_config, llama.LAYOUT) for model_type in llama.MODEL_TYPES}
LAYOUTS = {
    NeoConfig: FAMILIES["gpt_neo"][1],
    OPTConfig: FAMILIES["opt"][1],
    NeoXConfig: FAMILIES["gpt_neox"][1],
    LlamaConfig: llama.LAYOUT,
}
# OLMo 2 (weights/olmo2.py) and Gemma 2 / Gemma 3 (weights/gemma.py): one reader and layout for both Gemmas.
FAMILIES |= {"olmo2": (olmo2.olmo2_config, olmo2.LAYOUT), "gemma2": (gemma.gemma_config, gemma.LAYOUT)}
FAMILIES["gemma3_text"] = FAMILIES["gemma2"]
LAYOUTS |= {olmo2.OLMo2Config: olmo2.LAYOUT, gemma.GemmaConfig: gemma.LAYOUT}


def read_config(model_type: str, hf: dict, path) -> Config:
    return FAMILIES[model_type][0](hf, path)
