"""GPT-Neo, OPT and GPT-NeoX (Pythia) checkpoints, as their hub repositories hold them, read into minigpt.

For each family, three things, in the order weights.checkpoint does them for GPT-2:
  *_config   its config.json read into the family's config. Every setting the family's file in minigpt/ does
             not implement is refused in one line naming the field; settings that do not change the forward
             pass (dropout, initialisation, token ids) are not read.
  *_shapes   every tensor its files hold, by key (without the prefix `save_pretrained` adds), and its shape.
  read_*     the tensors, one at a time, into the family's model built on the meta device (no memory).

All three store their layers as torch's nn.Linear, which computes x @ weight.T + bias with weight [out, in].
minigpt computes x @ W + b with W [in, out], as GPT-2's Conv1D does, so each weight is transposed once here
(`in_out`) into memory of its own, and from there cut into heads as views, as GPT-2's c_attn is; the products
of the forward pass then read memory in the same order for every family.
"""

import re

import torch

from minigpt.config import Config
from minigpt.gpt_neo import GPTNeo, NeoConfig
from minigpt.gpt_neox import GPTNeoX, NeoXConfig
from minigpt.opt import OPT, OPTConfig

from .formats import CheckpointError, json_field, read_float32
from .keys import check_tied, match_keys
from .keys import set_parameter as _set
from .rewrites import drop_unembed


def fields(hf: dict, path):
    """get(name, kind[, default]): config.json's field, refused in one line unless it is of that kind
    (formats.json_field: int a positive integer, float a number, str, bool, list, dict; null counts as absent)."""

    def get(name: str, kind: type, *default):
        return json_field(hf, path, name, kind, *default)

    return get


def refuse_unless(ok: bool, path, what: str) -> None:
    if not ok:
        raise CheckpointError(f"{path}: {what}")


def make_config(cls, path, **sizes) -> Config:
    """The family's config, or the config's own complaint (e.g. d_model not a multiple of n_heads) as one line."""
    try:
        return cls(**sizes)
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None


def in_out(weight: torch.Tensor) -> torch.Tensor:
    """nn.Linear's weight [out, in] as minigpt's W [in, out]: transposed once, into contiguous memory."""
    return weight.T.contiguous()


def set_attention(attn, cfg: Config, W: dict, b: dict) -> None:
    """W_Q, W_K, W_V from [d_model, n_heads·d_head] matrices (heads side by side, as GPT-2's c_attn holds them),
    W_O from [n_heads·d_head, d_model], and their biases: the same views as weights.checkpoint makes."""
    n_heads, d_model, d_head = cfg.n_heads, cfg.d_model, cfg.d_head
    for name in "QKV":
        _set(attn, f"W_{name}", W[name].view(d_model, n_heads, d_head).permute(1, 0, 2))  # [n_heads, d_model, d_head]
        _set(attn, f"b_{name}", b[name].view(n_heads, d_head))  # [n_heads, d_head]
    _set(attn, "W_O", W["O"].view(n_heads, d_head, d_model))  # [n_heads, d_head, d_model]
    _set(attn, "b_O", b["O"])


def set_layer_norm(ln, w: torch.Tensor, b: torch.Tensor) -> None:
    _set(ln, "w", w)
    _set(ln, "b", b)


def set_mlp(mlp, W_in, b_in, W_out, b_out) -> None:
    for name, tensor in (("W_in", W_in), ("b_in", b_in), ("W_out", W_out), ("b_out", b_out)):
        _set(mlp, name, tensor)


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


def neo_shapes(cfg: NeoConfig) -> dict[str, tuple[int, ...]]:
    d, d_mlp = cfg.d_model, cfg.d_mlp
    shapes = {"wte.weight": (cfg.d_vocab, d), "wpe.weight": (cfg.n_ctx, d)}
    for i in range(cfg.n_layers):
        shapes |= {f"h.{i}.ln_1.weight": (d,), f"h.{i}.ln_1.bias": (d,), f"h.{i}.ln_2.weight": (d,), f"h.{i}.ln_2.bias": (d,)}
        shapes |= {f"h.{i}.attn.attention.{p}_proj.weight": (d, d) for p in "qkv"}  # no biases
        shapes |= {f"h.{i}.attn.attention.out_proj.weight": (d, d), f"h.{i}.attn.attention.out_proj.bias": (d,)}
        shapes |= {f"h.{i}.mlp.c_fc.weight": (d_mlp, d), f"h.{i}.mlp.c_fc.bias": (d_mlp,)}
        shapes |= {f"h.{i}.mlp.c_proj.weight": (d, d_mlp), f"h.{i}.mlp.c_proj.bias": (d,)}
    return shapes | {"ln_f.weight": (d,), "ln_f.bias": (d,)}


NEO_IGNORED = re.compile(r"h\.\d+\.attn\.attention\.(bias|masked_bias)|lm_head\.weight")


def read_neo(checkpoint_file, cfg: NeoConfig, unembed: bool) -> GPTNeo:
    keys = match_keys(checkpoint_file, cfg, neo_shapes(cfg), "transformer.", NEO_IGNORED)

    def read(key: str) -> torch.Tensor:
        return read_float32(checkpoint_file, keys[key])

    with torch.device("meta"):
        model = GPTNeo(cfg)
    _set(model, "W_E", read("wte.weight"))
    check_tied(checkpoint_file, model.W_E, "wte.weight", "GPT-Neo")
    _set(model, "W_pos", read("wpe.weight"))
    for i, block in enumerate(model.blocks):
        at = f"h.{i}.attn.attention"
        set_layer_norm(block.ln1, read(f"h.{i}.ln_1.weight"), read(f"h.{i}.ln_1.bias"))
        W = {name: in_out(read(f"{at}.{name.lower()}_proj.weight")) for name in "QKV"}
        W["O"] = in_out(read(f"{at}.out_proj.weight"))
        # q, k and v have no bias: zeros, which folding LayerNorm then fills as it does GPT-2's.
        b = {name: torch.zeros(cfg.d_model) for name in "QKV"} | {"O": read(f"{at}.out_proj.bias")}
        set_attention(block.attn, cfg, W, b)
        set_layer_norm(block.ln2, read(f"h.{i}.ln_2.weight"), read(f"h.{i}.ln_2.bias"))
        m = f"h.{i}.mlp"
        set_mlp(
            block.mlp,
            in_out(read(f"{m}.c_fc.weight")),
            read(f"{m}.c_fc.bias"),
            in_out(read(f"{m}.c_proj.weight")),
            read(f"{m}.c_proj.bias"),
        )
    if unembed:
        set_layer_norm(model.ln_final, read("ln_f.weight"), read("ln_f.bias"))
    return model


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


def opt_shapes(cfg: OPTConfig) -> dict[str, tuple[int, ...]]:
    d, d_mlp = cfg.d_model, cfg.d_mlp
    shapes = {
        "decoder.embed_tokens.weight": (cfg.d_vocab, d),
        "decoder.embed_positions.weight": (cfg.n_ctx + OPT_POSITION_OFFSET, d),
    }
    for i in range(cfg.n_layers):
        at = f"decoder.layers.{i}"
        for ln in ("self_attn_layer_norm", "final_layer_norm"):
            shapes |= {f"{at}.{ln}.weight": (d,), f"{at}.{ln}.bias": (d,)}
        for p in ("q", "k", "v", "out"):
            shapes |= {f"{at}.self_attn.{p}_proj.weight": (d, d), f"{at}.self_attn.{p}_proj.bias": (d,)}
        shapes |= {
            f"{at}.fc1.weight": (d_mlp, d),
            f"{at}.fc1.bias": (d_mlp,),
            f"{at}.fc2.weight": (d, d_mlp),
            f"{at}.fc2.bias": (d,),
        }
    return shapes | {"decoder.final_layer_norm.weight": (d,), "decoder.final_layer_norm.bias": (d,)}


def read_opt(checkpoint_file, cfg: OPTConfig, unembed: bool) -> OPT:
    keys = match_keys(checkpoint_file, cfg, opt_shapes(cfg), "model.", re.compile(r"lm_head\.weight"))

    def read(key: str) -> torch.Tensor:
        return read_float32(checkpoint_file, keys[key])

    with torch.device("meta"):
        model = OPT(cfg)
    _set(model, "W_E", read("decoder.embed_tokens.weight"))
    check_tied(checkpoint_file, model.W_E, "decoder.embed_tokens.weight", "OPT")
    # Rows 0 and 1 are never read for an unpadded prompt; W_pos[p] is position p, as in GPT-2 (a view).
    _set(model, "W_pos", read("decoder.embed_positions.weight")[OPT_POSITION_OFFSET:])
    for i, block in enumerate(model.blocks):
        at = f"decoder.layers.{i}"
        set_layer_norm(block.ln1, read(f"{at}.self_attn_layer_norm.weight"), read(f"{at}.self_attn_layer_norm.bias"))
        projections = {"Q": "q_proj", "K": "k_proj", "V": "v_proj", "O": "out_proj"}
        W = {name: in_out(read(f"{at}.self_attn.{p}.weight")) for name, p in projections.items()}
        b = {name: read(f"{at}.self_attn.{p}.bias") for name, p in projections.items()}
        set_attention(block.attn, cfg, W, b)
        set_layer_norm(block.ln2, read(f"{at}.final_layer_norm.weight"), read(f"{at}.final_layer_norm.bias"))
        set_mlp(
            block.mlp,
            in_out(read(f"{at}.fc1.weight")),
            read(f"{at}.fc1.bias"),
            in_out(read(f"{at}.fc2.weight")),
            read(f"{at}.fc2.bias"),
        )
    if unembed:
        set_layer_norm(model.ln_final, read("decoder.final_layer_norm.weight"), read("decoder.final_layer_norm.bias"))
    return model


# ---------------------------------------------------------------------------------------------------------
# GPT-NeoX / Pythia (minigpt/gpt_neox.py). Files: EleutherAI/pythia-*'s model.safetensors on main (pytorch_model.bin
# at the step revisions), float16, keys under "gpt_neox." except embed_out.weight, with buffers in older files.


def rotary(hf: dict, path) -> tuple[float, float]:
    """(rotary_pct, base) from either form of config.json: transformers 4.x wrote rotary_pct and rotary_emb_base
    (as every released Pythia has them); transformers 5 writes rope_parameters {rope_theta, partial_rotary_factor,
    rope_type}. As in HF's GPTNeoXConfig, rope_parameters wins where both are present, and a 4.x rope_scaling
    (null in every Pythia) would take its place."""
    get = fields(hf, path)
    name = "rope_parameters" if get("rope_parameters", dict, {}) else "rope_scaling"
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


def neox_shapes(cfg: NeoXConfig) -> dict[str, tuple[int, ...]]:
    d, d_mlp = cfg.d_model, cfg.d_mlp
    shapes = {"embed_in.weight": (cfg.d_vocab, d)}
    for i in range(cfg.n_layers):
        at = f"layers.{i}"
        for ln in ("input_layernorm", "post_attention_layernorm"):
            shapes |= {f"{at}.{ln}.weight": (d,), f"{at}.{ln}.bias": (d,)}
        shapes |= {f"{at}.attention.query_key_value.weight": (3 * d, d), f"{at}.attention.query_key_value.bias": (3 * d,)}
        shapes |= {f"{at}.attention.dense.weight": (d, d), f"{at}.attention.dense.bias": (d,)}
        shapes |= {f"{at}.mlp.dense_h_to_4h.weight": (d_mlp, d), f"{at}.mlp.dense_h_to_4h.bias": (d_mlp,)}
        shapes |= {f"{at}.mlp.dense_4h_to_h.weight": (d, d_mlp), f"{at}.mlp.dense_4h_to_h.bias": (d,)}
    return shapes | {"final_layer_norm.weight": (d,), "final_layer_norm.bias": (d,), "embed_out.weight": (cfg.d_vocab, d)}


# Causal masks and the rotary frequencies (minigpt computes both from config.json).
NEOX_IGNORED = re.compile(r"layers\.\d+\.attention\.(bias|masked_bias|rotary_emb\.inv_freq)")


def read_neox(checkpoint_file, cfg: NeoXConfig, unembed: bool) -> GPTNeoX:
    keys = match_keys(checkpoint_file, cfg, neox_shapes(cfg), "gpt_neox.", NEOX_IGNORED)

    def read(key: str) -> torch.Tensor:
        return read_float32(checkpoint_file, keys[key])

    with torch.device("meta"):
        model = GPTNeoX(cfg)
    n_heads, d_model, d_head = cfg.n_heads, cfg.d_model, cfg.d_head
    _set(model, "W_E", read("embed_in.weight"))
    for i, block in enumerate(model.blocks):
        at = f"layers.{i}"
        set_layer_norm(block.ln1, read(f"{at}.input_layernorm.weight"), read(f"{at}.input_layernorm.bias"))
        # query_key_value's output rows are ordered per head: (head, q/k/v, d_head). Each of q, k, v is taken out
        # and transposed once into [d_model, n_heads, d_head] memory, GPT-2's order (heads side by side).
        qkv = read(f"{at}.attention.query_key_value.weight").view(n_heads, 3, d_head, d_model)
        qkv_bias = read(f"{at}.attention.query_key_value.bias").view(n_heads, 3, d_head)
        W = {name: qkv[:, j].permute(2, 0, 1).contiguous().view(d_model, -1) for j, name in enumerate("QKV")}
        b = {name: qkv_bias[:, j].contiguous() for j, name in enumerate("QKV")}
        W["O"], b["O"] = in_out(read(f"{at}.attention.dense.weight")), read(f"{at}.attention.dense.bias")
        set_attention(block.attn, cfg, W, b)
        set_layer_norm(block.ln2, read(f"{at}.post_attention_layernorm.weight"), read(f"{at}.post_attention_layernorm.bias"))
        m = f"{at}.mlp"
        set_mlp(
            block.mlp,
            in_out(read(f"{m}.dense_h_to_4h.weight")),
            read(f"{m}.dense_h_to_4h.bias"),
            in_out(read(f"{m}.dense_4h_to_h.weight")),
            read(f"{m}.dense_4h_to_h.bias"),
        )
    if unembed:
        set_layer_norm(model.ln_final, read("final_layer_norm.weight"), read("final_layer_norm.bias"))
        # embed_out is [d_vocab, d_model]; W_U [d_model, d_vocab] is its transpose as a view, as GPT-2's tied
        # unembedding is W_E.T: the largest matrix is not copied.
        _set(model, "W_U", read("embed_out.weight").T)
    return model


# ---------------------------------------------------------------------------------------------------------

# config.json's model_type → (its config reader, its model reader); GPT-2 ("gpt2") is weights.checkpoint's own.
FAMILIES = {"gpt_neo": (neo_config, read_neo), "opt": (opt_config, read_opt), "gpt_neox": (neox_config, read_neox)}
READERS = {NeoConfig: read_neo, OPTConfig: read_opt, NeoXConfig: read_neox}


def read_config(model_type: str, hf: dict, path) -> Config:
    return FAMILIES[model_type][0](hf, path)


def read_model(checkpoint_file, cfg: Config, unembed: bool = True):
    """The family's model with exactly the checkpoint's weights in float32; unembed=False leaves out ln_final
    and the unembedding (`weights.drop_unembed`), which are then never read."""
    model = READERS[type(cfg)](checkpoint_file, cfg, unembed)
    if not unembed:
        drop_unembed(model)
    unread = [name for name, param in model.named_parameters() if param.is_meta]
    assert not unread, f"read_model left {unread} unread"
    return model
