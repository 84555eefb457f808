"""What `python -m training` checks before its first step: every number it was given, and the token files
and provenance.json it reads. A run that cannot finish, or whose end would be thrown away, is refused at
the start in one line naming the option or the file (exit status 2), never after the training."""

import json
import math
from pathlib import Path

import numpy as np

import outdir

# Each number's allowed range: at least 1, at least 0, or (for rates and fractions) a finite number in a range.
AT_LEAST_1 = ("layers", "d_model", "heads", "n_ctx", "steps", "batch_size", "eval_every", "eval_batches")
AT_LEAST_0 = ("warmup_steps", "checkpoints", "stop_after")
FINITE = {"lr": (0, False), "grad_clip": (0, False), "weight_decay": (0, True), "min_lr_fraction": (0, True)}


def check_numbers(args) -> None:
    """Refuse, naming the option, any number the run could not train with, before anything is read or built."""
    for field in AT_LEAST_1 + AT_LEAST_0:
        least = 1 if field in AT_LEAST_1 else 0
        if getattr(args, field) < least:
            why = " (an untrained model is not a training run)" if field == "steps" else ""
            raise outdir.UsageError(f"--{field.replace('_', '-')} must be at least {least}, found {getattr(args, field)}{why}")
    for field, (low, low_allowed) in FINITE.items():
        value = getattr(args, field)
        if not math.isfinite(value) or value < low or (value == low and not low_allowed):
            bound = f"{low} or more" if low_allowed else f"more than {low}"
            raise outdir.UsageError(f"--{field.replace('_', '-')} must be a finite number, {bound}; found {value}")
    if args.min_lr_fraction > 1:
        raise outdir.UsageError(f"--min-lr-fraction must be at most 1, found {args.min_lr_fraction}")


def read_provenance(path: Path) -> dict | None:
    """The corpus's provenance.json (training.corpus writes it), or None if there is none."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise outdir.UsageError(f"{path}: cannot be read as JSON ({error}); fix or remove it") from None


def check_token_ids(splits: dict[str, np.ndarray], data: Path, d_vocab: int) -> None:
    """Every token id of train.bin and val.bin must name a row of the embedding (an id past it would fail mid-run)."""
    for name, tokens in splits.items():
        if (largest := int(tokens.max())) >= d_vocab:
            raise outdir.UsageError(
                f"{data / f'{name}.bin'} holds token id {largest} (at index {int(tokens.argmax())}); the vocabulary has "
                f"{d_vocab} (ids 0 to {d_vocab - 1}): rebuild it with `python -m training.corpus`"
            )
