"""OLMo 2 checkpoints (allenai/OLMo-2-0425-1B …), as the hub holds them, read into minigpt/olmo2.py's OLMo2.

The files are Llama's (weights/llama.py): model.safetensors, sharded for the larger models, keys under "model."
but the untied lm_head.weight, every layer an nn.Linear without a bias. What differs is the norms: no
input_layernorm; post_attention_layernorm, which in Llama is the norm before the MLP (ln2), is here the norm after
attention (ln1_post); post_feedforward_layernorm after the MLP (ln2_post); and q_norm, k_norm over the whole
width, [n_heads·d_head] and [n_kv_heads·d_head]. So the key map is Llama's with its norms moved.
"""

from minigpt.olmo2 import OLMo2, OLMo2Config

from .keys import KeyMap, Layout, fields, make_config, refuse_unless
from .llama import IGNORED, llama_key_map, rms_norm, rope, sizes


def olmo2_config(hf: dict, path) -> OLMo2Config:
    get = fields(hf, path)
    activation = get("hidden_act", str, "silu")
    refuse_unless(activation == "silu", path, f"hidden_act {activation!r}; OLMo 2's MLP is SwiGLU (silu)")
    refuse_unless(not get("attention_bias", bool, False), path, "attention_bias is true; minigpt's OLMo 2 has no biases")
    refuse_unless(
        not get("tie_word_embeddings", bool, False), path, "tie_word_embeddings is true; OLMo 2 unembeds with its own lm_head"
    )
    return make_config(OLMo2Config, path, **sizes(hf, path, eps=1e-5), **rope(hf, path))  # Olmo2Config's ε: 1e-5


def olmo2_key_map(cfg: OLMo2Config) -> KeyMap:
    key_map = llama_key_map(cfg)
    d, e = cfg.d_model, cfg.d_head
    for i in range(cfg.n_layers):
        block, at = f"blocks.{i}", f"layers.{i}"
        del key_map[f"{block}.ln1.w"]  # no norm before attention (olmo2.py, difference 1)
        key_map[f"{block}.ln1_post.w"] = key_map.pop(f"{block}.ln2.w")  # post_attention_layernorm, after attention here
        key_map |= rms_norm(f"{block}.ln2_post", f"{at}.post_feedforward_layernorm", d)
        key_map |= rms_norm(f"{block}.attn.q_norm", f"{at}.self_attn.q_norm", cfg.n_heads * e)  # difference 3
        key_map |= rms_norm(f"{block}.attn.k_norm", f"{at}.self_attn.k_norm", cfg.n_kv_heads * e)
    return key_map


LAYOUT = Layout(OLMo2, olmo2_key_map, "model.", IGNORED)
