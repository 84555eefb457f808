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

This module is the command line: the measuring is analysis/over_training.py, the step revisions
weights/revisions.py, the report analysis/dynamics_report.py.
"""

import argparse
import os
import sys
from pathlib import Path

import outdir
import weights
import weights.revisions
from analysis import dynamics_report, inputs, over_training
from analysis.progress import Progress

DEFAULT_OUT = Path("dynamics-report")


def parse_revisions(text: str) -> dict[int, str]:
    """--revisions step0,step512,…: {step: name}, in step order. The step is read from the name, so every name
    must be step<N>; none may repeat."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise outdir.UsageError("--revisions: no revision named; give them as step0,step512,step143000")
    steps = {}
    for name in names:
        match = weights.revisions.STEP_REVISION.fullmatch(name)
        if match is None:
            raise outdir.UsageError(
                f"--revisions: {name!r} is not named step<N>: the training step of each checkpoint is read from "
                "its revision's name (as Pythia's branches step0 … step143000 are named)"
            )
        if int(match[1]) in steps:
            raise outdir.UsageError(f"--revisions: {name} is given twice")
        steps[int(match[1])] = name
    return dict(sorted(steps.items()))


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
        help="with --model: the revisions to measure, step0,step512,… "
        f"(default: about {weights.revisions.DEFAULT_REVISIONS} of its step revisions, log-spaced)",
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
    found = [over_training.find_run(directory) for directory in args.runs]  # every run is read before the first is measured
    try:
        device = weights.devices.resolve(args.device)
    except ValueError as error:
        raise outdir.UsageError(f"--device: {error}") from None
    prompts_in = inputs.read_prompts(args.prompts_file or inputs.DEFAULT_PROMPTS)
    if repo is None:
        runs = [over_training.read_run(run, prompts_in, device, args.batch_size, log) for run in found]
    else:
        revisions = weights.revisions.choose(repo, asked, log)  # every revision is checked before the first is downloaded
        runs = [over_training.read_hub_run(repo, revisions, prompts_in, device, args.batch_size, log)]
    folder = outdir.OutputFolder(out, outdir.DYNAMICS)
    with folder as scratch:
        dynamics_report.write_outputs(runs, scratch)
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
