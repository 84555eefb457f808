"""The forward pass of minigpt/model.py at a git revision against the working tree, timed alternately in one run.

    python -m benchmarks.ab_forward efde27b          # gpt2 shape, batch 8 × 128, median of 7

For changes to model.py that should not change its speed (comments, names, lines split): both
versions get the same random weights and the same tokens, take turns, and the ratio is printed for the
three paths the main benchmark times: (a) logits, (b) every hook captured, (c) residual norms only.
"""

import argparse
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

import instrument
import minigpt.model
from analysis import engine
from minigpt import Config


def model_module_at(revision: str) -> types.ModuleType:
    """minigpt/model.py as it was at revision, as a module whose hook points `instrument` recognises."""
    root = Path(__file__).parent.parent
    source = subprocess.run(
        ["git", "show", f"{revision}:minigpt/model.py"], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    source = source.replace("from .config import Config", "from minigpt.config import Config")
    source = source.replace(
        "class HookPoint(nn.Module):", "from minigpt.model import HookPoint\n\n\nclass _OldHookPoint(nn.Module):"
    )
    module = types.ModuleType(f"model_at_{revision}")
    exec(compile(source, f"{revision}:minigpt/model.py", "exec"), module.__dict__)
    return module


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revision", help="git revision of the 'before' model.py")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    cfg = Config.sized(12, 768, 12)
    torch.manual_seed(0)
    new = minigpt.model.GPT2(cfg)
    for param in new.parameters():
        torch.nn.init.normal_(param, std=0.02)
    old = model_module_at(args.revision).GPT2(cfg)
    old.load_state_dict(new.state_dict())
    tokens = torch.randint(0, cfg.d_vocab, (8, 128), generator=torch.Generator().manual_seed(0))
    versions = {"before": old.eval(), "after": new.eval()}
    paths = {
        "(a) logits": lambda model: model(tokens),
        "(b) every hook captured": lambda model: instrument.run_with_cache(model, tokens),
        "(c) residual norms only": lambda model: engine.per_position_norms(model, tokens),
    }
    times = {(path, label): [] for path in paths for label in versions}
    with torch.no_grad():
        torch.testing.assert_close(old(tokens), new(tokens), rtol=0, atol=0)  # the same arithmetic, bit for bit
        for run in paths.values():  # warm-up
            for model in versions.values():
                run(model)
        for repeat in range(args.repeats):
            for path, run in paths.items():
                # Each 'after' pass is paired with an adjacent 'before' pass, and which goes first alternates,
                # so the machine's drift (large here) cancels in the ratio of a pair.
                for label in ("before", "after") if repeat % 2 == 0 else ("after", "before"):
                    start = time.perf_counter()
                    run(versions[label])
                    times[(path, label)].append(time.perf_counter() - start)
    print(f"model.py at {args.revision} (before) against the working tree (after)")
    print(f"gpt2 shape, batch 8 × 128; {args.repeats} pairs of adjacent passes, medians")
    for path in paths:
        before, after = times[(path, "before")], times[(path, "after")]
        ratio = statistics.median(a / b for a, b in zip(after, before))
        print(
            f"{path:26s} before {statistics.median(before) * 1e3:7.1f} ms  after {statistics.median(after) * 1e3:7.1f} ms  "
            f"after/before, median of pairs {ratio:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
