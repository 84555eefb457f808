"""The models the checkers run on: the bundled GPT-2 (loaded once per session) and small random ones."""

import torch

import weights
from minigpt import GPT2, Config

from .core import generator

_models: dict[bool, GPT2] = {}


def bundled(processed: bool = False) -> GPT2:
    """The bundled model, loaded once per session (unprocessed unless asked); callers must not modify it."""
    if processed not in _models:
        _models[processed], _ = weights.load("bundled", processed=processed)
    return _models[processed]


def sample_tokens(n_pos: int = 12, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 50257, (batch, n_pos), generator=generator(seed))


def random_model(seed: int = 0, n_layers: int = 2) -> GPT2:
    """A small GPT-2 with random weights, the LayerNorm gains around 1 (so that every rewrite has work to do)."""
    torch.manual_seed(seed)
    model = GPT2(Config(n_layers=n_layers, d_model=32, n_heads=4, d_head=8, d_mlp=64, d_vocab=101, n_ctx=16))
    for name, param in model.named_parameters():
        torch.nn.init.normal_(param, mean=1.0 if name.endswith(".w") else 0.0, std=0.2)
    return model.requires_grad_(False)
