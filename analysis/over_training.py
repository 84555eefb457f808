"""The study's key measures at one checkpoint, and at every checkpoint of a training run or a hub repository:
what `python -m analysis.dynamics` measures (its report is analysis/dynamics_report.py).

A run's files are all read and checked (`find_run`) before its first checkpoint is measured, so that a broken
training record is refused in one line before the work, not after it.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import outdir
import weights
from analysis import engine, inputs, rates, weight_measures

# The weight measures, by CSV column, with the name their figure panel shows.
WEIGHTS = {
    "ln1_gain_rms": "ln1 gain (RMS of w)",
    "W_OV_as_trained": "‖W_OV‖_F as trained (mean of heads)",
    "W_OV_folded": "‖W_OV‖_F processed (ln1 folded, centred)",
    "W_out_as_trained": "‖W_out‖_F as trained",
    "ln2_gain_rms": "ln2 gain (RMS of w)",
    "W_in_as_trained": "‖W_in‖_F as trained",
    "W_in_folded": "‖W_in‖_F processed (ln2 folded, centred)",
    "mlp_random_out": "mean ‖MLP(x)‖, x random normalised",
}
# The fields of a checkpoint's training_step.json that the report prints as numbers (training/train.py writes them).
STEP_NUMBERS = ("tokens", "val_loss")


@dataclass
class Checkpoint:
    step: int
    record: dict  # training_step.json: tokens, learning rate, losses ({} for a hub revision: it has none)
    mean_norm: np.ndarray  # [n_layers] mean ‖resid_post‖, BOS excluded
    bos_norm: np.ndarray  # [n_layers] ‖resid_post‖ at position 0
    growth: dict  # rates.growth_rate over the default fit layers
    weights: dict[str, np.ndarray]  # WEIGHTS' keys, [n_layers] each
    revision: str | None = None  # a hub revision: its name (stepN) ...
    commit: str | None = None  # ... and the commit it resolved to


@dataclass
class Run:
    label: str
    directory: Path | None  # the training run's folder; None for a hub repository
    log: dict  # training_log.json without the per-step history (None-valued if absent)
    n_layers: int
    checkpoints: list[Checkpoint]
    repo: str | None = None  # the hub repository whose step revisions these are

    @property
    def final(self) -> Checkpoint:
        return self.checkpoints[-1]


@dataclass
class RunFiles:
    """A training run's folder, read and checked: its checkpoints' folders and records, and its log."""

    directory: Path
    checkpoints: list[tuple[int, Path, dict]]  # (step, folder, training_step.json), in step order
    log: dict  # training_log.json ({} if absent)


def checkpoint_dirs(run: Path) -> list[tuple[int, Path]]:
    """(step, folder) for every RUN/checkpoints/step-NNNNNN, in step order; a clear error if there are none."""
    found = sorted(
        (int(folder.name.removeprefix("step-")), folder)
        for folder in (run / "checkpoints").glob("step-*")
        if folder.name.removeprefix("step-").isdigit() and (folder / "config.json").is_file()
    )
    if not found:
        raise outdir.UsageError(
            f"{run} has no checkpoints (expected {run}/checkpoints/step-NNNNNN/ folders with config.json); "
            "train with `python -m training --out RUN --checkpoints 12` to write them"
        )
    return found


def read_record(path: Path, numbers: tuple[str, ...] = ()) -> dict:
    """A training record (training_step.json, training_log.json) as a dict, {} if there is none; a file that is
    not a JSON object, or whose fields named in numbers are not numbers, is refused in one line naming it."""
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error).splitlines()[0]
        raise outdir.UsageError(f"{path}: not a readable JSON training record ({reason})") from None
    if not isinstance(record, dict):
        raise outdir.UsageError(f"{path}: expected a JSON object (as python -m training writes), found {type(record).__name__}")
    for field in numbers:
        value = record.get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise outdir.UsageError(f"{path}: {field!r} must be a number, found {value!r}")
    return record


def find_run(directory: Path) -> RunFiles:
    """Everything a run's measuring and report will read, checked before any checkpoint is measured."""
    found = [
        (step, folder, read_record(folder / "training_step.json", STEP_NUMBERS)) for step, folder in checkpoint_dirs(directory)
    ]
    return RunFiles(directory, found, read_record(directory / "training_log.json"))


@torch.no_grad()
def measure(
    folder: Path, step: int, prompts_in: inputs.Prompts, device: torch.device, batch_size: int, record: dict | None = None
) -> Checkpoint:
    """The measures of one checkpoint: weights as trained, then the processed model's norms and weights.
    Its model is the only one in memory, and is gone when this returns."""
    model, tokenizer = weights.from_directory(folder, processed=False, device=device, unembed=False)
    cfg = model.cfg
    raw = weight_measures.as_trained(model)
    weights.process(model, unembed=False)
    folded = weight_measures.weight_measures(model)
    prompts, _ = inputs.tokenize(prompts_in, tokenizer, cfg, f"step {step}", truncate=True)
    stats = engine.collect(model, prompts, batch_size, tokenizer.pad)
    mean = stats.mean("resid_post")
    values = raw | {
        "W_OV_folded": folded["W_OV_frobenius"].mean(1),
        "W_in_folded": folded["W_in_norm"],
        "mlp_random_out": folded["mlp_random_norm"],
    }
    return Checkpoint(
        step=step,
        record=record or {},
        mean_norm=mean,
        bos_norm=stats.bos("resid_post"),
        growth=rates.growth_rate(mean, *rates.default_fit_layers(cfg.n_layers)),
        weights={key: values[key] for key in WEIGHTS},
    )


def read_run(run: RunFiles, prompts_in, device, batch_size: int, log) -> Run:
    """Every checkpoint of a training run, one after another."""
    checkpoints = []
    for i, (step, folder, record) in enumerate(run.checkpoints):
        log(f"{run.directory.name}: step {step:,} ({i + 1} of {len(run.checkpoints)})")
        checkpoints.append(measure(folder, step, prompts_in, device, batch_size, record))
    history = ("step", "train_loss", "val_step", "val_loss")
    return Run(
        label=run.directory.name,
        directory=run.directory,
        log={k: v for k, v in run.log.items() if k not in history},
        n_layers=len(checkpoints[0].mean_norm),
        checkpoints=checkpoints,
    )


def read_hub_run(repo: str, revisions: dict[int, str], prompts_in, device, batch_size: int, log) -> Run:
    """One revision after another: downloaded into the Hugging Face cache (or found there), then measured."""
    checkpoints = []
    for i, (step, name) in enumerate(revisions.items()):
        count = f"({i + 1} of {len(revisions)})"
        log(f"{name}: cached {count}" if weights.hub.in_cache(repo, name) else f"downloading {repo} at {name} {count}")
        folder, source = weights.locate(repo, name)
        checkpoint = measure(folder, step, prompts_in, device, batch_size)
        checkpoint.revision, checkpoint.commit = name, source["revision"]
        checkpoints.append(checkpoint)
    return Run(
        label=repo.split("/")[-1],
        directory=None,
        log={},
        n_layers=len(checkpoints[0].mean_norm),
        checkpoints=checkpoints,
        repo=repo,
    )
