"""The bundled model's training and validation loss curves, from its training_log.json.

python -m training.plot                      # writes docs/bundled-training-loss.png
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from training.train import BUNDLED


def loss_curves(log: dict):
    """Training loss (a moving average over 25 steps, and each step faintly), validation loss, unigram baseline."""
    fig, ax = plt.subplots(figsize=(9, 4.8), layout="constrained")
    tokens_per_step = log["train"]["batch_size"] * log["train"]["seq_len"]
    steps = np.array(log["step"]) + 1
    train = np.array(log["train_loss"])
    window = 25
    smooth = np.convolve(train, np.ones(window) / window, mode="valid")
    ax.plot(steps * tokens_per_step / 1e6, train, color="tab:blue", alpha=0.2, linewidth=0.8)
    ax.plot(steps[window - 1 :] * tokens_per_step / 1e6, smooth, color="tab:blue", label=f"training loss ({window}-step mean)")
    val_steps = np.array(log["val_step"]) + 1
    ax.plot(val_steps * tokens_per_step / 1e6, log["val_loss"], "o-", color="tab:orange", markersize=4, label="validation loss")
    ax.axhline(
        log["unigram_val_loss"],
        color="grey",
        linestyle="--",
        label=f"unigram baseline on validation ({log['unigram_val_loss']:.2f})",
    )
    ax.set(
        xlabel="training tokens (millions)",
        ylabel="cross-entropy (nats per token)",
        ylim=(min(smooth.min(), min(log["val_loss"])) - 0.3, 8),
    )
    ax.grid(True, alpha=0.3)
    m = log["model"]
    fig.suptitle(
        f"Bundled model ({m['n_layers']} layers, d_model {m['d_model']}): loss during training, "
        f"{log['seconds'] / 60:.0f} min on {log['threads']} CPU threads"
    )
    fig.legend(loc="outside right center", fontsize="small")
    return fig


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", type=Path, default=BUNDLED / "training_log.json")
    parser.add_argument("--out", type=Path, default=Path("docs") / "bundled-training-loss.png")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    loss_curves(json.loads(args.log.read_text())).savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
