"""A checkpoint's tensors against the layout its config.json implies, for every family.

One check, so that GPT-2 and the other families report a bad file the same way: every expected tensor
present, nothing else but the buffers a family's files are known to carry, each of its shape, and all of
what is wrong in one error naming the file.
"""

import re

import torch
from torch import nn

from minigpt import Config

from .formats import CheckpointError, read_float32


def match_keys(
    checkpoint_file, cfg: Config, expected: dict[str, tuple[int, ...]], prefix: str, ignored: re.Pattern
) -> dict[str, str]:
    """{key as in `expected`: its key in the file}, after checking every tensor is present, known and of its shape.

    A key in the file may carry `prefix` (which `save_pretrained` adds: "transformer.", "model.", "gpt_neox.");
    keys that `ignored` matches in full (causal-mask buffers, a tied lm_head) are not read.
    """
    in_file = {key.removeprefix(prefix): key for key in checkpoint_file.shapes()}
    shapes = checkpoint_file.shapes()
    found = {name: tuple(shapes[key]) for name, key in in_file.items() if not ignored.fullmatch(name)}
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


def check_tied(checkpoint_file, embedding: torch.Tensor, embedding_key: str, family: str) -> None:
    """Some files also carry lm_head.weight, the unembedding tied to the embedding: refuse one that is not tied."""
    if "lm_head.weight" in checkpoint_file and not torch.equal(read_float32(checkpoint_file, "lm_head.weight"), embedding):
        raise CheckpointError(
            f"{checkpoint_file.path}: lm_head.weight differs from {embedding_key}; {family} ties them and minigpt requires it"
        )


def set_parameter(module: nn.Module, name: str, tensor: torch.Tensor) -> None:
    setattr(module, name, nn.Parameter(tensor, requires_grad=False))
