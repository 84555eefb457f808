"""Two checks of a model's numbers that no file format makes: its config.json's sizes against the weights
that are there, before anything is built from them, and its weights' values, once they are read."""

import torch

from minigpt import Config

from .formats import CheckpointError


def check_sizes(cfg: Config, checkpoint_file, config_path) -> None:
    """Refuse sizes in config.json that the checkpoint cannot hold, from the numbers alone: a layer count of a
    million would otherwise be met by a table of twelve million expected tensors before any comparison.

    Every family minigpt reads stores, per layer, four d_model × d_model matrices (queries, keys, values,
    output) and two d_model × d_mlp (the MLP), in at least four tensors, and a d_vocab × d_model embedding; a
    weight takes at least 2 bytes (float16 or bfloat16). Those are lower bounds: the exact layout is checked
    tensor by tensor afterwards (weights.keys.match_keys), by which time the table is of a believable size.
    """
    n_tensors = len(checkpoint_file.keys())
    if 4 * cfg.n_layers > n_tensors:
        raise CheckpointError(
            f"{config_path}: {cfg.n_layers} layers need at least {4 * cfg.n_layers:,} tensors, and "
            f"{checkpoint_file.path.name} holds {n_tensors}: the layer count in config.json is wrong"
        )
    d = cfg.d_model
    weights = d * cfg.d_vocab + cfg.n_layers * (4 * d * d + 2 * d * cfg.d_mlp)
    if 2 * weights > checkpoint_file.nbytes:
        raise CheckpointError(
            f"{config_path}: {cfg.n_layers} layers of d_model {d} and d_mlp {cfg.d_mlp}, with a vocabulary of "
            f"{cfg.d_vocab}, need at least {weights:,} weights ({2 * weights / 1e6:,.1f} MB in float16), and "
            f"{checkpoint_file.path.name} holds {checkpoint_file.nbytes / 1e6:,.1f} MB: a size in config.json is wrong"
        )


def check_finite(model: torch.nn.Module, where) -> None:
    """Refuse weights holding NaN or ±Inf, naming the parameters and how many of their values are not finite.

    A non-finite weight makes every norm computed through it NaN, and NaN passes through the study's sums,
    fits and report as if it were a number. (`weights.load(..., allow_nonfinite=True)` skips this check, to
    look at a broken checkpoint: which rows are NaN, say.)
    """
    bad = []
    for name, param in model.named_parameters():
        # A sum is NaN or ±Inf when any term is (or when it overflows: then the count below finds none), and
        # it is some 25 times faster than isfinite over every value: 0.03 s against 0.8 s for a [50257, 1024]
        # W_E on one thread; 0.34 s for all of gpt2-medium's weights.
        if not torch.isfinite(param.sum()) and (count := int((~torch.isfinite(param)).sum())):
            bad.append(f"{name} ({count:,} of {param.numel():,})")
    if bad:
        shown = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
        raise CheckpointError(
            f"{where}: {len(bad)} weight tensor(s) hold NaN or infinite values: {shown}; every norm through them "
            "would be NaN (a diverged training run, or a damaged file?). allow_nonfinite=True, or --allow-nonfinite, "
            "reads it anyway"
        )
