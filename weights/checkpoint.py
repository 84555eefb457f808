"""Read and write checkpoints in the layout OpenAI's GPT-2 weights have on the Hugging Face hub.

The official layout (openai-community/gpt2, model.safetensors):
    wte.weight [d_vocab, d_model]            wpe.weight [n_ctx, d_model]
    h.{i}.ln_1.weight/.bias [d_model]        h.{i}.ln_2.weight/.bias [d_model]
    h.{i}.attn.c_attn.weight [d_model, 3·d_model] + .bias   (queries, keys, values side by side)
    h.{i}.attn.c_proj.weight [d_model, d_model] + .bias
    h.{i}.mlp.c_fc.weight [d_model, d_mlp] + .bias    h.{i}.mlp.c_proj.weight [d_mlp, d_model] + .bias
    ln_f.weight/.bias [d_model]
    h.{i}.attn.bias [1, 1, n_ctx, n_ctx]: the causal mask, saved as a buffer (minigpt builds its own)
No lm_head.weight: the unembedding is tied to wte. Checkpoints written by `save_pretrained` prefix
every key with "transformer." and drop the masks; older ones also carry h.{i}.attn.masked_bias.

OpenAI's weights come from TensorFlow, where GPT-2's "Conv1D" layers compute x @ W + b with W
stored [in, out]. That is minigpt's convention too, so no weight is transposed; c_attn is only cut
into W_Q, W_K, W_V and each of those into heads (`key_map`). The reading itself is weights/keys.py's,
the same for every family.
"""

import re
from pathlib import Path

from minigpt import GPT2, Config

from . import families
from .checks import check_sizes
from .formats import CheckpointError, json_field, open_weights, read_json
from .keys import KeyMap, Layout, from_heads, head_bias, heads, layer_norm, read_weights, same

# Causal masks (minigpt builds its own) and the tied lm_head (checked against wte): not read as parameters.
IGNORED = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)|lm_head\.weight")


def family_of(hf: dict, path: Path) -> str:
    """config.json's model_type, "gpt2" where it has none: which family's reader, and for the report which name
    (Qwen and Mistral share Llama's model class)."""
    return json_field(hf, path, "model_type", str, "gpt2")


def read_config(directory: Path) -> Config:
    """The model's shape from a Hugging Face config.json, refusing settings minigpt does not implement.

    GPT-2's is read here; config.json's model_type picks another family's reader (weights/families.py),
    whose config type (NeoConfig, OPTConfig, NeoXConfig, LlamaConfig…) then says which model `read_model` builds.
    """
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(
            f"{directory}: no config.json (a GPT-2 directory holds config.json, the weights, vocab.json and merges.txt)"
        )
    hf = read_json(path)
    model_type = family_of(hf, path)
    if model_type in families.FAMILIES:
        return families.read_config(model_type, hf, path)
    if model_type != "gpt2":
        known = ", ".join(["gpt2", *families.FAMILIES])
        raise CheckpointError(f"{path}: model_type is {model_type!r}; minigpt reads the model types {known}")
    # "gelu_pytorch_tanh" is the same tanh formula computed by torch; both are GPT-2's GELU.
    activation = json_field(hf, path, "activation_function", str, "gelu_new")
    if activation not in ("gelu_new", "gelu_pytorch_tanh"):
        raise CheckpointError(f"{path}: activation_function {activation!r}; GPT-2 uses gelu_new")
    if not json_field(hf, path, "scale_attn_weights", bool, True) or json_field(
        hf, path, "scale_attn_by_inverse_layer_idx", bool, False
    ):
        raise CheckpointError(f"{path}: non-standard attention scaling is not implemented in minigpt")
    d_model, n_heads = json_field(hf, path, "n_embd", int), json_field(hf, path, "n_head", int)
    if d_model % n_heads:
        raise CheckpointError(f"{path}: n_embd {d_model} is not divisible by n_head {n_heads}")
    return Config(
        n_layers=json_field(hf, path, "n_layer", int),
        d_model=d_model,
        n_heads=n_heads,
        d_head=d_model // n_heads,
        d_mlp=json_field(hf, path, "n_inner", int, 4 * d_model),
        d_vocab=json_field(hf, path, "vocab_size", int),
        n_ctx=json_field(hf, path, "n_positions", int),
        ln_eps=json_field(hf, path, "layer_norm_epsilon", float, 1e-5),
    )


def key_map(cfg: Config) -> KeyMap:
    """Each parameter of GPT2(cfg): its tensor in the official layout, that tensor's shape, and how it becomes the parameter."""
    d, d_mlp = cfg.d_model, cfg.d_mlp
    params = {"W_E": ("wte.weight", (cfg.d_vocab, d), same), "W_pos": ("wpe.weight", (cfg.n_ctx, d), same)}
    for i in range(cfg.n_layers):
        block, at = f"blocks.{i}", f"h.{i}"
        params |= layer_norm(f"{block}.ln1", f"{at}.ln_1", d) | layer_norm(f"{block}.ln2", f"{at}.ln_2", d)
        # c_attn [d_model, 3·d_model]: queries, keys, values side by side, d_model columns each, head after head.
        thirds = {name: slice(j * d, (j + 1) * d) for j, name in enumerate("QKV")}
        params |= {
            f"{block}.attn.W_{n}": (f"{at}.attn.c_attn.weight", (d, 3 * d), heads(cfg, part)) for n, part in thirds.items()
        }
        params |= {
            f"{block}.attn.b_{n}": (f"{at}.attn.c_attn.bias", (3 * d,), head_bias(cfg, part)) for n, part in thirds.items()
        }
        params |= {
            f"{block}.attn.W_O": (f"{at}.attn.c_proj.weight", (d, d), from_heads(cfg)),
            f"{block}.attn.b_O": (f"{at}.attn.c_proj.bias", (d,), same),
            f"{block}.mlp.W_in": (f"{at}.mlp.c_fc.weight", (d, d_mlp), same),
            f"{block}.mlp.b_in": (f"{at}.mlp.c_fc.bias", (d_mlp,), same),
            f"{block}.mlp.W_out": (f"{at}.mlp.c_proj.weight", (d_mlp, d), same),
            f"{block}.mlp.b_out": (f"{at}.mlp.c_proj.bias", (d,), same),
        }
    return params | layer_norm("ln_final", "ln_f", d)


LAYOUT = Layout(GPT2, key_map, "transformer.", IGNORED, tied_to="wte.weight")


def read_model(directory: Path, unembed: bool = True) -> GPT2:
    """A float32 model of the checkpoint's family (its config.json's model_type) with exactly the checkpoint's
    weights, read one tensor at a time. unembed=False leaves ln_final and W_U out: the residual stream only."""
    cfg = read_config(directory)
    checkpoint_file = open_weights(directory)
    check_sizes(cfg, checkpoint_file, directory / "config.json")  # before a table or a model is built from them
    layout = families.LAYOUTS.get(type(cfg), LAYOUT)  # another family: its config type says which
    return read_weights(checkpoint_file, cfg, layout, unembed)
