"""The forward pass of minigpt/model.py at a git revision against the working tree and HF eager, timed in one run.

    python -m benchmarks.ab_forward a5703c2          # gpt2 shape, batch 8 × 128, median of 7

All three get the same random weights and the same tokens and take turns, and the ratios are printed for the
three paths the main benchmark times: (a) logits, (b) every hook captured, (c) residual norms only. HF eager
(GPT2LMHeadModel, attn_implementation="eager") gives its logits for (a) and its logits with every hidden state
for (b) and (c), as in benchmarks/forward.py. Before a5703c2's successor, weights.load kept W_Q, W_K, W_V with the
heads side by side in memory (as c_attn holds them), so the 'before' model is given its weights that way too.
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
from weights.save import official_state_dict


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


def side_by_side(model) -> None:
    """W_Q, W_K, W_V [n_heads, d_model, d_head] as views of [d_model, n_heads·d_head] memory, as the old loader kept them."""
    for block in model.blocks:
        for name in ("W_Q", "W_K", "W_V"):
            W = getattr(block.attn, name).detach()
            setattr(block.attn, name, torch.nn.Parameter(W.permute(1, 0, 2).contiguous().permute(1, 0, 2), requires_grad=False))


def hf_eager(model, cfg: Config):
    """Hugging Face's GPT2LMHeadModel (eager attention) holding the model's weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        n_layer=cfg.n_layers, n_embd=cfg.d_model, n_head=cfg.n_heads, vocab_size=cfg.d_vocab, n_positions=cfg.n_ctx
    )
    hf = GPT2LMHeadModel(config)
    hf.transformer.load_state_dict(official_state_dict(model), strict=False)  # the causal-mask buffers stay HF's own
    hf.set_attn_implementation("eager")
    return hf.eval()


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
    for module in new.modules():  # LayerNorm gains near 1, as trained
        if isinstance(module, minigpt.model.LayerNorm):
            torch.nn.init.normal_(module.w, mean=1.0, std=0.02)
    old = model_module_at(args.revision).GPT2(cfg)
    old.load_state_dict(new.state_dict())
    side_by_side(old)
    hf = hf_eager(new, cfg)
    tokens = torch.randint(0, cfg.d_vocab, (8, 128), generator=torch.Generator().manual_seed(0))
    versions = {"before": old.eval(), "after": new.eval()}
    paths = {
        "(a) logits": (lambda model: model(tokens), lambda: hf(tokens)),
        "(b) every hook captured": (
            lambda model: instrument.run_with_cache(model, tokens),
            lambda: hf(tokens, output_hidden_states=True),
        ),
        "(c) residual norms only": (
            lambda model: engine.per_position_norms(model, tokens),
            lambda: hf(tokens, output_hidden_states=True),
        ),
    }
    times = {(path, label): [] for path in paths for label in (*versions, "HF eager")}
    with torch.no_grad():
        logits = {label: model(tokens) for label, model in versions.items()} | {"HF eager": hf(tokens).logits}
        for label, found in logits.items():
            print(f"{label:9s} logits against 'after': max abs diff {(found - logits['after']).abs().max():.2e}")
        for run, hf_run in paths.values():  # warm-up
            hf_run()
            for model in versions.values():
                run(model)
        for repeat in range(args.repeats):
            for path, (run, hf_run) in paths.items():
                # The three take turns in an order that rotates, so the machine's drift (large here) hits all alike.
                order = ("before", "after", "HF eager")[repeat % 3 :] + ("before", "after", "HF eager")[: repeat % 3]
                for label in order:
                    start = time.perf_counter()
                    hf_run() if label == "HF eager" else run(versions[label])
                    times[(path, label)].append(time.perf_counter() - start)
    print(f"model.py at {args.revision} (before) against the working tree (after) and HF eager, in one run")
    print(f"gpt2 shape, batch 8 × 128; {args.repeats} rounds, medians; × HF eager = HF eager's time / this one's")
    print("| path | before ms | after ms | HF eager ms | after/before | before × HF eager | after × HF eager |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for path in paths:
        before, after, hf_times = (times[(path, label)] for label in ("before", "after", "HF eager"))
        ratio = statistics.median(a / b for a, b in zip(after, before))  # median of the ratios of one round's passes
        vs_hf = {label: statistics.median(h / t for h, t in zip(hf_times, times[(path, label)])) for label in versions}
        print(
            f"| {path} | {statistics.median(before) * 1e3:.1f} | {statistics.median(after) * 1e3:.1f} | "
            f"{statistics.median(hf_times) * 1e3:.1f} | {ratio:.3f} | {vs_hf['before']:.2f} | {vs_hf['after']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
