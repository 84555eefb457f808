"""How the residual stream's growth arises during training: the study's key measures at every checkpoint.

    python -m training --data data --out runs/base --checkpoints 12      # a run with its checkpoints
    python -m analysis.dynamics runs/base                                 # -> ./dynamics-report
    python -m analysis.dynamics runs/base runs/no-decay runs/gains-decayed --out ablation
    python -m analysis.dynamics --model EleutherAI/pythia-160m --revisions step0,step512,step143000
    python -m analysis.dynamics --model EleutherAI/pythia-160m            # about 12 step revisions, log-spaced

A checkpoint is a folder RUN/checkpoints/step-NNNNNN written by `python -m training --checkpoints N`, or a
revision step<N> of one hub repository (--model), as Pythia publishes its 154 (step0, step1, step2, step4, …
step512, step1000, step2000, … step143000). Every revision named is checked against the repository's branches
and tags before the first is downloaded; each goes into the Hugging Face cache, is reused from there (offline
too), and is measured with only its model in memory. A revision has no training record, so its tokens and
validation loss are left empty (–), and the report's run is labelled by the repository's name (pythia-160m).

For each checkpoint: the mean ‖resid_post‖ by layer and its exponential fit (analysis.measures and rates, on
the processed model, over the study's prompts), the BOS position's norm, and the weights where growth can be
stored: the LayerNorm gains and ‖W_OV‖, ‖W_in‖ as trained (unfolded) and as weights.process leaves them (the
gains folded in, the reading weights and W_O centred), ‖W_out‖, and the MLP's output on random normalised
inputs. Writes report.md, summary.json, steps.csv, layers.csv and figures (PNG and SVG) into --out, which
follows analysis.growth's rules: new, empty or a previous report.
"""

import argparse
import csv
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import outdir
import weights
from analysis import engine, inputs, plots, rates, weight_measures
from analysis.progress import Progress

DEFAULT_OUT = Path("dynamics-report")

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


@torch.no_grad()
def measure(folder: Path, step: int, prompts_in: inputs.Prompts, device: torch.device, batch_size: int) -> Checkpoint:
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
    record_file = folder / "training_step.json"
    record = json.loads(record_file.read_text()) if record_file.exists() else {}
    return Checkpoint(
        step=step,
        record=record,
        mean_norm=mean,
        bos_norm=stats.bos("resid_post"),
        growth=rates.growth_rate(mean, *rates.default_fit_layers(cfg.n_layers)),
        weights={key: values[key] for key in WEIGHTS},
    )


def read_run(directory: Path, prompts_in, device, batch_size: int, log) -> Run:
    found = checkpoint_dirs(directory)
    log_file = directory / "training_log.json"
    training_log = json.loads(log_file.read_text()) if log_file.exists() else {}
    history = ("step", "train_loss", "val_step", "val_loss")
    checkpoints = []
    for i, (step, folder) in enumerate(found):
        log(f"{directory.name}: step {step:,} ({i + 1} of {len(found)})")
        checkpoints.append(measure(folder, step, prompts_in, device, batch_size))
    return Run(
        label=directory.name,
        directory=directory,
        log={k: v for k, v in training_log.items() if k not in history},
        n_layers=len(checkpoints[0].mean_norm),
        checkpoints=checkpoints,
    )


# ---------------------------------------------------------------------------------------------
# A hub repository's training checkpoints, published as revisions step<N> (as Pythia's are)

DEFAULT_REVISIONS = 12  # how many step revisions the default picks


def parse_revisions(text: str) -> dict[int, str]:
    """--revisions step0,step512,…: {step: name}, in step order. The step is read from the name, so every name
    must be step<N>; none may repeat."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise outdir.UsageError("--revisions: no revision named; give them as step0,step512,step143000")
    steps = {}
    for name in names:
        match = weights.hub.STEP_REVISION.fullmatch(name)
        if match is None:
            raise outdir.UsageError(
                f"--revisions: {name!r} is not named step<N>: the training step of each checkpoint is read from "
                "its revision's name (as Pythia's branches step0 … step143000 are named)"
            )
        if int(match[1]) in steps:
            raise outdir.UsageError(f"--revisions: {name} is given twice")
        steps[int(match[1])] = name
    return dict(sorted(steps.items()))


def log_spaced(steps: list[int], n: int) -> list[int]:
    """About n of the (sorted) steps, evenly spaced in log(step + 1), which gives step 0 a place: for each of n
    evenly spaced targets from the first step to the last, the step nearest to it. The first and last are
    always in; where the steps are sparser than the targets (Pythia's 1, 2, 4 …), two targets can share one."""
    if len(steps) <= n:
        return list(steps)
    logs = np.log1p(steps)
    return sorted({steps[int(np.argmin(np.abs(logs - target)))] for target in np.linspace(logs[0], logs[-1], n)})


def listed(revisions, most: int = 8) -> str:
    """Revision names for a message: all of them, or the first and last few."""
    revisions = list(revisions)
    if len(revisions) <= most:
        return ", ".join(revisions) or "none"
    return ", ".join(revisions[: most // 2]) + f", … ({len(revisions) - most} more), " + ", ".join(revisions[-most // 2 :])


def choose_revisions(repo: str, asked: dict[int, str] | None, log) -> dict[int, str]:
    """The revisions to measure, {step: name}: those asked for, each checked against the repository's step
    revisions before anything is downloaded, or by default about DEFAULT_REVISIONS of them, log-spaced."""
    found = weights.hub.step_revisions(repo)
    where = "in the Hugging Face cache (the hub cannot be reached)" if found.from_cache else "on the hub"
    if not found.steps:
        other = f" (its revisions: {listed(found.others)})" if found.others else ""
        if found.from_cache:
            raise outdir.UsageError(
                f"{repo}: the hub cannot be reached (offline, or HF_HUB_OFFLINE=1) and the Hugging Face cache holds "
                f"none of its step<N> revisions whole{other}; run once with network access to download them"
            )
        raise outdir.UsageError(
            f"{repo} has no branches or tags named step<N>{other}: no training checkpoints this command can measure, "
            "and --revisions can only name such revisions (Pythia's repositories have them: EleutherAI/pythia-160m)"
        )
    if asked is None:
        picked = log_spaced(list(found.steps), DEFAULT_REVISIONS)
        log(
            f"no --revisions: {len(picked)} of the {len(found.steps)} step revisions of {repo} {where}, log-spaced in "
            f"step as training changes fastest early (the first and last always): {', '.join(found.steps[s] for s in picked)}"
        )
        return {step: found.steps[step] for step in picked}
    missing = {step: name for step, name in asked.items() if found.steps.get(step) != name}
    if missing:
        first = next(iter(missing))  # the two revisions nearest to it, in log(step + 1) as the default picks
        nearest = sorted(sorted(found.steps, key=lambda step: abs(np.log1p(step) - np.log1p(first)))[:2])
        what = ", ".join(missing.values())
        known = f"{listed(found.steps.values())}; nearest to {missing[first]}: {', '.join(found.steps[s] for s in nearest)}"
        if found.from_cache:
            raise outdir.UsageError(
                f"{repo}: {what} not in the Hugging Face cache, and the hub cannot be reached (offline, or "
                f"HF_HUB_OFFLINE=1) to download {'it' if len(missing) == 1 else 'them'}; the cache holds {known}"
            )
        raise outdir.UsageError(f"{repo} has no revision {what}; its {len(found.steps)} step revisions: {known}")
    return asked


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


# ---------------------------------------------------------------------------------------------
# Tables, figures and the report


def layer_fits(run: Run) -> dict[str, float]:
    """Each weight measure's least-squares growth per layer at the final checkpoint, over the fit layers:
    where the residual's growth is stored (a quantity that grows ×r per layer carries that much of it)."""
    g = run.final.growth
    return {
        key: rates.growth_rate(values, g["first_layer"], g["last_layer"])["fit_rate"] for key, values in run.final.weights.items()
    }


def step_rows(run: Run) -> list[dict]:
    rows = []
    for c in run.checkpoints:
        g = c.growth
        rows.append(
            {"run": run.label, "step": c.step, "tokens": c.record.get("tokens"), "val_loss": c.record.get("val_loss")}
            | {k: g[k] for k in ("fit_rate", "r2", "rate", "rate_first_half", "rate_second_half")}
            | {"bos_norm_last_layer": float(c.bos_norm[-1]), "mean_norm_last_layer": float(c.mean_norm[-1])}
            | {"steady": rates.steady_growth(g, run.n_layers)["steady"]}
        )
    return rows


def layer_rows(run: Run) -> list[dict]:
    return [
        {
            "run": run.label,
            "step": c.step,
            "layer": l,
            "mean_resid_post": float(c.mean_norm[l]),
            "bos_resid_post": float(c.bos_norm[l]),
        }
        | {key: float(values[l]) for key, values in c.weights.items()}
        for c in run.checkpoints
        for l in range(run.n_layers)
    ]


def run_summary(run: Run) -> dict:
    hub_revisions = [{"step": c.step, "revision": c.revision, "commit": c.commit} for c in run.checkpoints] if run.repo else None
    return {
        "label": run.label,
        "directory": str(run.directory) if run.directory else None,
        "repo": run.repo,
        "revisions": hub_revisions,
        "command": run.log.get("command"),
        "model": run.log.get("model"),
        "train": run.log.get("train"),
        "device": run.log.get("device"),
        "training_seconds": run.log.get("seconds"),
        "final_step": run.final.step,
        "final_val_loss": run.final.record.get("val_loss"),
        "final_growth": run.final.growth,
        "final_steady": rates.steady_growth(run.final.growth, run.n_layers),
        "weights_growth_per_layer": layer_fits(run),
        "steps": step_rows(run),
    }


def growth_curves(run: Run) -> dict:
    keys = ("fit_rate", "r2", "rate_first_half", "rate_second_half")
    return {"steps": [c.step for c in run.checkpoints]} | {k: [c.growth[k] for c in run.checkpoints] for k in keys}


def write_figures(run: Run, folder: Path) -> list[str]:
    steps = [c.step for c in run.checkpoints]
    names = plots.save(
        plots.norm_by_layer_over_steps(np.stack([c.mean_norm for c in run.checkpoints]), steps, run.label),
        folder,
        "01-mean-norm-by-layer",
    )
    names += plots.save(
        plots.growth_over_steps({run.label: growth_curves(run)}, f"{run.label}: growth of the residual norm over training"),
        folder,
        "02-growth-rate",
    )
    bos = {
        "BOS ‖resid_post‖": np.stack([c.bos_norm for c in run.checkpoints]),
        "mean ‖resid_post‖, BOS excluded": np.stack([c.mean_norm for c in run.checkpoints]),
    }
    names += plots.save(
        plots.per_layer_over_steps(bos, steps, f"{run.label}: BOS and ordinary residual norms by layer over training", ncols=2),
        folder,
        "03-bos-norm",
    )
    panels = {title: np.stack([c.weights[key] for c in run.checkpoints]) for key, title in WEIGHTS.items()}
    names += plots.save(
        plots.per_layer_over_steps(panels, steps, f"{run.label}: weight norms and LayerNorm gains by layer over training"),
        folder,
        "04-weights",
    )
    return names


def write_comparison(runs: list[Run], directory: Path) -> list[str]:
    names = plots.save(
        plots.growth_over_steps({r.label: growth_curves(r) for r in runs}, "Growth of the residual norm over training, by run"),
        directory,
        "runs-growth-rate",
    )
    panels = {"mean ‖resid_post‖ (final)": {r.label: r.final.mean_norm for r in runs}} | {
        title: {r.label: r.final.weights[key] for r in runs} for key, title in WEIGHTS.items() if key != "mlp_random_out"
    }
    names += plots.save(
        plots.per_layer_by_run(panels, "Final checkpoints: the residual norm and where its growth is stored, by layer"),
        directory,
        "runs-final-by-layer",
    )
    return names


def shown(value, spec: str) -> str:
    """A number as the report's tables print it, or – where it is not known (a hub revision has no training record)."""
    return "–" if value is None else format(value, spec)


def report(runs: list[Run], figures: dict[str, list[str]]) -> str:
    lines = ["# Residual-norm growth over training", ""]
    lines += [
        "Mean ‖resid_post‖ (BOS excluded) of the processed model over the study's prompts at every checkpoint, fitted "
        "with an exponential over the study's fit layers (5–41 of 48, scaled to depth). *Steady* means: R² ≥ 0.95, "
        "rate ≥ 1.02 per layer over at least two thirds of the layers, and the two halves' log-rates within 25%.",
        "",
        "| run | layers | steps | tokens | final val loss | rate ×/layer | R² | halves | steady |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in runs:
        g, verdict = r.final.growth, rates.steady_growth(r.final.growth, r.n_layers)
        failed = ", ".join(k for k, ok in verdict.items() if not ok and k != "steady")
        lines.append(
            f"| {r.label} | {r.n_layers} | {r.final.step:,} | {shown(r.final.record.get('tokens'), ',')} | "
            f"{shown(r.final.record.get('val_loss'), '.3f')} | ×{g['fit_rate']:.4f} | {g['r2']:.3f} | "
            f"×{g['rate_first_half']:.3f} then ×{g['rate_second_half']:.3f} | "
            f"{'yes' if verdict['steady'] else 'no (' + failed + ')'} |"
        )
    lines += ["", "## Where the growth is stored (final checkpoints)", ""]
    lines += [
        "Least-squares growth per layer of each weight measure over the fit layers. The LayerNorm gain multiplies "
        "what the next layer reads; folded into W_OV and W_in, it is part of the folded norms.",
        "",
        "| run | " + " | ".join(WEIGHTS[k] for k in WEIGHTS) + " |",
        "|---|" + "---:|" * len(WEIGHTS),
    ]
    for r in runs:
        fits = layer_fits(r)
        lines.append(f"| {r.label} | " + " | ".join(f"×{fits[k]:.4f}" for k in WEIGHTS) + " |")
    if len(runs) > 1:
        lines += ["", "![growth by run](runs-growth-rate.png)", "", "![final by layer](runs-final-by-layer.png)"]
    for r in runs:
        lines += ["", f"## {r.label}", ""]
        if r.log.get("command"):
            lines += [f"`{r.log['command']}`" + (f" on {r.log['device']}" if r.log.get("device") else ""), ""]
        if r.repo:
            lines += [
                f"Revisions {', '.join(c.revision for c in r.checkpoints)} of the hub repository {r.repo} (their commits "
                "are in summary.json). Tokens and validation loss come from a training run's own record, which a hub "
                "revision does not carry: –.",
                "",
            ]
        lines += ["| step | tokens | val loss | rate ×/layer | R² | halves | BOS ‖resid_post‖, last layer | mean, last layer |"]
        lines += ["|---:|---:|---:|---:|---:|---|---:|---:|"]
        for row in step_rows(r):
            lines.append(
                f"| {row['step']:,} | {shown(row['tokens'], ',')} | {shown(row['val_loss'], '.3f')} | "
                f"×{row['fit_rate']:.4f} | {row['r2']:.3f} | "
                f"×{row['rate_first_half']:.3f} then ×{row['rate_second_half']:.3f} | {row['bos_norm_last_layer']:.1f} | "
                f"{row['mean_norm_last_layer']:.1f} |"
            )
        lines += [""] + [f"![{name}]({r.label}/{name})" for name in figures[r.label] if name.endswith(".png")]
    return "\n".join(lines) + "\n"


def write_outputs(runs: list[Run], directory: Path) -> None:
    figures = {}
    for r in runs:
        with outdir.writing(directory / r.label) as path:
            path.mkdir()
        figures[r.label] = write_figures(r, directory / r.label)
    if len(runs) > 1:
        write_comparison(runs, directory)
    with outdir.writing(directory / "summary.json") as path:
        path.write_text(json.dumps({"runs": [run_summary(r) for r in runs]}, indent=2) + "\n")
    for name, rows in (
        ("steps.csv", [row for r in runs for row in step_rows(r)]),
        ("layers.csv", [row for r in runs for row in layer_rows(r)]),
    ):
        with outdir.writing(directory / name) as path, open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    with outdir.writing(directory / "report.md") as path:
        path.write_text(report(runs, figures))


# ---------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m analysis.dynamics", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "runs", nargs="*", type=Path, metavar="RUN_DIR", help="folders written by python -m training --checkpoints N"
    )
    parser.add_argument(
        "--model",
        action="append",
        metavar="REPO",
        help="instead of RUN_DIR: a hub repository whose training checkpoints are revisions step<N> "
        "(EleutherAI/pythia-160m); one repository",
    )
    parser.add_argument(
        "--revisions",
        metavar="STEP,…",
        help=f"with --model: the revisions to measure, step0,step512,… (default: about {DEFAULT_REVISIONS} of its "
        "step revisions, log-spaced)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"output folder: new, empty, or a previous report (default: ./{DEFAULT_OUT})",
    )
    parser.add_argument("--prompts-file", type=Path, help="prompts as for analysis.growth (default: its ~60 shipped prompts)")
    parser.add_argument("--device", default="auto", help="torch device: auto (CUDA, then MPS, then CPU), cpu, cuda, mps")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per forward pass")
    return parser.parse_args(argv)


def hub_repo(args) -> str | None:
    """The repository --model names, or None for local runs; what cannot go together is refused here."""
    if args.revisions is not None and not args.model:
        raise outdir.UsageError("--revisions names revisions of the hub repository that --model gives; add --model REPO")
    if not args.model:
        if not args.runs:
            raise outdir.UsageError("give training runs (RUN_DIR…) or a hub repository (--model EleutherAI/pythia-160m)")
        return None
    if args.runs:
        runs = ", ".join(str(r) for r in args.runs)
        raise outdir.UsageError(f"--model {args.model[0]} and RUN_DIR ({runs}): give a hub repository or training runs, not both")
    if len(args.model) > 1:
        raise outdir.UsageError(
            f"--model is given {len(args.model)} times ({', '.join(args.model)}); it takes one repository: run once per model"
        )
    name = args.model[0]
    repo = weights.REPOS.get(name, name)
    if weights.hub.looks_like_path(name) or repo.count("/") != 1 or not all(repo.split("/")):
        raise outdir.UsageError(
            f"--model {name}: not a hub repository id (OWNER/NAME, such as EleutherAI/pythia-160m); "
            "a training run's folder is given as RUN_DIR"
        )
    return repo


def run(args, log) -> Path:
    out = Path(os.path.abspath(args.out))
    repo = hub_repo(args)
    asked = parse_revisions(args.revisions) if args.revisions is not None else None
    outdir.check(out, outdir.DYNAMICS)
    labels = [r.name for r in args.runs]
    if len(set(labels)) != len(labels):
        raise outdir.UsageError(f"runs are labelled by their folder's name, and these repeat: {', '.join(labels)}")
    for directory in args.runs:
        checkpoint_dirs(directory)  # every run is checked before the first is measured
    try:
        device = weights.devices.resolve(args.device)
    except ValueError as error:
        raise outdir.UsageError(f"--device: {error}") from None
    prompts_in = inputs.read_prompts(args.prompts_file or inputs.DEFAULT_PROMPTS)
    if repo is None:
        runs = [read_run(directory, prompts_in, device, args.batch_size, log) for directory in args.runs]
    else:
        revisions = choose_revisions(repo, asked, log)  # every revision is checked before the first is downloaded
        runs = [read_hub_run(repo, revisions, prompts_in, device, args.batch_size, log)]
    folder = outdir.OutputFolder(out, outdir.DYNAMICS)
    with folder as scratch:
        write_outputs(runs, scratch)
        folder.publish()
    for r in runs:
        g = r.final.growth
        log(f"{r.label}: at step {r.final.step:,}, ×{g['fit_rate']:.4f} per layer (R² {g['r2']:.3f})")
    log(f"wrote {out}/report.md, summary.json, steps.csv, layers.csv and {sum(1 for _ in out.rglob('*.png'))} figures")
    return out


def main(argv=None) -> int:
    return outdir.command(lambda args: run(args, Progress()), parse_args(argv), user_errors=(weights.CheckpointError,))


if __name__ == "__main__":
    sys.exit(main())
