"""Reproduce "Residual stream norms grow exponentially over the forward pass" (Heimersheim & Turner, 2023).

    python -m analysis.growth                                   # gpt2, or the bundled model offline
    python -m analysis.growth --model gpt2 --model gpt2-xl --out xl-report
    python -m analysis.growth --prompts-file corpus.jsonl --max-prompts 20000 --truncate   # a corpus slice
    torchrun --nproc-per-node 8 -m analysis.growth --model gpt2-xl --prompts-file corpus.jsonl   # 8 processes

Writes into --out (default ./growth-report): one folder of figures per model (PNG and SVG), the
comparison figures 03-mean-norm-by-model and, for two models or more, 16-weights-by-model, summary.json,
layers.csv and report.md. --out must be new, empty, or a previous report holding only what this command
wrote; anything else (a mount point too: give a folder inside it) is refused untouched. The
report is written elsewhere and swapped into place whole, so a failed or interrupted run leaves --out as
it was (see outdir/__init__.py). Under torchrun, each process runs a share of the forward passes and rank 0
writes the report, with the numbers of one process (analysis/engine/distributed.py).

The study's steps are analysis/study.py's `analyse`; its measures are defined in analysis/measures.py,
weight_measures.py and rates.py; analysis/engine/ makes them fast and can be skipped on a first reading.
"""

import sys

import outdir  # the standard library only: quick to import, so that Ctrl-C from here on is one line

try:
    import argparse
    import os
    from collections.abc import Callable
    from dataclasses import dataclass
    from pathlib import Path

    import torch

    import weights
    from analysis import engine, inputs, rates, report, study
    from analysis.progress import Progress
except KeyboardInterrupt:
    outdir.interrupted_while_starting(__name__)

DEFAULT_OUT = Path("growth-report")


def parse_fit_layers(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        first, last = (int(part) for part in text.split(":"))
    except ValueError:
        raise outdir.UsageError(f"--fit-layers {text!r}: expected FIRST:LAST, two layer numbers such as 5:41") from None
    return first, last


@dataclass
class ModelChoice:
    name: str  # as the user gave it (or chosen by default)
    why: str  # one line for the progress log


def choose_default_model(revision: str | None = None) -> ModelChoice:
    """gpt2 when it is cached or downloadable; otherwise the bundled model, saying why."""
    try:
        directory, source = weights.locate("gpt2", revision)
        return ModelChoice("gpt2", f"gpt2 (revision {source['revision']}, from {directory})")
    except weights.CheckpointError as error:
        reason = str(error).split(". ")[0]
        return ModelChoice(weights.BUNDLED_NAME, f"the bundled model, because {reason}")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m analysis.growth", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        action="append",
        help="model name, hub id or directory; repeat to compare (default: gpt2, or the bundled model offline)",
    )
    parser.add_argument(
        "--revision", help="branch, tag or commit of the hub models (default: main); summary.json records the commit"
    )
    parser.add_argument(
        "--prompts-file",
        type=Path,
        help='one prompt per non-empty line, UTF-8, or .jsonl with a "text" per line (default: the ~60 shipped prompts)',
    )
    parser.add_argument("--max-prompts", type=int, help="use a uniform sample (seed 0) of this many prompts from the file")
    parser.add_argument(
        "--truncate", action="store_true", help="cut prompts longer than the model's context instead of refusing them"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"output folder: new, empty, or a previous report, which is replaced (default: ./{DEFAULT_OUT})",
    )
    parser.add_argument(
        "--fit-layers", help="FIRST:LAST layers of the growth fit (default: the study's 5:41 of 48, scaled to depth)"
    )
    parser.add_argument("--device", default="auto", help="torch device: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps")
    parser.add_argument("--dtype", choices=list(weights.DTYPES), default="float32")
    parser.add_argument(
        "--allow-nonfinite", action="store_true", help="analyse weights holding NaN or Inf, which are refused otherwise"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=study.BATCH_SIZE,
        help=f"at most this many prompts per forward pass (default {study.BATCH_SIZE}), within --batch-positions",
    )
    parser.add_argument(
        "--batch-positions",
        type=int,
        help=f"at most this many positions per forward pass, padding included (default: {engine.batching.CPU_POSITIONS} "
        "on the CPU; on a GPU, as many as its free memory holds, see analysis/engine/batching.py)",
    )
    return parser.parse_args(argv)


def check_arguments(args) -> tuple[int, int] | None:
    """What can be refused from the arguments alone; returns the fit layers. Run before anything is loaded and,
    under torchrun, on every rank before the process group forms: each rank then ends with the same one line
    and exit status 2, and none is left waiting for another."""
    if args.batch_size < 1:
        raise outdir.UsageError(f"--batch-size must be at least 1, found {args.batch_size}")
    if args.batch_positions is not None and args.batch_positions < 1:
        raise outdir.UsageError(f"--batch-positions must be at least 1, found {args.batch_positions}")
    if args.max_prompts is not None and args.max_prompts < 1:
        raise outdir.UsageError(f"--max-prompts must be at least 1, found {args.max_prompts}")
    if args.prompts_file is not None:
        inputs.check_readable(args.prompts_file)
    if args.model:
        check_report_names(args.model)
    return parse_fit_layers(args.fit_layers)


def run(args, log: Progress) -> Path:
    fit_layers = check_arguments(args)
    out = Path(os.path.abspath(args.out))  # not resolve(): a link given as --out is refused, not followed
    team = engine.Team.from_environment()  # under torchrun, this process's rank; None for one process
    outdir.check(out)  # before anything is downloaded or loaded; under torchrun, by every rank before joining
    try:
        device = weights.devices.resolve(team.device(args.device) if team else args.device)
    except ValueError as error:
        raise outdir.UsageError(f"--device: {error}") from None
    if team is None:
        return run_study(args, out, fit_layers, device, log)
    team.join(device)
    if team.leads:
        outdir.check(out)  # only rank 0 touches --out: again, once joined, so that the others see it go if it refuses
        log(f"torchrun: {team.size} processes over {team.backend}; this log is rank 0's")
    else:
        log = Progress(open(os.devnull, "w"))  # one log, rank 0's, which says what every rank ran
    run_study(args, out, fit_layers, device, log, team)
    team.leave()  # only after success: a failed rank ends at once (engine.distributed.end_failed_rank)
    return out


def check_report_names(names: list[str]) -> None:
    """Each model's figures go into a folder of the report named by study.slug: two models with one name
    (`--model a/final --model b/final`, or one model named twice) are refused here, not after the study."""
    seen = {}
    for name in names:
        slug = study.slug(name)
        if slug in seen:
            if seen[slug] == name:
                raise outdir.UsageError(f"--model {name} is given twice; name each model once")
            raise outdir.UsageError(
                f"--model {seen[slug]} and --model {name} would share {slug!r}, the report's folder of their figures; "
                "give folders with different names (a copy or a link will do)"
            )
        seen[slug] = name


def run_study(args, out: Path, fit_layers, device: torch.device, log: Progress, team: engine.Team | None = None) -> Path:
    """The study's steps: inputs, each model analysed, the report written (under torchrun, by rank 0)."""
    prompts_in = inputs.read_prompts(args.prompts_file or inputs.DEFAULT_PROMPTS, args.max_prompts)
    if args.model:
        choices = [ModelChoice(name, name) for name in args.model]
        if args.revision:
            for name in args.model:
                if not weights.is_hub_name(name):
                    if name == weights.BUNDLED_NAME:
                        what = "the bundled model"
                    else:
                        what = "a local directory" if Path(name).is_dir() else "a path, not a hub id (and no such directory)"
                    raise outdir.UsageError(f"--revision {args.revision} applies to hub models; {name} is {what}")
    else:
        choices = [choose_default_model(args.revision)]
    for choice in choices:
        log(f"model: {choice.why}")
    log(f"device: {device}" + (" (auto: the first of CUDA, MPS, CPU that this machine has)" if args.device == "auto" else ""))
    torch.manual_seed(0)

    plans = []
    for choice in choices:
        directory, source = weights.locate(choice.name, args.revision)  # downloads, if needed, before any check
        cfg = weights.read_config(directory)
        # The tokenizer (21 MB of BPE tables) is dropped at once: loading the model reads its own.
        prompts, truncated = inputs.tokenize(prompts_in, weights.read_tokenizer(directory), cfg, choice.name, args.truncate)
        fit = study.check_fit_layers(choice.name, cfg, fit_layers)
        plans.append(study.Plan(choice.name, directory, source, cfg, prompts, truncated, fit, args.allow_nonfinite))
    first = plans[0]
    what_ran = report.Inputs(prompts_in, sum(map(len, first.prompts)), first.truncated, first.cfg.n_ctx)
    log(what_ran.sentence())
    results = [
        study.analyse(plan, weights.DTYPES[args.dtype], args.batch_size, device, log, team, args.batch_positions)
        for plan in plans
    ]
    if team is not None and not team.leads:
        team.all_done()  # the part of this rank is done; rank 0 puts the report in place once every rank's is
        return out
    for r in results:
        if r.appendix["violations"] and not report.nonfinite_layers(r):  # inf and NaN compare as no bound holds
            print(
                f"\n!!! BUG: {r.name}: {r.appendix['violations']} residual vectors violate the Appendix 1 triangle "
                f"inequality (largest excess {r.appendix['worst_excess']:.3g}). The measurements are wrong; "
                "please report this.\n",
                file=sys.stderr,
                flush=True,
            )
    folder = outdir.OutputFolder(out, outdir.REPORT)
    with folder as scratch:
        report.write_outputs(results, scratch, what_ran, log)
        if team is not None:
            team.all_done()  # every rank did its part: only now may --out change
        folder.publish()
    for r in results:
        log(rates.growth_sentence(r.slug, r.rates, r.cfg.n_layers))
    log(f"wrote {out}/report.md, summary.json, layers.csv and {sum(1 for _ in out.rglob('*.png'))} figures")
    return out


def command(run: Callable, args) -> int:
    """Run a report command, run(args, log), with `outdir.command`'s one-line errors and exit statuses."""
    return outdir.command(
        lambda args: run(args, Progress()), args, user_errors=(weights.CheckpointError,), failures=(engine.RankFailed,)
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    status = command(run, args)
    engine.distributed.end_failed_rank(status)  # under torchrun
    return status


if __name__ == "__main__":
    try:
        status = main()
    except KeyboardInterrupt:  # before main's handlers are in place (they make SIGINT `outdir.Interrupted`)
        outdir.interrupted_while_starting(__name__)
    sys.exit(status)
