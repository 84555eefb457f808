"""The study's figures. Each function takes numbers and returns a matplotlib Figure; none computes
anything about a model. Legends sit outside the axes so they never hide data, except figure 15's, which
sits in the corner its points leave empty (they lie on the diagonal)."""

import sys
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # a notebook keeps its inline backend
    matplotlib.use("Agg")  # files only: no display is needed, or present on a server
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter

from outdir import writing

BOS_COLOUR = "tab:red"
LAYER_LABEL = "layer l (block index)"
NORM_LABEL = "L2 norm (log scale)"


class PlainLogFormatter(LogFormatter):
    """LogFormatter's choice of which ticks to label (minor ones too when the axis spans under a decade),
    written as plain numbers: 0.3 rather than 3e-01 or 3×10⁻¹."""

    def _num_to_string(self, x, vmin, vmax):
        return f"{x:g}"


def log_scale(ax: plt.Axes, which: str = "y") -> None:
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    axis = ax.yaxis if which == "y" else ax.xaxis
    axis.set_major_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
    axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))


def _figure(title: str, xlabel: str, ylabel: str, log: bool = True, size=(9, 4.8)) -> tuple[Figure, plt.Axes]:
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    fig.suptitle(title)  # above the axes and the legend, so the two never overlap
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log:
        log_scale(ax)
    ax.grid(True, which="major", alpha=0.3)
    return fig, ax


def _legend(fig: Figure, **kwargs) -> None:
    fig.legend(loc="outside right center", fontsize="small", **kwargs)  # centred: clear of the title above


def layer_lines(title: str, ylabel: str, series: dict[str, dict], log: bool = True, xlabel: str = LAYER_LABEL) -> Figure:
    """Lines against layer: series = {label: {"y": values, optional "x", and matplotlib style keys}}."""
    fig, ax = _figure(title, xlabel, ylabel, log)
    for label, spec in series.items():
        spec = dict(spec)
        y = np.asarray(spec.pop("y"))
        x = spec.pop("x", np.arange(len(y)))
        ax.plot(x, y, label=label, **({"marker": "o", "markersize": 3} | spec))
    _legend(fig)
    return fig


def log_norm_histograms(edges: np.ndarray, counts_by_layer: dict[int, np.ndarray], model: str, n_bins: int = 60) -> Figure:
    """Figure 1: overlaid histograms of log10 ‖resid_post‖ at several layers.

    edges: fine bin edges in log10; counts_by_layer: {layer: counts on those bins}. Neighbouring fine bins
    are summed into about n_bins bins spanning the occupied range.
    """
    fig, ax = _figure(
        f"{model}: distribution of residual norms by layer (BOS excluded)",
        "log10 of L2 norm of resid_post",
        "number of vectors",
        log=False,
    )
    occupied = np.flatnonzero(np.sum(list(counts_by_layer.values()), axis=0))
    first, last = occupied[0], occupied[-1] + 1
    width = max(1, -(-(last - first) // n_bins))  # fine bins per drawn bin, rounded up
    span = -(-(last - first) // width) * width  # a whole number of drawn bins
    first = min(first, len(edges) - 1 - span)  # at the top end of the range, reach down instead
    last = first + span
    coarse_edges = edges[first : last + 1 : width]
    colours = plt.cm.viridis(np.linspace(0, 0.95, len(counts_by_layer)))
    for colour, (layer, counts) in zip(colours, counts_by_layer.items()):
        fine = np.zeros(last - first)
        available = counts[first:last]
        fine[: len(available)] = available
        ax.stairs(fine.reshape(-1, width).sum(1), coarse_edges, fill=True, alpha=0.35, color=colour, label=f"layer {layer}")
        ax.stairs(fine.reshape(-1, width).sum(1), coarse_edges, color=colour)
    _legend(fig, title="resid_post at")
    return fig


def positions_by_layer(norms: np.ndarray, labels: list[str], model: str) -> Figure:
    """Figure 2: one prompt, norm of every position's residual against layer; BOS in red.

    norms: [n_layers + 1, n_pos], row 0 the embedding (resid_pre of block 0), row l + 1 resid_post of block l.
    """
    fig, ax = _figure(
        f"{model}: residual norm of every position of one prompt", "residual after block (0 = embeddings)", NORM_LABEL
    )
    x = np.arange(norms.shape[0])
    colours = plt.cm.Greys(np.linspace(0.35, 0.85, norms.shape[1]))
    for pos in range(1, norms.shape[1]):
        ax.plot(x, norms[:, pos], color=colours[pos], linewidth=1, alpha=0.8)
    ax.plot(x, norms[:, 0], color=BOS_COLOUR, linewidth=2.5, label=f"position 0 (BOS {labels[0]!r})")
    ax.plot([], [], color="grey", label=f"positions 1–{norms.shape[1] - 1}")
    _legend(fig)
    return fig


# Block l is the (l+1)-th of n_layers: its resid_post has had (l+1)/n_layers of the model's blocks applied, so
# every model's output lands at 1 and the models' depths line up.
DEPTH_LABEL = "depth fraction (l + 1) / n_layers"


def models_mean_norm(curves: dict[str, dict]) -> Figure:
    """Figure 3: mean resid_post norm for each model, with the fitted exponential over its fit layers, against
    layer (left) and against depth fraction (l + 1) / n_layers (right), since models of different depths are compared.

    curves = {model: {"mean_norm": [L], "growth": growth_rate(...) result}}.
    """
    fig, (by_layer, by_depth) = plt.subplots(1, 2, figsize=(13, 4.8), layout="constrained", sharey=True)
    fig.suptitle("Mean residual norm by layer, with exponential fits")
    for colour, (model, curve) in zip(plt.cm.tab10.colors, curves.items()):
        y, g = np.asarray(curve["mean_norm"]), curve["growth"]
        layers, fit_x = np.arange(len(y)), np.arange(g["first_layer"], g["last_layer"] + 1)
        fit_y = g["fit_intercept"] * g["fit_rate"] ** fit_x
        fit_label = f"{model} fit, layers {g['first_layer']}–{g['last_layer']}: ×{g['fit_rate']:.3f}/layer (R² {g['r2']:.2f})"
        for ax, x, x_fit in ((by_layer, layers, fit_x), (by_depth, (layers + 1) / len(y), (fit_x + 1) / len(y))):
            ax.plot(x, y, "o-", color=colour, markersize=3, label=model)
            ax.plot(x_fit, fit_y, "--", color=colour, linewidth=2, alpha=0.7, label=fit_label)
    by_layer.set(title="against layer", xlabel="layer l (resid_post of block l)", ylabel="mean L2 norm, BOS excluded (log scale)")
    by_depth.set(title="against depth fraction", xlabel=DEPTH_LABEL + " (resid_post of block l)", xlim=(0, 1.02))
    for ax in (by_layer, by_depth):
        log_scale(ax)
        ax.grid(True, which="major", alpha=0.3)
    handles, labels = by_layer.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", fontsize="small", ncols=2)
    return fig


def position_growth_ratios(ratios: np.ndarray, model: str) -> Figure:
    """Figure 4: one prompt, ‖x_l‖ / ‖x_{l−1}‖ per position against layer; BOS in red.

    ratios: [n_layers, n_pos], row l = ‖resid_post_l‖ / ‖resid_pre_l‖ (the residual before block l).
    """
    fig, ax = _figure(
        f"{model}: per-layer growth ratio of every position of one prompt", LAYER_LABEL, "‖x_l‖ / ‖x_(l−1)‖ (log scale)"
    )
    x = np.arange(ratios.shape[0])
    for pos in range(1, ratios.shape[1]):
        ax.plot(x, ratios[:, pos], color="grey", linewidth=1, alpha=0.6)
    ax.plot(x, ratios[:, 0], color=BOS_COLOUR, linewidth=2.5, label="position 0 (BOS)")
    ax.plot([], [], color="grey", label="other positions")
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="ratio 1 (no growth)")
    _legend(fig)
    return fig


def half_layer_residuals(mean_norms: dict[str, np.ndarray], model: str) -> Figure:
    """Figure 6: resid_pre at l, resid_mid at l + ½, resid_post at l + 1 on one axis."""
    fig, ax = _figure(
        f"{model}: mean residual norm through each block",
        "position in the forward pass (block l spans l to l+1)",
        "mean L2 norm, BOS excluded (log scale)",
    )
    L = len(mean_norms["resid_pre"])
    x = np.concatenate([np.arange(L)[:, None] + offset for offset in (0, 0.5, 1)], axis=1).ravel()
    y = np.stack([mean_norms[s] for s in ("resid_pre", "resid_mid", "resid_post")], axis=1).ravel()
    ax.plot(x, y, color="lightgrey", linewidth=1, zorder=1)
    for offset, stream, marker in ((0, "resid_pre", "o"), (0.5, "resid_mid", "s"), (1, "resid_post", "^")):
        ax.scatter(np.arange(L) + offset, mean_norms[stream], marker=marker, s=18, label=stream, zorder=2)
    _legend(fig)
    return fig


def attention_weights(head_norms: np.ndarray, b_O: np.ndarray, attn_out: np.ndarray, ov_random: np.ndarray, model: str) -> Figure:
    """Figure 8: ‖W_OV‖_F of every head (grey), ‖b_O‖ (pink), mean attn_out norm (blue); and
    ‖Σ_h W_OV^h x‖ for random normalised x against attn_out."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), layout="constrained")
    fig.suptitle(f"{model}: attention weights (W_OV, b_O) and attention output by layer")
    x = np.arange(len(b_O))
    for h in range(head_norms.shape[1]):
        left.plot(
            x, head_norms[:, h], color="grey", linewidth=0.8, alpha=0.6, label="‖W_OV‖_F, one line per head" if h == 0 else None
        )
    left.plot(x, b_O, color="hotpink", linewidth=2, label="‖b_O‖")
    left.plot(x, attn_out, color="tab:blue", linewidth=2, label="mean ‖attn_out‖")
    right.plot(x, ov_random, color="tab:purple", linewidth=2, label="mean ‖Σ_h W_OV^h x‖, x random, normalised")
    right.plot(x, attn_out, color="tab:blue", linewidth=2)  # labelled once, in the left panel
    for ax, title in ((left, "weights and biases"), (right, "OV circuit on random inputs")):
        ax.set(title=title, xlabel=LAYER_LABEL, ylabel=NORM_LABEL)
        log_scale(ax)
        ax.grid(True, alpha=0.3)
    _legend(fig)
    return fig


def std_growth(stds: dict[str, np.ndarray], rate: float, model: str) -> Figure:
    """Figure 10: per-layer standard deviations divided by rate^l, with the bounds for each addition:
    uncorrelated √(a² + b²) and fully correlated a + b."""
    fig, ax = _figure(
        f"{model}: standard deviations divided by {rate:.3f}^l",
        LAYER_LABEL,
        f"std of vector entries / {rate:.3f}^l (log scale)",
        size=(11, 5.2),
    )
    L = len(stds["resid_pre"])
    scale = rate ** np.arange(L)
    colours = dict(zip(("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post"), plt.cm.tab10.colors))
    for stream, colour in colours.items():
        ax.plot(np.arange(L), stds[stream] / scale, "o-", markersize=3, color=colour, label=stream)
    for total, (a, b) in (("resid_mid", ("resid_pre", "attn_out")), ("resid_post", ("resid_mid", "mlp_out"))):
        ax.plot(
            np.arange(L),
            np.sqrt(stds[a] ** 2 + stds[b] ** 2) / scale,
            ":",
            color=colours[total],
            linewidth=2,
            label=f"{total} if uncorrelated: √({a}² + {b}²)",
        )
        ax.plot(
            np.arange(L),
            (stds[a] + stds[b]) / scale,
            "--",
            color=colours[total],
            linewidth=1,
            label=f"{total} if fully correlated: {a} + {b}",
        )
    _legend(fig)
    return fig


def frobenius_claim(
    ov_frobenius: np.ndarray, ov_mean: np.ndarray, in_frobenius: np.ndarray, in_mean: np.ndarray, model: str
) -> Figure:
    """Figure 15: mean ‖W x‖ over random unit-variance x against ‖W‖_F, for every W_OV head and W_in."""
    fig, ax = _figure(
        f"{model}: mean ‖W x‖ for random x against ‖W‖_F", "‖W‖_F (log scale)", "mean ‖W x‖, x ~ N(0, I) (log scale)"
    )
    log_scale(ax, "x")
    layers = np.repeat(np.arange(ov_frobenius.shape[0]), ov_frobenius.shape[1])
    points = ax.scatter(ov_frobenius.ravel(), ov_mean.ravel(), c=layers, cmap="viridis", s=10, label="W_OV, one point per head")
    ax.scatter(
        in_frobenius,
        in_mean,
        c=np.arange(len(in_frobenius)),
        cmap="viridis",
        marker="s",
        s=40,
        edgecolor="black",
        label="W_in, one per layer",
    )
    everything = np.concatenate([ov_frobenius.ravel(), in_frobenius, ov_mean.ravel(), in_mean])
    line = np.array([everything.min() * 0.9, everything.max() * 1.1])
    ax.plot(line, line, "k--", linewidth=1, label="mean ‖W x‖ = ‖W‖_F")
    fig.colorbar(points, ax=ax, label="layer")
    ax.legend(loc="upper left", fontsize="small")  # the points lie on the diagonal: this corner is empty
    return fig


def save(fig: Figure, directory, stem: str) -> list[str]:
    """Write fig as PNG and SVG; return the two file names. A failed write raises outdir.WriteError naming the file."""
    names = []
    try:
        for suffix in ("png", "svg"):
            with writing(Path(directory) / f"{stem}.{suffix}") as path:
                fig.savefig(path, dpi=120)
            names.append(path.name)
            # The constrained layout was solved while drawing the PNG; the SVG keeps it instead of solving
            # it again (measured: SVGs written in half the time).
            fig.set_layout_engine("none")
    finally:
        plt.close(fig)
    return names


# ---------------------------------------------------------------------------------------------
# Over training (analysis.dynamics): the x axis is the training step, symlog so that step 0 (the
# initialisation) sits at 0 and the log-spaced checkpoints after it are evenly spread.


def _step_axis(ax: plt.Axes) -> None:
    ax.set_xscale("symlog", linthresh=1, linscale=0.5)
    ax.set_xlim(left=-0.2)  # symlog would otherwise mirror the axis into negative steps
    ax.set_xlabel("training step (0 = initialisation; log scale after 1)")
    ax.grid(True, which="major", alpha=0.3)


def norm_by_layer_over_steps(mean_norms: np.ndarray, steps: list[int], run: str) -> Figure:
    """Mean resid_post norm against layer, one line per checkpoint, coloured from first (dark) to last (yellow).

    mean_norms: [n_steps, n_layers]."""
    fig, ax = _figure(f"{run}: mean residual norm by layer over training", "layer l (resid_post of block l)", NORM_LABEL)
    colours = plt.cm.viridis(np.linspace(0, 0.95, len(steps)))
    for colour, step, y in zip(colours, steps, mean_norms):
        ax.plot(np.arange(len(y)), y, "o-", markersize=3, color=colour, label=f"step {step:,}")
    _legend(fig, title="checkpoint")
    return fig


def growth_over_steps(growth_by_run: dict[str, dict], title: str) -> Figure:
    """Fitted per-layer growth rate, the fit's R², and the rates of the two halves of the fit range against step.

    growth_by_run = {label: {"steps": [...], "fit_rate": [...], "r2": [...], "rate_first_half": [...],
    "rate_second_half": [...]}}: one colour per run."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), layout="constrained", sharex=True)
    fig.suptitle(title)
    for colour, (label, g) in zip(plt.cm.tab10.colors, growth_by_run.items()):
        top.plot(g["steps"], g["fit_rate"], "o-", markersize=4, color=colour, label=f"{label}: least-squares rate")
        top.plot(g["steps"], g["rate_first_half"], "v:", markersize=3, color=colour, alpha=0.7, label=f"{label}: first half")
        top.plot(g["steps"], g["rate_second_half"], "^:", markersize=3, color=colour, alpha=0.7, label=f"{label}: second half")
        bottom.plot(g["steps"], g["r2"], "o-", markersize=4, color=colour)
    top.axhline(1.0, color="black", linewidth=1, linestyle="--")
    top.set_ylabel("growth of mean ‖resid_post‖\nper layer (×)")
    bottom.set_ylabel("R² of the exponential fit")
    bottom.axhline(0.95, color="grey", linewidth=1, linestyle="--", label="R² = 0.95")
    bottom.set_ylim(min(0.0, *(min(g["r2"]) for g in growth_by_run.values())), 1.02)
    for ax in (top, bottom):
        _step_axis(ax)
    top.set_xlabel("")
    _legend(fig)
    return fig


def per_layer_over_steps(panels: dict[str, np.ndarray], steps: list[int], title: str, ncols: int = 4) -> Figure:
    """One panel per quantity, each [n_steps, n_layers]: the quantity of every layer against step, one
    line per layer coloured by depth (log y)."""
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3.4 * nrows), layout="constrained", squeeze=False)
    fig.suptitle(title)
    n_layers = next(iter(panels.values())).shape[1]
    colours = plt.cm.viridis(np.linspace(0, 0.95, n_layers))
    for ax, (name, values) in zip(axes.ravel(), panels.items()):
        for layer in range(n_layers):
            ax.plot(steps, values[:, layer], color=colours[layer], linewidth=1.2)
        ax.set_title(name, fontsize="medium")
        _step_axis(ax)
        log_scale(ax)
    for ax in axes.ravel()[len(panels) :]:
        ax.set_visible(False)
    mappable = plt.cm.ScalarMappable(cmap="viridis", norm=matplotlib.colors.Normalize(0, (n_layers - 1) / 0.95))
    fig.colorbar(mappable, ax=axes, label="layer", shrink=0.6)
    return fig


def per_layer_by_run(
    panels: dict[str, dict[str, np.ndarray]],
    title: str,
    ncols: int = 4,
    *,
    legend: str = "run",
    units: dict[str, str] | None = None,
    by_depth: bool = False,
) -> Figure:
    """One panel per quantity: its value by layer for each run or model ({panel: {run: [n_layers]}}), log y.
    by_depth puts block l at its depth fraction (l + 1) / n_layers, for models of different depths side by
    side; units, {panel: unit}, labels each panel's y axis."""
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3.4 * nrows), layout="constrained", squeeze=False)
    fig.suptitle(title)
    # One colour per run across every panel, and every run in the legend, also where a panel lacks some runs
    # (a model without ln1 has no ln1 gain). tab10 has 10 colours: runs beyond them are not drawn, as before.
    colours = dict(zip(dict.fromkeys(run for runs in panels.values() for run in runs), plt.cm.tab10.colors))
    for ax, (name, runs) in zip(axes.ravel(), panels.items()):
        for run, values in runs.items():
            if run not in colours:
                continue
            x = (np.arange(len(values)) + 1) / len(values) if by_depth else np.arange(len(values))
            ax.plot(x, values, "o-", markersize=3, color=colours[run], label=run)
        ax.set(title=name, xlabel=DEPTH_LABEL if by_depth else LAYER_LABEL)
        if by_depth:
            ax.set_xlim(0, 1.02)
        if units:
            ax.set_ylabel(f"{units[name]} (log scale)")
        log_scale(ax)
        ax.grid(True, alpha=0.3)
    for ax in axes.ravel()[len(panels) :]:
        ax.set_visible(False)
    handles = [plt.Line2D([], [], marker="o", markersize=3, color=colour) for colour in colours.values()]
    fig.legend(handles, list(colours), loc="outside right center", fontsize="small", title=legend)
    return fig
