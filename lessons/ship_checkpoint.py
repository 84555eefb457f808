"""Choose and ship the checkpoint that lesson 3 compares with the bundled model.

    python -m lessons.ship_checkpoint RUN                     # the steady-growth bar at every checkpoint of a run
    python -m lessons.ship_checkpoint RUN --step 111 --name small6-step111 --command "python -m training …"

The second form writes lessons/checkpoints/NAME/ in bfloat16 (config.json, model.safetensors,
vocab.json, merges.txt: what `weights.load(path)` reads) with PROVENANCE.md and provenance.json: the
command, the commit, the step, the validation loss, and the growth measured on the float32 checkpoint
and again on the bfloat16 copy, which must agree. The measure is lesson 3's: the mean ‖resid_post‖ over
the study's prompts (BOS and padding excluded) of the processed model, and its least-squares rate over
`default_fit_layers`, judged by `steady_growth`.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

import lessons
import weights
from analysis.measures import norms_per_prompt
from analysis.rates import default_fit_layers, growth_rate, steady_growth

CHECKPOINTS = lessons.HERE / "checkpoints"
LIMIT_BYTES = 25_000_000


def measure(path: Path) -> dict:
    """Lesson 3's growth measures of the checkpoint at path: rates, R², halves and the steady bar."""
    model, tokenizer = weights.load(path)
    prompts = [[tokenizer.eot, *tokenizer.encode(text)][: model.cfg.n_ctx] for text in lessons.prompts()]
    norms = norms_per_prompt(model, prompts, tokenizer.eot)
    mean = np.concatenate([n[:, 1:] for n in norms], axis=1).mean(axis=1)
    first, last = default_fit_layers(model.cfg.n_layers)
    g = growth_rate(mean, first, last)
    return {
        "mean_resid_post": [round(float(v), 4) for v in mean],
        **{k: g[k] for k in ("first_layer", "last_layer", "rate", "fit_rate", "r2", "rate_first_half", "rate_second_half")},
        "steady": steady_growth(g, model.cfg.n_layers),
    }


def table(run: Path) -> None:
    for step_dir in sorted((run / "checkpoints").glob("step-*")):
        info = json.loads((step_dir / "training_step.json").read_text())
        m = measure(step_dir)
        print(
            f"step {info['step']:5d}  val {info['val_loss']:.3f}  ×{m['fit_rate']:.4f}  R² {m['r2']:.3f}  "
            f"halves ×{m['rate_first_half']:.4f} then ×{m['rate_second_half']:.4f}  steady {m['steady']['steady']} "
            f"{ {k: v for k, v in m['steady'].items() if k != 'steady'} }",
            flush=True,
        )


def ship(run: Path, step: int, name: str, command: str, commit: str) -> Path:
    source = run / "checkpoints" / f"step-{step:06d}"
    info = json.loads((source / "training_step.json").read_text())
    model, _ = weights.load(source, processed=False)
    target = CHECKPOINTS / name
    weights.save(model, target, vocab_json=source / "vocab.json", merges_txt=source / "merges.txt", dtype=torch.bfloat16)
    size = sum(f.stat().st_size for f in target.iterdir())
    if size > LIMIT_BYTES:
        raise SystemExit(f"{target} is {size / 1e6:.1f} MB, over the {LIMIT_BYTES / 1e6:.0f} MB limit")
    float32, bfloat16 = measure(source), measure(target)
    provenance = {
        "command": command,
        "commit": commit,
        "run": str(run),
        "step": info["step"],
        "tokens": info["tokens"],
        "val_loss": info["val_loss"],
        "train_loss": info["train_loss"],
        "stored": "bfloat16 (weights.save(..., dtype=torch.bfloat16)); loads as float32",
        "bytes": size,
        "growth_float32": float32,
        "growth_bfloat16": bfloat16,
    }
    (target / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    (target / "PROVENANCE.md").write_text(provenance_text(name, provenance))
    print(provenance_text(name, provenance))
    return target


def provenance_text(name: str, p: dict) -> str:
    def row(label: str, g: dict) -> str:
        return (
            f"| {label} | ×{g['fit_rate']:.4f} | ×{g['rate']:.4f} | {g['r2']:.3f} | ×{g['rate_first_half']:.4f} then "
            f"×{g['rate_second_half']:.4f} | {g['steady']['steady']} |"
        )

    g = p["growth_float32"]
    return f"""# {name}

A checkpoint of minigpt's own training loop, shipped so that lesson 3 can show steady exponential growth of
the residual norm offline, beside the bundled model whose growth has faded by the end of training.

- command: `{p["command"]}`
- commit of the training code: `{p["commit"]}`
- step {p["step"]} ({p["tokens"]:,} tokens seen); validation loss {p["val_loss"]:.3f}, training loss {p["train_loss"]:.3f}
- stored in bfloat16 ({p["bytes"] / 1e6:.1f} MB with the tokenizer files); `weights.load(path)` reads it as float32
- written by `python -m lessons.ship_checkpoint` (lessons/ship_checkpoint.py), which measured it as lesson 3 does:
  the processed model's mean ‖resid_post‖ over the study's 61 prompts, BOS and padding excluded, fitted over
  layers {g["first_layer"]}–{g["last_layer"]}

| weights | least squares | end points | R² | halves | steady |
|---|---:|---:|---:|---|---|
{row("float32 (as trained)", p["growth_float32"])}
{row("bfloat16 (as shipped)", p["growth_bfloat16"])}

vocab.json and merges.txt are GPT-2's byte-level BPE files, as in weights/bundled (see its README for their
origin and licence).
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lessons.ship_checkpoint", description=__doc__)
    parser.add_argument("run", type=Path, help="a training run's folder (with checkpoints/step-NNNNNN/)")
    parser.add_argument("--step", type=int, help="ship this step's checkpoint")
    parser.add_argument("--name", help="the shipped folder's name under lessons/checkpoints/")
    parser.add_argument("--command", help="the training command, for the provenance")
    parser.add_argument("--commit", help="the commit of the training code that ran it, for the provenance")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    if args.step is None:
        table(args.run)
    else:
        ship(args.run, args.step, args.name, args.command, args.commit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
