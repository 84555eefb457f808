"""The study at a git revision against the working tree: its time, its peak memory and its numbers, in one run.

    python -m benchmarks.ab_study a5703c2                 # a random gpt2-medium-shaped checkpoint, 2 runs each
    python -m benchmarks.ab_study a5703c2 --checkpoint DIR
    python -m benchmarks.ab_study a5703c2 --quick         # a 2-layer toy shape, one run each: checks the script

The revision is checked out into a temporary `git worktree`; `python -m analysis.growth --model CHECKPOINT` then
runs from it ("before") and from the working tree ("after"), each run in a fresh process, taking turns so that
the machine's drift falls on both. Printed: the study's wall time and peak RSS (the child's ru_maxrss; this
process imports no torch and builds the checkpoint in a child of its own, so its high-water mark, which Linux
carries into a child, stays far below the study's), as medians and as after / before ratios; and the largest
relative difference between the two summary.json files, number by number (acceptance: 1e-6; exit 1 beyond it).
Text that differs (the prompts file's path is each tree's own) and places only one side has are listed, not judged.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-6
SHAPES = {"gpt2-medium": (24, 1024, 16), "toy": (2, 64, 4)}


def build_checkpoint(directory: Path, shape: tuple[int, int, int]) -> Path:
    """A random checkpoint in the official layout (benchmarks/checkpoints.py), written by a child process."""
    if not (directory / "model.safetensors").exists():
        code = (
            "import sys; from benchmarks import checkpoints; checkpoints.write_checkpoint(sys.argv[1], *map(int, sys.argv[2:]))"
        )
        subprocess.run([sys.executable, "-c", code, str(directory), *map(str, shape)], cwd=ROOT, check=True)
    return directory


def run_child(command: list[str], cwd: Path, env: dict | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS in bytes (ru_maxrss) of one child process; its stderr's tail if it fails."""
    with tempfile.TemporaryFile() as errors:
        start = time.perf_counter()
        child = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            errors.seek(0)
            tail = errors.read().decode(errors="replace")[-3000:]
            raise SystemExit(f"failed (exit {child.returncode}) in {cwd}: {' '.join(command)}\n{tail}")
    return seconds, usage.ru_maxrss * 1024


def leaves(value, path: str = ""):
    """(path, leaf) for every number, string, bool or null in a JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, f"{path}/{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from leaves(item, f"{path}[{i}]")
    else:
        yield path, value


def compare(before: dict, after: dict) -> dict:
    """The largest relative difference between the numbers at the same place, where it is; the places only one
    side has; the text (or type) that differs."""
    a, b = dict(leaves(before)), dict(leaves(after))
    worst, where, texts = 0.0, None, []
    for path in a.keys() & b.keys():
        x, y = a[path], b[path]
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (x, y))
        if not numbers:
            if x != y:
                texts.append(f"{path}: {x!r} / {y!r}")
            continue
        if x == y:
            continue
        difference = math.inf if not (math.isfinite(x) and math.isfinite(y)) else abs(x - y) / max(abs(x), abs(y))
        if difference > worst:
            worst, where = difference, path
    return {
        "worst": worst,
        "where": where,
        "numbers": sum(isinstance(v, int | float) and not isinstance(v, bool) for v in a.values()),
        "only_before": sorted(a.keys() - b.keys()),
        "only_after": sorted(b.keys() - a.keys()),
        "texts": sorted(texts),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revision", help="git revision of the 'before' study")
    parser.add_argument("--checkpoint", type=Path, help="a checkpoint folder to run the study on (default: built)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path.home() / ".cache" / "minigpt-bench",
        help="where the built checkpoint is kept (default: python -m benchmarks' own, so its gpt2-medium checkpoint is reused)",
    )
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side (default 2)")
    parser.add_argument("--quick", action="store_true", help="a 2-layer toy shape, one run each: checks the script")
    args = parser.parse_args(argv)
    shape_name = "toy" if args.quick else "gpt2-medium"
    repeats = 1 if args.quick else args.repeats
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{args.revision}^{{commit}}"], cwd=ROOT, capture_output=True, text=True
    )
    if commit.returncode != 0:
        print(f"error: {args.revision}: not a git revision of {ROOT}", file=sys.stderr)
        return 2
    shape = SHAPES[shape_name]
    checkpoint = (args.checkpoint or build_checkpoint(args.workdir / f"random-{shape[0]}x{shape[1]}", shape)).resolve()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        before_tree = scratch / "before"
        subprocess.run(
            ["git", "worktree", "add", "-q", "--detach", str(before_tree), commit.stdout.strip()], cwd=ROOT, check=True
        )
        try:
            trees = {"before": before_tree, "after": ROOT}
            runs = {"before": [], "after": []}
            for i in range(repeats):
                for side in ("before", "after") if i % 2 == 0 else ("after", "before"):
                    out = scratch / f"{side}-{len(runs[side])}"
                    command = [sys.executable, "-m", "analysis.growth", "--model", str(checkpoint), "--out", str(out)]
                    runs[side].append(run_child(command, trees[side]))
                    seconds, rss = runs[side][-1]
                    print(f"  {side} run {len(runs[side])}: {seconds:.1f} s, peak RSS {rss / 2**30:.2f} GiB", flush=True)
            summaries = {side: json.loads((scratch / f"{side}-0" / "summary.json").read_text()) for side in runs}
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before_tree)], cwd=ROOT, check=False)
    found = compare(summaries["before"], summaries["after"])
    median = {side: (statistics.median(s for s, _ in r), statistics.median(m for _, m in r)) for side, r in runs.items()}
    print(
        f"\nthe study on {checkpoint} ({shape_name} shape unless --checkpoint says otherwise), {repeats} run(s) each, alternating"
    )
    print(f"before: {args.revision} ({commit.stdout.strip()[:12]}); after: the working tree of {ROOT}")
    print("| | before | after | after / before |\n|---|---:|---:|---:|")
    (s0, m0), (s1, m1) = median["before"], median["after"]
    print(f"| wall time (median) | {s0:.1f} s | {s1:.1f} s | {s1 / s0:.3f} |")
    print(f"| peak RSS (median) | {m0 / 2**30:.3f} GiB | {m1 / 2**30:.3f} GiB | {m1 / m0:.3f} |")
    verdict = "within" if found["worst"] <= TOLERANCE else "OVER"
    print(f"\nsummary.json: {found['numbers']} numbers; largest relative difference {found['worst']:.3g}", end="")
    print(f" at {found['where']}" if found["where"] else "", end="")
    print(f": {verdict} {TOLERANCE:g}")
    for label, paths in (("only before", found["only_before"]), ("only after", found["only_after"])):
        if paths:
            print(f"{label}: {len(paths)} leaves, such as {', '.join(paths[:5])}")
    for line in found["texts"][:10]:
        print(f"text differs: {line}")
    return 0 if found["worst"] <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
