"""Peak memory of `weights.load` from each weights format, the sharded ones above all.

    python -m benchmarks.formats [--shape gpt2-xl] [--format NAME ...] [--workdir DIR] [--shard-mb 200] [--repeats 2]

Writes the gpt2-medium-shaped (or --shape) random checkpoint once in each format (model.safetensors; safetensors
shards with their index; pytorch_model.bin; .bin shards with their index), then loads each with
`weights.load(processed=True)` in a fresh process (`benchmarks.probe`), the files already in the page
cache. Peak RSS is the process's high-water mark, imports included; "load only" subtracts the resident
memory after the imports, so that it compares the loader's own peak with the weights it reads.
"""

import argparse
import statistics
import sys
from pathlib import Path

from benchmarks.__main__ import gib, probe, warm_page_cache
from benchmarks.checkpoints import write_checkpoint

SHAPES = {"gpt2-medium": (24, 1024, 16), "gpt2-xl": (48, 1600, 25), "toy": (2, 64, 4)}  # 1.4 GiB, 5.9 GiB, a smoke test
FORMATS = {
    "model.safetensors": dict(weights_format="safetensors"),
    "model.safetensors shards + index": dict(weights_format="safetensors", sharded=True),
    "pytorch_model.bin": dict(weights_format="bin"),
    "pytorch_model.bin shards + index": dict(weights_format="bin", sharded=True),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "minigpt-bench" / "formats")
    parser.add_argument("--shard-mb", type=int, default=200, help="the largest shard, in MB (default 200)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--shape", choices=SHAPES, default="gpt2-medium")
    parser.add_argument("--format", action="append", choices=FORMATS, help="measure only this format (repeatable)")
    args = parser.parse_args(argv)
    rows = []
    for label in args.format or FORMATS:
        kwargs = dict(FORMATS[label])
        sharded = kwargs.pop("sharded", False)
        directory = args.workdir / args.shape / label.replace(" ", "-").replace("+", "and")
        if not (directory / "config.json").exists():
            print(f"writing {label} to {directory}", flush=True)
            write_checkpoint(
                directory, *SHAPES[args.shape], seed=0, max_shard_bytes=args.shard_mb * 10**6 if sharded else None, **kwargs
            )
        files = sorted(p for p in directory.iterdir() if p.suffix in (".safetensors", ".bin"))
        runs = []
        for _ in range(args.repeats):
            for path in files:
                warm_page_cache(path)
            runs.append(probe("minigpt", directory))
        peak = statistics.median(r["peak_rss"] for r in runs)
        imports = statistics.median(r["import_rss"] for r in runs)
        size = runs[0]["checkpoint_bytes"]
        seconds = statistics.median(r["seconds"] for r in runs)
        rows.append((label, len(files), size, seconds, peak, imports))
        print(
            f"{label:28s} {len(files):3d} file(s) {gib(size):>9s}  {seconds:5.1f} s  peak RSS {gib(peak)} "
            f"({peak / size:.2f}× the files; load only {(peak - imports) / size:.2f}×)",
            flush=True,
        )
    print(f"\n{args.shape} shape, shards of at most {args.shard_mb} MB, median of {args.repeats} run(s)\n")
    print("| format | files | size | seconds | peak RSS | × files | load only (peak − imports) × files |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, n, size, seconds, peak, imports in rows:
        print(
            f"| {label} | {n} | {gib(size)} | {seconds:.1f} | {gib(peak)} | {peak / size:.2f} | {(peak - imports) / size:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
