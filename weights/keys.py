"""The one reader every family shares: a checkpoint's tensors, checked against config.json, into a model.

A family's files are described by a `Layout`: the model it builds, and a key map saying, for each of the model's
parameters, which tensor of the file it comes from, that tensor's shape, and how it becomes the parameter (a
transpose, a cut into heads). `read_weights` then does the same for every family: check every expected tensor is
present, nothing else but the buffers the files are known to carry, each of its shape, all of what is wrong in one
error naming the file; build the model on the meta device (no memory); read the tensors one at a time into it;
and check that every parameter was set.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from minigpt import Config

from .formats import CheckpointError, json_field, read_float32
from .rewrites import drop_unembed

# parameter name (its module path, e.g. "blocks.0.attn.W_Q") → (key in the file, the tensor's shape there, how the
# tensor becomes the parameter). Key None: not in the file, and `how(None)` makes it (GPT-Neo's zero b_Q).
KeyMap = dict[str, tuple[str | None, tuple[int, ...], Callable]]
UNEMBEDDING = ("ln_final.w", "ln_final.b", "W_U")  # what unembed=False leaves unread


@dataclass(frozen=True)
class Layout:
    model: type  # the minigpt class the files are read into
    key_map: Callable[[Config], KeyMap]
    prefix: str  # what `save_pretrained` puts before every key ("transformer.", "model.", "gpt_neox.")
    ignored: re.Pattern  # keys that are not read, matched in full: causal-mask buffers, a tied lm_head
    tied_to: str | None = None  # the embedding's key, which an lm_head.weight in the file must equal


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


def same(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def in_out(weight: torch.Tensor) -> torch.Tensor:
    """nn.Linear's weight [out, in] as minigpt's W [in, out]: transposed once, into memory of its own."""
    return weight.T.contiguous()


def heads(cfg: Config, columns: slice = slice(None), linear: bool = False) -> Callable:
    """→ [n_heads, d_model, d_head], one matrix per head, from [d_model, n_heads·d_head] (those `columns` of it),
    or from nn.Linear's [n_heads·d_head, d_model] with linear=True."""

    def cut(W: torch.Tensor) -> torch.Tensor:
        W = W.T if linear else W
        return W[:, columns].reshape(cfg.d_model, cfg.n_heads, cfg.d_head).permute(1, 0, 2).contiguous()

    return cut


def head_bias(cfg: Config, entries: slice = slice(None)) -> Callable:
    """[n_heads·d_head] (those `entries` of it) → [n_heads, d_head]."""
    return lambda b: b[entries].reshape(cfg.n_heads, cfg.d_head).clone()


def from_heads(cfg: Config, linear: bool = False) -> Callable:
    """W_O [n_heads, d_head, d_model] from [n_heads·d_head, d_model], whose rows are (head, d_head) in order, or from
    nn.Linear's [d_model, n_heads·d_head] with linear=True."""
    return lambda W: (W.T if linear else W).reshape(cfg.n_heads, cfg.d_head, cfg.d_model)


def layer_norm(name: str, key: str, d_model: int) -> KeyMap:
    """A LayerNorm's gain and bias, from `key`.weight and `key`.bias."""
    return {f"{name}.w": (f"{key}.weight", (d_model,), same), f"{name}.b": (f"{key}.bias", (d_model,), same)}


def linear(mlp: str, side: str, key: str, d_in: int, d_out: int) -> KeyMap:
    """An MLP's W_in/b_in (side "in") or W_out/b_out ("out") from an nn.Linear layer, its weight stored [out, in]."""
    return {f"{mlp}.W_{side}": (f"{key}.weight", (d_out, d_in), in_out), f"{mlp}.b_{side}": (f"{key}.bias", (d_out,), same)}


def match_keys(checkpoint_file, cfg: Config, expected: dict[str, tuple[int, ...]], prefix: str, ignored: re.Pattern) -> dict:
    """{key as in `expected`: its key in the file}, after checking every tensor is present, known and of its shape.

    A key in the file may carry `prefix`; keys that `ignored` matches in full are not read, unless `expected`
    names them (Llama's lm_head.weight: ignored when tied, the unembedding when not).
    """
    in_file = {key.removeprefix(prefix): key for key in checkpoint_file.shapes()}
    shapes = checkpoint_file.shapes()
    found = {name: tuple(shapes[key]) for name, key in in_file.items() if name in expected or not ignored.fullmatch(name)}
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    misshaped = [
        f"{key} {list(found[key])} (expected {list(shape)})"
        for key, shape in expected.items()
        if key in found and found[key] != shape
    ]
    if missing or unexpected or misshaped:
        parts = [
            f"{label} ({len(keys)}): {', '.join(keys[:12])}{' …' if len(keys) > 12 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped))
            if keys
        ]
        raise CheckpointError(
            f"{checkpoint_file.path} does not match its config.json ({cfg.n_layers} layers, d_model {cfg.d_model}): "
            + "; ".join(parts)
        )
    return {name: in_file[name] for name in expected}


def read_weights(checkpoint_file, cfg: Config, layout: Layout, unembed: bool = True) -> nn.Module:
    """The family's model with exactly the checkpoint's weights in float32, read one tensor at a time.
    unembed=False leaves ln_final and W_U unread (None), for the residual stream alone."""
    key_map = layout.key_map(cfg)
    expected = {key: shape for key, shape, _ in key_map.values() if key is not None}
    keys = match_keys(checkpoint_file, cfg, expected, layout.prefix, layout.ignored)
    with torch.device("meta"):  # parameters without memory, each replaced by the checkpoint's tensor
        model = layout.model(cfg)
    last = {}  # the last tensor read: a fused one (GPT-2's c_attn, GPT-NeoX's query_key_value) is cut in a row

    def read(key: str | None) -> torch.Tensor | None:
        if key is not None and key not in last:
            last.clear()
            last[key] = read_float32(checkpoint_file, keys[key])
        return last.get(key)

    for name, (key, _, how) in key_map.items():
        if unembed or name not in UNEMBEDDING:
            module, _, attribute = name.rpartition(".")
            set_parameter(model.get_submodule(module), attribute, how(read(key)))
    if layout.tied_to and "lm_head.weight" in checkpoint_file and "lm_head.weight" not in expected:
        check_tied(checkpoint_file, model.W_E, layout.tied_to, layout.model.__name__)
    if not unembed:
        drop_unembed(model)
    unset = [name for name, param in model.named_parameters() if param.is_meta]
    if unset:  # a key map that forgot a parameter: a bug in the layout, not in the file
        raise RuntimeError(
            f"reading {checkpoint_file.path} left {', '.join(unset)} unset: {layout.model.__name__}'s key map misses them"
        )
    return model


def check_tied(checkpoint_file, embedding: torch.Tensor, embedding_key: str, family: str) -> None:
    """Some files also carry lm_head.weight, the unembedding tied to the embedding: refuse one that is not tied."""
    if not torch.equal(read_float32(checkpoint_file, "lm_head.weight"), embedding):
        raise CheckpointError(
            f"{checkpoint_file.path}: lm_head.weight differs from {embedding_key}; {family} ties them and minigpt requires it"
        )


def set_parameter(module: nn.Module, name: str, tensor: torch.Tensor) -> None:
    setattr(module, name, nn.Parameter(tensor, requires_grad=False))
