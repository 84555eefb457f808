"""From a model name or directory to a GPT-2 with its tokenizer: find the files, read them, rewrite them.

model, tokenizer = weights.load("gpt2")                  # processed, as the residual-stream study used it
model, tokenizer = weights.load("gpt2", processed=False)   # the official weights: Hugging Face's logits within ~5e-6
"""

import torch

from minigpt import GPT2, Tokenizer

from . import devices, rewrites
from .checkpoint import family_of, read_config, read_model
from .checks import check_finite
from .formats import CheckpointError, open_weights, read_json
from .hub import BUNDLED_DIR, BUNDLED_NAME, REPOS, is_hub_name, locate
from .rewrites import (
    center_unembed,
    center_writing_weights,
    drop_unembed,
    fold_layer_norm,
    fold_value_biases,
    process,
)
from .save import save
from .tokenizer_files import read_tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}  # by the names commands take


def load(
    name_or_path: str = "gpt2",
    *,
    processed: bool = True,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    revision: str | None = None,
    unembed: bool = True,
    allow_nonfinite: bool = False,
) -> tuple[GPT2, Tokenizer]:
    """Load a GPT-2 by name ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2", "bundled"),
    hub id, or local directory. Hub models come through huggingface_hub's cache (`revision`: a branch,
    tag or commit); the bundled model and local directories are read where they are. `model.source`
    records where the files came from and the resolved revision. With processed=True the rewrites of
    `weights.process` (all four for LayerNorm families; for RMSNorm ones such as Llama, the norms' gains folded and
    nothing centred) are applied in float32 before the model is cast to dtype. device: "auto" (CUDA,
    then MPS, then CPU) or one this machine has, checked before anything is read. unembed=False leaves
    out ln_final and the unembedding (`weights.drop_unembed`): the residual stream only, in less memory.
    Weights holding NaN or ±Inf are refused (`weights.checks.check_finite`) unless allow_nonfinite=True.
    """
    check_dtype(dtype)
    device = devices.resolve(device)
    directory, source = locate(name_or_path, revision)
    return from_directory(
        directory, source, processed=processed, dtype=dtype, device=device, unembed=unembed, allow_nonfinite=allow_nonfinite
    )


def check_dtype(dtype: torch.dtype) -> None:
    if dtype not in DTYPES.values():
        raise ValueError(f"dtype must be one of {', '.join(str(d) for d in DTYPES.values())}, found {dtype}")


def from_directory(
    directory,
    source: dict | None = None,
    *,
    processed: bool = True,
    dtype: torch.dtype = torch.float32,
    device="cpu",
    unembed: bool = True,
    allow_nonfinite: bool = False,
) -> tuple[GPT2, Tokenizer]:
    """`load` for files already located (by `locate`): the model and tokenizer in that directory."""
    check_dtype(dtype)
    device = devices.resolve(device)
    tokenizer = read_tokenizer(directory)
    model = read_model(directory, unembed=unembed)
    if not allow_nonfinite:
        check_finite(model, directory)
    model.source = (source or {"name": str(directory), "repo": None, "revision": "local", "path": str(directory)}) | {
        "processed": processed,
        "model_type": family_of(read_json(directory / "config.json"), directory / "config.json"),
    }
    if processed:
        rewrites.process(model, unembed=unembed)
    return to(model, dtype, device), tokenizer


def to(model: GPT2, dtype: torch.dtype, device="cpu") -> GPT2:
    """The model's parameters cast to dtype and moved to device, one tensor at a time, so that memory never
    holds two copies of the weights; model.source records both."""
    check_dtype(dtype)
    device = devices.resolve(device)
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            setattr(module, name, torch.nn.Parameter(param.detach().to(device=device, dtype=dtype), requires_grad=False))
    model.source = getattr(model, "source", {}) | {"dtype": str(dtype).removeprefix("torch."), "device": str(device)}
    return model.eval()


__all__ = [
    "BUNDLED_DIR",
    "BUNDLED_NAME",
    "REPOS",
    "CheckpointError",
    "center_unembed",
    "center_writing_weights",
    "drop_unembed",
    "fold_layer_norm",
    "fold_value_biases",
    "from_directory",
    "is_hub_name",
    "load",
    "locate",
    "open_weights",
    "process",
    "read_config",
    "read_model",
    "read_tokenizer",
    "save",
    "to",
]
