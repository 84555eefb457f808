"""The lessons' figures: each takes numbers and returns a matplotlib figure. The notebooks show them
inline; `python -m lessons.expected` draws the same ones from the bundled model for slides."""

import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter


def log_axis(ax, axis: str = "y") -> None:
    """A log scale with at least four ticks labelled in plain numbers (20, 30, 40, …), even over less
    than a decade, where matplotlib's own would label one or two. Call it after plotting."""
    getattr(ax, f"set_{axis}scale")("log")
    lo, hi = getattr(ax, f"get_{axis}lim")()
    decades = range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
    for mantissas in ((1, 2, 5), (1, 2, 3, 5, 7), (1, 1.5, 2, 3, 4, 5, 6, 7, 8)):
        ticks = [m * 10.0**e for e in decades for m in mantissas if lo <= m * 10.0**e <= hi]
        if len(ticks) >= 4:
            break
    if len(ticks) < 3:  # less than a factor of two: evenly spaced round numbers
        ticks = [t for t in MaxNLocator(5).tick_values(lo, hi) if lo <= t <= hi]
    target = getattr(ax, f"{axis}axis")
    target.set_major_locator(FixedLocator(ticks))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


def attention_patterns(pattern, labels: list[str], layer: int = 0):
    """pattern [n_heads, query_pos, key_pos] of one prompt, with its tokens as labels."""
    n_heads = len(pattern)
    fig, axes = plt.subplots(1, n_heads, figsize=(3.6 * n_heads, 4.6), layout="compressed")
    for head, ax in enumerate(axes):
        image = ax.imshow(pattern[head], cmap="Blues", vmin=0, vmax=1)
        ax.set_title(f"block {layer}, head {head}")
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(labels)), labels if head == 0 else [], fontsize=7)
        ax.set_xlabel("key (read from)")
    axes[0].set_ylabel("query (reading)")
    fig.colorbar(image, ax=axes, shrink=0.8, label="attention weight")
    fig.suptitle(f"Attention patterns of block {layer}: each row sums to 1, nothing above the diagonal")
    return fig


def residual_means(before, after):
    """|mean over d_model| of the residual at each layer, before and after centring the writing weights."""
    fig, ax = plt.subplots(figsize=(7, 3.5), layout="constrained")
    ax.semilogy(before, "o-", label="before centring")
    ax.semilogy(np.maximum(after, 1e-12), "s-", label="after centring (float32 rounding)")
    ax.set(title="Centring the writing weights: the residual's mean goes to zero", xlabel="layer (resid_post)")
    ax.set_ylabel("mean |mean over d_model|\n(log scale)")
    ax.legend()
    return fig


def norms_by_layer(curves: dict[str, np.ndarray], title: str, ylabel: str = "mean ‖resid_post‖, BOS excluded"):
    """One line per label: a mean norm at each layer, on a log scale (exponential growth is a straight line)."""
    fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
    for (label, values), marker in zip(curves.items(), "os^vD*"):
        ax.plot(np.arange(len(values)), values, marker + "-", label=label)
    log_axis(ax)
    ax.set(title=title, xlabel="layer l", ylabel=ylabel + " (log scale)")
    ax.legend()
    return fig


def ln_scale_invariance(c, change, variance: float, eps: float = 1e-5):
    """Largest change of LayerNorm's output when its input is scaled by c, against c."""
    fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
    ax.loglog(c, np.maximum(change, 1e-9), "o-", label="largest |LN(c·x) − LN(x)|")
    ax.axvline(np.sqrt(eps / variance), color="grey", ls="--", label="c² · variance = ε")
    ax.set(title="LayerNorm ignores the scale of its input, until c² · variance nears ε", xlabel="c", ylabel="change")
    ax.legend()
    return fig


def dilution(layers, share, predicted):
    """A feature's share of the residual norm at the layers after it was written, beside α / mean norm."""
    fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
    ax.plot(layers, share, "o-", label="measured: component along d̂ / mean ‖resid_post‖")
    ax.plot(layers, predicted, "s--", label="if nothing deletes it: α / mean ‖resid_post‖")
    log_axis(ax)
    ax.set(title="A feature written once is diluted by the growth of the stream", xlabel="layer l", ylabel="share (log scale)")
    ax.legend()
    return fig


def kept_by_layer(kept):
    """The fraction of a scaled block output left at the last layer, for each block."""
    fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
    ax.bar(np.arange(len(kept)), kept, color="tab:blue")
    ax.axhline(1.0, color="grey", ls="--", label="1: nothing later removes it (overshadowing)")
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_ylim(min(0.0, *kept) - 0.05, max(1.25, *kept) + 0.05)  # room for the legend above the bars and the line
    ax.set(title="Scaling one block's mlp_out: how much of the extra survives", xlabel="block", ylabel="fraction kept")
    ax.legend()
    return fig
