"""Gemma 2 and Gemma 3 checkpoints (google/gemma-2-2b, google/gemma-3-1b-pt …), as the hub holds them, read into
minigpt/gemma.py's Gemma.

The files are Llama's (weights/llama.py): model.safetensors, sharded for the larger models, keys under "model.",
every layer an nn.Linear without a bias, and no lm_head (the unembedding is the embedding, tied). What differs is
the norms, four a layer: input_layernorm (ln1), post_attention_layernorm (in Llama the norm before the MLP; here
after attention: ln1_post), pre_feedforward_layernorm (ln2), post_feedforward_layernorm (ln2_post); Gemma 3 also
each head's q_norm and k_norm, as Qwen 3's. And every RMSNorm gain is stored as w_file, multiplying by
(1 + w_file): read here as w = 1 + w_file (minigpt/gemma.py, difference 1), in float32 before any cast.
"""

from minigpt.gemma import Gemma, GemmaConfig

from .keys import KeyMap, Layout, fields, make_config, refuse_unless
from .llama import IGNORED, llama_key_map, rms_norm, rope, sizes, window_field

LAYER_TYPES = ("sliding_attention", "full_attention")
# Before layer_types, config.json said which layers slide by a period: Gemma 2's every other layer from layer 0,
# Gemma 3's sliding_window_pattern (6: five sliding, then one global), as HF's configs expand them.
DEFAULT_PERIOD = {"gemma2": 2, "gemma3_text": 6}


def one_plus(w):
    """Gemma's stored gain w_file as the gain minigpt multiplies by: 1 + w_file (difference 1)."""
    return 1 + w


def layer_types(hf: dict, path, model_type: str, n_layers: int) -> list[str]:
    get = fields(hf, path)
    # Gemma3TextConfig reads sliding_window_pattern; Gemma2Config does not (its layers alternate whatever it says).
    period = get("sliding_window_pattern", int, 6) if model_type == "gemma3_text" else DEFAULT_PERIOD[model_type]
    by_period = ["full_attention" if (i + 1) % period == 0 else "sliding_attention" for i in range(n_layers)]
    types = get("layer_types", list, by_period)
    refuse_unless(len(types) == n_layers, path, f"layer_types gives {len(types)} layers, num_hidden_layers is {n_layers}")
    unknown = sorted(set(map(str, types)) - set(LAYER_TYPES))
    refuse_unless(not unknown, path, f"layer_types {unknown}; Gemma has {' and '.join(LAYER_TYPES)}")
    return types


def gemma3_rope(hf: dict, path) -> dict:
    """Gemma 3's two rotations: transformers 4's rope_local_base_freq (sliding layers) beside rope_theta and
    rope_scaling (global layers), or transformers 5's rope_parameters {sliding_attention: …, full_attention: …}."""
    get = fields(hf, path)
    per_type = get("rope_parameters", dict, {})
    if set(per_type) & set(LAYER_TYPES):
        inner = fields(per_type, f"{path}: rope_parameters")
        local = rope({"rope_parameters": inner("sliding_attention", dict, {}), "rope_theta": 10000.0}, path)
        full = rope({"rope_parameters": inner("full_attention", dict, {}), "rope_theta": 1e6}, path)
    else:  # rope_scaling, if set, stretches the global layers only (HF's Gemma3TextConfig)
        local = {"rope_base": float(get("rope_local_base_freq", float, 10000.0)), "rope_type": "default"}
        full = rope(hf | {"rope_theta": get("rope_theta", float, 1e6)}, path)
    refuse_unless(
        local["rope_type"] == "default",
        path,
        f"the sliding layers' rope_type is {local['rope_type']!r}; minigpt turns Gemma 3's sliding layers unscaled",
    )
    return full | {"rope_local_base": local["rope_base"]}


def gemma_config(hf: dict, path) -> GemmaConfig:
    get = fields(hf, path)
    model_type = get("model_type", str)
    activation = get("hidden_activation", str, "gelu_pytorch_tanh")
    refuse_unless(
        activation in ("gelu_pytorch_tanh", "gelu_new"), path, f"hidden_activation {activation!r}; Gemma uses gelu_pytorch_tanh"
    )
    refuse_unless(not get("attention_bias", bool, False), path, "attention_bias is true; minigpt's Gemma has no biases")
    refuse_unless(get("tie_word_embeddings", bool, True), path, "tie_word_embeddings is false; Gemma unembeds with its embedding")
    refuse_unless(
        not get("use_bidirectional_attention", bool, False),
        path,
        "use_bidirectional_attention is true (an encoder such as EmbeddingGemma); minigpt's Gemma is causal",
    )
    attn_softcap = get("attn_logit_softcapping", float, None)
    refuse_unless(
        model_type == "gemma2" or attn_softcap is None,
        path,
        "attn_logit_softcapping is set, and HF's Gemma 3 does not apply it; minigpt will not guess (Gemma 3 has null)",
    )
    shape = sizes(hf, path, d_head=256)  # Gemma2Config's and Gemma3TextConfig's head_dim, not d_model / n_heads
    types = layer_types(hf, path, model_type, shape["n_layers"])
    local_layers = tuple(l for l, kind in enumerate(types) if kind == "sliding_attention")
    if model_type == "gemma2":  # one rotation for every layer
        rotary = rope(hf, path)
        refuse_unless(rotary["rope_type"] == "default", path, f"rope_type {rotary['rope_type']!r}; Gemma 2 turns unscaled")
        rotary["rope_local_base"] = rotary["rope_base"]
    else:
        rotary = gemma3_rope(hf, path)
    return make_config(
        GemmaConfig,
        path,
        **shape,
        qk_norm=model_type == "gemma3_text",
        tied=True,
        window_size=window_field(hf, path) if local_layers else None,
        local_layers=local_layers,
        query_pre_attn_scalar=float(get("query_pre_attn_scalar", float, 256)),
        attn_softcap=attn_softcap,
        final_softcap=get("final_logit_softcapping", float, None),
        **rotary,
    )


def gemma_key_map(cfg: GemmaConfig) -> KeyMap:
    """Llama's key map (attention, the gated MLP, ln1 from input_layernorm, Gemma 3's q_norm and k_norm, ln_final;
    no W_U, tied) with Gemma's four norms a layer, and every gain read as 1 + w_file."""
    key_map = llama_key_map(cfg)
    for i in range(cfg.n_layers):
        block, at = f"blocks.{i}", f"layers.{i}"
        key_map[f"{block}.ln1_post.w"] = key_map.pop(f"{block}.ln2.w")  # post_attention_layernorm: after attention here
        key_map |= rms_norm(f"{block}.ln2", f"{at}.pre_feedforward_layernorm", cfg.d_model)
        key_map |= rms_norm(f"{block}.ln2_post", f"{at}.post_feedforward_layernorm", cfg.d_model)
    # The norms' gains are the only parameters named ….w: each is stored as w − 1 (minigpt/gemma.py, difference 1).
    return {
        name: (key, shape, one_plus) if name.endswith(".w") else (key, shape, how) for name, (key, shape, how) in key_map.items()
    }


# A file that carries lm_head.weight too must hold the embedding there (checked against it, then not read).
LAYOUT = Layout(Gemma, gemma_key_map, "model.", IGNORED, tied_to="embed_tokens.weight")
