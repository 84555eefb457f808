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

import json
import re
from pathlib import Path

import torch

from minigpt import GPT2, Config, Tokenizer, tokenizer_json
from minigpt.tokenizer import END_OF_TEXT

from . import families
from .checks import check_sizes
from .formats import (
    SPECIAL_TOKEN_FILES,
    CheckpointError,
    json_field,
    open_weights,
    read_json,
)
from .keys import KeyMap, Layout, from_heads, head_bias, heads, layer_norm, match_keys, read_weights, same
from .tokenizer_files import read_merges, read_tokenizer_json, read_vocab

# Causal masks (minigpt builds its own) and the tied lm_head (checked against wte): not read as parameters.
IGNORED = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)|lm_head\.weight")


def read_config(directory: Path) -> Config:
    """The model's shape from a Hugging Face config.json, refusing settings minigpt does not implement.

    GPT-2's is read here; config.json's model_type picks another family's reader (weights/families.py),
    whose config type (NeoConfig, OPTConfig, NeoXConfig) then says which model `read_model` builds.
    """
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(
            f"{directory}: no config.json (a GPT-2 directory holds config.json, the weights, vocab.json and merges.txt)"
        )
    hf = read_json(path)
    model_type = json_field(hf, path, "model_type", str, "gpt2")
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


def hf_config(cfg: Config) -> dict:
    """A config.json that Hugging Face's GPT2LMHeadModel and `read_config` both read as cfg."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "activation_function": "gelu_new",
        "n_layer": cfg.n_layers,
        "n_embd": cfg.d_model,
        "n_head": cfg.n_heads,
        "n_inner": cfg.d_mlp,
        "vocab_size": cfg.d_vocab,
        "n_positions": cfg.n_ctx,
        "n_ctx": cfg.n_ctx,
        "layer_norm_epsilon": cfg.ln_eps,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
    }


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


def expected_shapes(cfg: Config) -> dict[str, tuple[int, ...]]:
    """Every tensor of the official layout (without the mask buffers) and its shape."""
    return {key: shape for key, shape, _ in key_map(cfg).values()}


def check_keys(checkpoint_file, cfg: Config) -> dict[str, str]:
    """{official key: key in the file (perhaps "transformer."-prefixed)}, after checking every tensor is present,
    known and of its shape."""
    return match_keys(checkpoint_file, cfg, expected_shapes(cfg), "transformer.", IGNORED)


def read_tokenizer(directory: Path) -> Tokenizer:
    """GPT-2's vocab.json and merges.txt, or, where a repository ships only a tokenizer.json (Pythia's), that;
    with the BOS and padding tokens the checkpoint names (`special_tokens`). A vocabulary with ids past the
    embedding's rows (config.json's vocab_size) is refused here, before any text is tokenized."""
    files = {name: directory / name for name in ("vocab.json", "merges.txt")}
    if not files["vocab.json"].is_file() and (directory / "tokenizer.json").is_file():
        path = directory / "tokenizer.json"
        try:
            parts = tokenizer_json.read(read_tokenizer_json(path))
        except CheckpointError:
            raise
        except ValueError as error:  # what the tokenizer does not implement, or a malformed field, in one line
            raise CheckpointError(f"{path}: {error}") from None
        texts = {i: token for token, i in parts["vocab"].items()} | {t.id: t.content for t in parts["added_tokens"]}
        check_fits_embedding(directory, texts, path)
        bos, pad = special_tokens(directory, texts, path)
        return tokenizer_json.JsonTokenizer(**parts, bos_token=bos, pad_token=pad)
    for name, path in files.items():
        if not path.is_file():
            raise CheckpointError(f"{directory}: no {name} (the tokenizer needs vocab.json and merges.txt, or a tokenizer.json)")
    vocab = read_vocab(files["vocab.json"])
    texts = {i: token for token, i in vocab.items()}
    check_fits_embedding(directory, texts, files["vocab.json"])
    bos, pad = special_tokens(directory, texts, files["vocab.json"])
    return Tokenizer(vocab, read_merges(files["merges.txt"], vocab), bos_token=bos, pad_token=pad)


def check_fits_embedding(directory: Path, texts: dict[int, str], vocabulary: Path) -> None:
    """Every token id must be a row of W_E [d_vocab, d_model]: config.json's vocab_size may be larger (Pythia
    pads its embedding to a multiple of 128), never smaller."""
    if not (directory / "config.json").is_file() or not texts:
        return
    d_vocab, largest = read_config(directory).d_vocab, max(texts)
    if largest >= d_vocab:
        raise CheckpointError(
            f"{vocabulary}: token {texts[largest]!r} has id {largest}, past the model's embedding of {d_vocab} rows "
            f"(config.json's vocab_size {d_vocab}); the tokenizer's files are not this model's"
        )


def special_tokens(directory: Path, texts: dict[int, str], vocabulary: Path) -> tuple[str, str | None]:
    """The texts of the BOS and padding tokens (None: padding is BOS), checked against the vocabulary's
    texts {id: text}. Each is the first that names it of: the tokenizer's files (SPECIAL_TOKEN_FILES, the
    first file's word winning, as in transformers; a token is a string or {"content": string}); config.json's
    bos_token_id and pad_token_id (a cached snapshot of an older download may lack the tokenizer's files, and
    OPT's config says 2 and 1 as they do); else GPT-2's <|endoftext|> as BOS."""
    named: dict[str, tuple[str, str]] = {}  # {role: (token, where it was named)}
    for name in reversed(SPECIAL_TOKEN_FILES):
        path = directory / name
        if path.is_file():
            given = read_json(path)
            for role in ("bos_token", "pad_token"):
                token = given.get(role)
                if isinstance(token, dict):
                    token = token.get("content")
                if token is not None and not isinstance(token, str):
                    raise CheckpointError(f'{path}: {role} is {json.dumps(token)}; expected a string or {{"content": string}}')
                if token is not None:
                    named[role] = (token, f"{name} names it")
    config = directory / "config.json"
    hf = read_json(config) if config.is_file() else {}
    for role in ("bos_token", "pad_token"):
        token_id = hf.get(f"{role}_id")
        if role not in named and isinstance(token_id, int) and not isinstance(token_id, bool):
            if token_id not in texts:
                raise CheckpointError(f"{config}: {role}_id {token_id} is not an id of {vocabulary.name}'s {len(texts)} tokens")
            named[role] = (texts[token_id], f"config.json's {role}_id {token_id}")
    named.setdefault("bos_token", (END_OF_TEXT, "GPT-2's end-of-text token, the default"))
    known = set(texts.values())
    for role, (token, why) in named.items():
        if token not in known:
            what = "BOS" if role == "bos_token" else "padding"
            raise CheckpointError(f"{vocabulary}: no {token} (the {what} token: {why})")
    return named["bos_token"][0], named.get("pad_token", (None,))[0]


def read_model(directory: Path, unembed: bool = True) -> GPT2:
    """A float32 model of the checkpoint's family (its config.json's model_type) with exactly the checkpoint's
    weights, read one tensor at a time. unembed=False leaves ln_final and W_U out: the residual stream only."""
    cfg = read_config(directory)
    checkpoint_file = open_weights(directory)
    check_sizes(cfg, checkpoint_file, directory / "config.json")  # before a table or a model is built from them
    layout = families.LAYOUTS.get(type(cfg), LAYOUT)  # another family: its config type says which
    return read_weights(checkpoint_file, cfg, layout, unembed)


def official_state_dict(model: GPT2) -> dict[str, torch.Tensor]:
    """The model's weights under the official keys and shapes (without mask buffers): the inverse of read_model."""
    if type(model) is not GPT2:
        raise ValueError(f"only GPT-2 is written in GPT-2's official layout; this model is {type(model).__name__}")
    if model.W_U is not None or model.ln_final.w is None:
        raise ValueError("only unprocessed weights have the official layout; save the model before weights.process")
    cfg = model.cfg
    state = {"wte.weight": model.W_E, "wpe.weight": model.W_pos}
    for i, block in enumerate(model.blocks):
        attn, mlp = block.attn, block.mlp
        state |= {
            f"h.{i}.ln_1.weight": block.ln1.w,
            f"h.{i}.ln_1.bias": block.ln1.b,
            f"h.{i}.attn.c_attn.weight": torch.cat(
                [W.permute(1, 0, 2).reshape(cfg.d_model, -1) for W in (attn.W_Q, attn.W_K, attn.W_V)], 1
            ),
            f"h.{i}.attn.c_attn.bias": torch.cat([b.reshape(-1) for b in (attn.b_Q, attn.b_K, attn.b_V)]),
            f"h.{i}.attn.c_proj.weight": attn.W_O.reshape(-1, cfg.d_model),
            f"h.{i}.attn.c_proj.bias": attn.b_O,
            f"h.{i}.ln_2.weight": block.ln2.w,
            f"h.{i}.ln_2.bias": block.ln2.b,
            f"h.{i}.mlp.c_fc.weight": mlp.W_in,
            f"h.{i}.mlp.c_fc.bias": mlp.b_in,
            f"h.{i}.mlp.c_proj.weight": mlp.W_out,
            f"h.{i}.mlp.c_proj.bias": mlp.b_out,
        }
    state |= {"ln_f.weight": model.ln_final.w, "ln_f.bias": model.ln_final.b}
    return {key: tensor.detach().contiguous() for key, tensor in state.items()}


def save(model: GPT2, directory, *, vocab_json: Path, merges_txt: Path, dtype: torch.dtype = torch.float32) -> Path:
    """Write model.safetensors, config.json and the tokenizer files so that `weights.load(directory)` reads them.

    The mask buffers are left out, as `save_pretrained` does; dtype=torch.bfloat16 halves the file.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {key: tensor.to(device="cpu", dtype=dtype) for key, tensor in official_state_dict(model).items()}
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(hf_config(model.cfg), indent=2) + "\n")
    for source, name in ((vocab_json, "vocab.json"), (merges_txt, "merges.txt")):
        (directory / name).write_bytes(Path(source).read_bytes())
    return directory
