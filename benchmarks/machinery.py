"""What each piece of the study's machinery buys, in one run: the study with it and without it, alternating.

    python -m benchmarks.machinery                       # 2 runs with and 2 without each piece

Each row runs `python -m analysis.growth` in a fresh process, once as the code is and once with one piece
replaced by the plain thing it stands in for, taking turns (--repeats pairs): the ratio of the study's wall
time and of its peak RSS (the child's ru_maxrss; this process imports no torch, so its own high-water mark
cannot leak into the child's) says what the piece buys. A piece stays if it buys at least 10% of either.
Two pieces measured so at gpt2-medium shape bought less and were deleted (BENCHMARKS.md, "The machinery"): glibc's
malloc thresholds and the figures drawn in a forked process.

- the hub's TCP probe (weights.hub._hub_unreachable): the default study (`python -m analysis.growth`, no
  --model) with the hub unreachable (HF_ENDPOINT at a closed port of 127.0.0.1) and nothing cached, which
  falls back to the bundled model; without the probe, huggingface_hub is asked and retries before it gives up.
"""

import argparse
import os
import socket
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.ab_study import ROOT, run_child

# How each piece is taken out, in the child, before analysis.growth runs: nothing in the code has a switch for it.
WITHOUT = {
    "hub TCP probe": "import weights.hub; weights.hub._hub_unreachable = lambda: False",
}
RUN_GROWTH = "import sys; from analysis import growth; sys.exit(growth.main(sys.argv[1:]))"


def closed_port() -> int:
    """A port of 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(name: str, args: list[str], env: dict, repeats: int, scratch: Path) -> dict:
    """The study as it is and without the piece, alternating; medians of each and of the pairs' ratios."""
    runs = {"with": [], "without": []}
    for i in range(repeats):
        for label in ("with", "without") if i % 2 == 0 else ("without", "with"):
            code = RUN_GROWTH if label == "with" else WITHOUT[name] + "; " + RUN_GROWTH
            out = scratch / f"report-{len(runs['with']) + len(runs['without'])}"
            runs[label].append(run_child([sys.executable, "-c", code, *args, "--out", str(out)], ROOT, env))
            print(f"  {name}, {label}: {runs[label][-1][0]:.1f} s, {runs[label][-1][1] / 2**30:.2f} GiB", flush=True)
    pairs = list(zip(runs["with"], runs["without"]))
    return {
        "with_s": statistics.median(s for s, _ in runs["with"]),
        "without_s": statistics.median(s for s, _ in runs["without"]),
        "time_ratio": statistics.median(w[0] / wo[0] for w, wo in pairs),
        "rss_ratio": statistics.median(w[1] / wo[1] for w, wo in pairs),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="runs with and without each piece (default 2)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        offline = os.environ | {"HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}", "HF_HOME": str(scratch / "hf-home")}
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", *(p for p in os.environ if p.lower().endswith("_proxy"))):
            offline.pop(name, None)
        what = "default study, hub unreachable, nothing cached"
        rows = [("hub TCP probe", what, measure("hub TCP probe", [], offline, args.repeats, scratch))]
    print()
    print(f"{args.repeats} run(s) with and without each piece, alternating; medians; ratio = with / without (below 1: it buys)")
    print("| piece | study | with | without | time ratio | peak RSS ratio |")
    print("|---|---|---:|---:|---:|---:|")
    for name, what, m in rows:
        print(
            f"| {name} | {what} | {m['with_s']:.1f} s | {m['without_s']:.1f} s | {m['time_ratio']:.2f} | {m['rss_ratio']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
