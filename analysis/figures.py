"""The study's per-model figures, one function each: the plot call and, beside it, the caption computed
from the same numbers. Each takes a `study.ModelStudy` and returns a `Shown` (`not_drawn`, saying why, when
the model cannot have that figure); `FIGURES` lists them in the report's order. Figure 3 compares models and is drawn by
`report.write_outputs`. A new figure is one function here, added to FIGURES, with its plot in plots.py.
"""

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from analysis import engine, measures, plots, rates
from analysis.measures import STREAMS
from analysis.study import ModelStudy


@dataclass
class Shown:
    stem: str  # file name without suffix, numbered as in the study
    title: str  # the report's heading
    figure: Figure | None  # None once saved (figures.write), or when the model cannot have this figure
    caption: str  # what the figure shows, in numbers; or, not drawn, why this model cannot have it
    drawn: bool = True


def not_drawn(stem: str, title: str, why: str) -> Shown:
    """A figure this model cannot have, and why: the report says so in its place."""
    return Shown(stem, title, None, why, drawn=False)


NO_RESID_MID = "no resid_mid: a parallel block (Pythia's) adds attention and the MLP to resid_pre at once"


def fit_layers(r: ModelStudy) -> slice:
    return slice(r.rates["first_layer"], r.rates["last_layer"] + 1)


def fit_span(r: ModelStudy) -> str:
    return f"layers {r.rates['first_layer']}–{r.rates['last_layer']}"


def fitted_rate(r: ModelStudy, values) -> float:
    """The least-squares growth rate of per-layer values over the study's fit layers."""
    return rates.growth_rate(values, r.rates["first_layer"], r.rates["last_layer"])["fit_rate"]


def geometric_mean(r: ModelStudy, ratios: np.ndarray) -> float:
    """The geometric mean of per-layer ratios over the study's fit layers."""
    return float(np.exp(np.log(ratios[fit_layers(r)]).mean()))


def change(values: np.ndarray) -> str:
    """How much a per-layer quantity changes from the first layer to the last, as a factor."""
    return f"×{values[-1] / values[0]:.2f}"


def norm_histograms(r: ModelStudy) -> Shown:
    L, act = r.cfg.n_layers, r.act
    shown = sorted({round(float(x)) for x in np.linspace(0, L - 1, min(8, L))})
    figure = plots.log_norm_histograms(engine.HISTOGRAM_EDGES, {layer: act.histogram[layer] for layer in shown}, r.slug)
    first, last = shown[0], shown[-1]
    caption = (
        f"Median ‖resid_post‖ goes from {act.median_norm(first):.3g} at layer {first} to "
        f"{act.median_norm(last):.3g} at layer {last} ({act.count} vectors per layer; medians read from the "
        "histogram's bins of 0.005 in log10)."
    )
    return Shown("01-norm-histograms", "Distribution of residual norms", figure, caption)


def positions_one_prompt(r: ModelStudy) -> Shown:
    i, example = r.example, r.act.example
    norms = np.vstack([example["resid_pre"][:1], example["resid_post"]])  # [n_layers + 1, n_pos]
    bos_text, first_words = r.example_text
    figure = plots.positions_by_layer(norms, [bos_text], r.slug)
    caption = (
        f"Prompt {i + 1} ({first_words!r}…, {norms.shape[1]} tokens). After the last block the BOS residual has "
        f"norm {norms[-1, 0]:.3g}; the other positions have median {np.median(norms[-1, 1:]):.3g}."
    )
    return Shown("02-positions-one-prompt", "Every position of one prompt", figure, caption)


def growth_ratio_one_prompt(r: ModelStudy) -> Shown:
    ratios = measures.growth_ratios(r.act.example)  # [n_layers, n_pos]
    figure = plots.position_growth_ratios(ratios, r.slug)
    in_fit = ratios[fit_layers(r)]
    caption = (
        f"Same prompt. Over {fit_span(r)} the median ratio ‖x_l‖/‖x_(l−1)‖ of non-BOS positions is "
        f"{np.median(in_fit[:, 1:]):.3f}; at BOS it is {np.median(in_fit[:, 0]):.3f}."
    )
    return Shown("04-growth-ratio-one-prompt", "Per-layer growth ratio of each position", figure, caption)


def bos_and_padding(r: ModelStudy) -> Shown:
    p = r.padding
    if p is None:
        return not_drawn("05-bos-and-padding", "BOS and padding", "every prompt fills the model's context: no room for padding")
    (bos_id, bos_text), (pad_id, pad_text) = r.bos, r.pad
    series = {
        f"BOS (position 0: {bos_text})": {"y": p["bos"], "color": plots.BOS_COLOUR},
        f"padding ({pad_text} after the prompt)": {"y": p["padding"], "color": "tab:orange"},
        "ordinary positions": {"y": p["ordinary"], "color": "tab:blue"},
    }
    title = f"{r.slug}: BOS, padding and ordinary positions"
    figure = plots.layer_lines(title, "mean ‖resid_post‖ (log scale)", series)
    pad_norm, median_norm = r.pad_embedding
    caption = (
        f"{len(r.padding_prompts)} prompts of different lengths, each starting with {bos_text} (id {bos_id}) and "
        f"right-padded with {pad_text} (id {pad_id}), whose embedding row has norm {pad_norm:.3g} as trained "
        f"(the median row: {median_norm:.3g}). At the last layer: "
        f"BOS {p['bos'][-1]:.3g}, padding {p['padding'][-1]:.3g}, ordinary positions {p['ordinary'][-1]:.3g}."
    )
    if pad_norm == 0:  # OPT's <pad>: nn.Embedding's padding_idx, zero at initialisation and never updated
        caption += f" {pad_text}'s row is zero, never trained: its positions carry the position embedding alone."
    return Shown("05-bos-and-padding", "BOS and padding", figure, caption)


def resid_pre_mid_post(r: ModelStudy) -> Shown:
    mean = r.mean
    if "resid_mid" not in mean:
        return not_drawn("06-resid-pre-mid-post", "resid_pre, resid_mid and resid_post", NO_RESID_MID)
    figure = plots.half_layer_residuals(mean, r.slug)
    caption = (
        f"Over {fit_span(r)}, adding attn_out multiplies the mean norm by "
        f"{geometric_mean(r, mean['resid_mid'] / mean['resid_pre']):.3f} on average (geometric mean) and adding "
        f"mlp_out by {geometric_mean(r, mean['resid_post'] / mean['resid_mid']):.3f}."
    )
    return Shown("06-resid-pre-mid-post", "resid_pre, resid_mid and resid_post", figure, caption)


def attn_and_mlp_out(r: ModelStudy) -> Shown:
    mean = r.mean
    series = {
        "attn_out": {"y": mean["attn_out"]},
        "mlp_out": {"y": mean["mlp_out"]},
        "resid_post (for scale)": {"y": mean["resid_post"], "color": "grey", "linestyle": "--"},
    }
    figure = plots.layer_lines(f"{r.slug}: attention and MLP outputs", "mean L2 norm, BOS excluded (log scale)", series)
    caption = (
        f"Over {fit_span(r)}: attn_out grows ×{fitted_rate(r, mean['attn_out']):.3f} per layer and mlp_out "
        f"×{fitted_rate(r, mean['mlp_out']):.3f} (least-squares fits), against ×{r.rates['fit_rate']:.3f} for the residual."
    )
    return Shown("07-attn-and-mlp-out", "Attention and MLP outputs", figure, caption)


def attention_weights(r: ModelStudy) -> Shown:
    w = r.weight_stats
    W_OV = w["W_OV_frobenius"]  # [n_layers, n_heads]
    figure = plots.attention_weights(W_OV, w["b_O_norm"], r.mean["attn_out"], w["ov_random_norm"], r.slug)
    caption = (
        f"Mean ‖W_OV‖_F over heads goes from {W_OV[0].mean():.3g} (layer 0) to {W_OV[-1].mean():.3g} "
        f"(layer {r.cfg.n_layers - 1}); fitted growth over {fit_span(r)}: ×{fitted_rate(r, W_OV.mean(1)):.3f} per layer."
    )
    if r.arch.n_kv_heads < r.arch.n_heads:  # grouped-query attention: weight_measures.values_per_head
        caption += (
            f" With {r.arch.n_kv_heads} key-value heads for {r.arch.n_heads} query heads, head h's W_OV is "
            f"W_V[h // {r.arch.n_heads // r.arch.n_kv_heads}] @ W_O[h]: W_V per key-value group, shared by the group's heads."
        )
    return Shown("08-attention-weights", "Attention weights: W_OV and b_O", figure, caption)


def random_inputs(r: ModelStudy) -> str:
    """What the weight measures' random inputs are: LayerNorm's output, or RMSNorm's (weight_measures.random_inputs)."""
    return "x random, RMS 1, not centred" if r.arch.norm == "RMSNorm" else "x random, mean 0, variance 1"


def mlp_random_inputs(r: ModelStudy) -> Shown:
    random_out, actual_out = r.weight_stats["mlp_random_norm"], r.mean["mlp_out"]
    through = " then ln2_post" if r.arch.post_norms else ""
    series = {f"MLP(x){through}, {random_inputs(r)}": {"y": random_out}, "actual mlp_out": {"y": actual_out}}
    figure = plots.layer_lines(f"{r.slug}: MLP output on random normalised inputs", "mean L2 norm (log scale)", series)
    caption = (
        f"Fitted growth over {fit_span(r)}: ×{fitted_rate(r, random_out):.3f} per layer on random inputs, "
        f"×{fitted_rate(r, actual_out):.3f} for the actual output."
    )
    if r.arch.norm == "RMSNorm":
        caption += " The inputs are what a folded RMSNorm hands on: root mean square 1, not centred."
    if r.arch.post_norms:
        caption += " The output is the block's mlp_out, through ln2_post: its size is set by that gain, not by the input."
    if not r.arch.pre_norms:
        caption += " This MLP reads resid_mid raw (no norm before it), so random unit-RMS inputs are not what it reads."
    return Shown("09-mlp-random-inputs", "MLP on random inputs", figure, caption)


def std_and_bounds(r: ModelStudy) -> Shown:
    if "resid_mid" not in r.mean:  # the bounds are those of resid_mid = resid_pre + attn_out, resid_post = resid_mid + mlp_out
        return not_drawn("10-std-and-bounds", "Standard deviations and the addition bounds", NO_RESID_MID)
    stds = {s: r.act.rms(s) / math.sqrt(r.cfg.d_model) for s in STREAMS}  # [n_layers] each
    rate = r.rates["rate"]
    figure = plots.std_growth(stds, rate, r.slug)
    # resid_post = resid_mid + mlp_out, so its std is at most the sum of theirs (Minkowski's inequality): the
    # "fully correlated" line is a bound that always holds. The "uncorrelated" value √(a² + b²) is no bound:
    # resid_post lies above it where mlp_out is positively correlated with resid_mid, below where negatively.
    uncorrelated = np.sqrt(stds["resid_mid"] ** 2 + stds["mlp_out"] ** 2)
    above = np.mean(stds["resid_post"] >= uncorrelated * 0.999)
    caption = (
        f"Each curve is divided by {rate:.3f}^l, the residual's end-point growth rate. resid_post's std never exceeds "
        f"the fully correlated sum resid_mid + mlp_out (the triangle inequality). At {above:.0%} of layers it is at or "
        "above the uncorrelated value √(resid_mid² + mlp_out²): there mlp_out is not anti-correlated with resid_mid."
    )
    if r.arch.norm == "RMSNorm":  # nothing centred: ‖x‖/√d_model is the root mean square, the mean included
        caption += (
            " With RMSNorm the vectors are not mean-zero: each curve is ‖x‖/√d_model, the root mean square of the "
            "components, which includes their mean; the bounds hold for it all the same."
        )
    return Shown("10-std-and-bounds", "Standard deviations and the addition bounds", figure, caption)


def mlp_weight_norms(r: ModelStudy) -> Shown:
    w = r.weight_stats
    series = {
        "‖W_in‖_F": {"y": w["W_in_norm"]},
        "‖b_in‖": {"y": w["b_in_norm"]},
        "‖W_out‖_F": {"y": w["W_out_norm"]},
        "‖b_out‖": {"y": w["b_out_norm"]},
    }
    figure = plots.layer_lines(f"{r.slug}: MLP weight norms", "L2 / Frobenius norm (log scale)", series)
    caption = (
        f"‖W_out‖_F changes {change(w['W_out_norm'])} from layer 0 to layer {r.cfg.n_layers - 1}, "
        f"while mean ‖mlp_out‖ changes {change(r.mean['mlp_out'])}."
    )
    return Shown("11-mlp-weight-norms", "MLP weight norms", figure, caption)


def activation_rate(r: ModelStudy) -> Shown:
    w = r.weight_stats
    gated = r.nonlinearity in measures.GATED
    rates = {
        "actual run": r.act.mean("active"),
        "random unit-RMS inputs" if r.arch.norm == "RMSNorm" else "random normalised inputs": w["active_random"],
        f"{r.mlp_input} from positions 1–6 only": w["active_early_positions"],
        f"{r.mlp_input} from a random other layer": w["active_other_layer"],
    }
    if gated:  # measures.nonlinearity: the gate g = x @ W_gate is hook_pre; silu(g) > 0 iff g > 0
        title = f"{r.slug}: fraction of MLP gates with g > 0 ({r.nonlinearity}: gate > 0 fraction)"
        ylabel, counted = "fraction of gate pre-activations > 0", "gate > 0 fraction"
    else:
        title = f"{r.slug}: fraction of MLP neurons with positive pre-activation ({r.nonlinearity})"
        ylabel, counted = "fraction of pre-activations > 0", "fraction of positive pre-activations"
    figure = plots.layer_lines(title, ylabel, {k: {"y": v} for k, v in rates.items()}, log=False)
    actual, random = rates["actual run"], w["active_random"]
    act = r.act
    if act.early_seen <= act.reservoir:
        sample = f"all {act.early_seen} {r.mlp_input} vectors at positions 1–6"
    else:
        sample = f"a uniform sample (seed 0) of {act.reservoir} of the {act.early_seen} {r.mlp_input} vectors at positions 1–6"
    meaning = {  # measures.nonlinearity: the same count, a different quantity
        "GELU": "With GELU, a neuron below 0 still passes a small negative value: this is the fraction on its near-linear side.",
        "ReLU": "With ReLU, this is the fraction of neurons whose output is not 0, a different quantity from a GELU "
        "model's rate, which counts neurons on GELU's near-linear side while the others still pass small values.",
    }.get(r.nonlinearity) or (
        f"With {r.nonlinearity}, the MLP writes act(g)·(x @ W_in) with g = x @ W_gate: this is the fraction of gates g > 0 "
        f"({measures.GATED[r.nonlinearity]}(g) > 0 iff g > 0), not a fraction of neurons on, since the linear factor may "
        "still make the product small or negative. It is not the same quantity as a GELU or ReLU model's rate."
    )
    caption = (
        f"In the actual run the {counted} is {actual[0]:.3f} at layer 0 and {actual[-1]:.3f} "
        f"at layer {r.cfg.n_layers - 1}; on random inputs {random[0]:.3f} and {random[-1]:.3f}. The two resampled "
        f"controls feed each layer's MLP {sample} (at most {act.reservoir} are kept per layer). {meaning}"
    )
    if gated:
        return Shown(f"12-{r.nonlinearity.lower()}-gate-fraction", f"{r.nonlinearity} gate > 0 fraction", figure, caption)
    stem = f"12-{r.nonlinearity.lower()}-activation-rate"
    return Shown(stem, f"{r.nonlinearity} activation rate", figure, caption)


def reading_vs_writing(r: ModelStudy) -> Shown:
    w = r.weight_stats
    series = {
        "‖W_Q‖ (reads)": {"y": w["W_Q_norm"]},
        "‖W_K‖ (reads)": {"y": w["W_K_norm"]},
        "‖W_V‖ (reads)": {"y": w["W_V_norm"]},
        "‖W_in‖ (reads)": {"y": w["W_in_norm"]},
        "‖W_O‖ (writes)": {"y": w["W_O_norm"], "linestyle": "--"},
        "‖W_out‖ (writes)": {"y": w["W_out_norm"], "linestyle": "--"},
    }
    title = f"{r.slug}: weights that read from and write to the residual"
    figure = plots.layer_lines(title, "Frobenius norm (log scale)", series)
    caption = (
        f"From layer 0 to {r.cfg.n_layers - 1}: ‖W_O‖ {change(w['W_O_norm'])}, ‖W_out‖ {change(w['W_out_norm'])}, "
        f"‖W_V‖ {change(w['W_V_norm'])}, ‖W_in‖ {change(w['W_in_norm'])}."
    )
    return Shown("13-reading-vs-writing", "Reading and writing weights", figure, caption)


def appendix1_bound(r: ModelStudy) -> Shown:
    a = r.appendix
    series = {
        "g_l − 1 = ‖resid_post‖/‖resid_pre‖ − 1": {"y": a["growth_minus_1"]},
        "(‖attn_out‖ + ‖mlp_out‖) / ‖resid_pre‖": {"y": a["bound"], "linestyle": "--"},
    }
    title = f"{r.slug}: growth is bounded by what the sublayers add (Appendix 1)"
    figure = plots.layer_lines(title, "mean over vectors", series, log=False)
    if a["violations"] == 0:
        verdict = "No vector violates it."
    else:
        verdict = (
            f"**{a['violations']} vectors violate it (largest excess {a['worst_excess']:.3g}): "
            "this is a bug in the measurements.**"
        )
    caption = f"Per vector, g_l − 1 ≤ (‖attn_out‖ + ‖mlp_out‖)/‖resid_pre‖ must hold. {verdict}"
    return Shown("14-appendix1-bound", "Appendix 1: the triangle-inequality bound", figure, caption)


def frobenius_claim(r: ModelStudy) -> Shown:
    w = r.weight_stats
    figure = plots.frobenius_claim(w["W_OV_frobenius"], w["W_OV_mean_Wx"], w["W_in_norm"], w["W_in_mean_Wx"], r.slug)
    ov_ratio = w["W_OV_mean_Wx"] / w["W_OV_frobenius"]  # [n_layers, n_heads]
    in_ratio = w["W_in_mean_Wx"] / w["W_in_norm"]  # [n_layers]
    caption = (
        f"mean ‖W x‖ / ‖W‖_F is {ov_ratio.min():.3f}–{ov_ratio.max():.3f} over W_OV heads and "
        f"{in_ratio.min():.3f}–{in_ratio.max():.3f} over W_in (E‖Wx‖² = ‖W‖_F² exactly)."
    )
    return Shown("15-frobenius-claim", "Footnote 5: ‖W x‖ on random inputs and ‖W‖_F", figure, caption)


def centred_norms(r: ModelStudy) -> Shown | None:
    """Figure 17, for a model whose residual is not mean-zero (RMSNorm: measures.CENTRED): ‖x‖ and ‖x − mean(x)‖ of
    resid_post, at ordinary positions and at BOS. None for a LayerNorm model, whose processed residual has mean 0."""
    if "resid_post" not in r.centred:
        return None
    norm, centred = r.mean["resid_post"], r.centred["resid_post"]
    bos, bos_centred = r.act.bos("resid_post"), r.act.bos("centred_resid_post")
    series = {
        "‖x‖, mean over positions ≥ 1": {"y": norm, "color": "tab:blue"},
        "‖x − mean(x)‖, mean over positions ≥ 1": {"y": centred, "color": "tab:blue", "linestyle": "--"},
        "‖x‖ at BOS": {"y": bos, "color": plots.BOS_COLOUR},
        "‖x − mean(x)‖ at BOS": {"y": bos_centred, "color": plots.BOS_COLOUR, "linestyle": "--"},
    }
    title = f"{r.slug}: ‖resid_post‖ with and without its mean over d_model"
    figure = plots.layer_lines(title, "L2 norm (log scale)", series)
    last = r.cfg.n_layers - 1
    caption = (
        f"RMSNorm does not subtract the mean, so nothing is centred and ‖x‖ includes the component along (1, …, 1). "
        f"At layer {last}, mean ‖x − mean(x)‖ / mean ‖x‖ is {centred[-1] / norm[-1]:.3f} at ordinary positions and "
        f"{bos_centred[-1] / bos[-1]:.3f} at BOS. Fitted growth over {fit_span(r)}: ×{fitted_rate(r, norm):.3f} per "
        f"layer for ‖x‖, ×{fitted_rate(r, centred):.3f} for ‖x − mean(x)‖."
    )
    return Shown("17-centred-norm", "‖x‖ and ‖x − mean(x)‖", figure, caption)


FIGURES = [
    norm_histograms,
    positions_one_prompt,
    growth_ratio_one_prompt,
    bos_and_padding,
    resid_pre_mid_post,
    attn_and_mlp_out,
    attention_weights,
    mlp_random_inputs,
    std_and_bounds,
    mlp_weight_norms,
    activation_rate,
    reading_vs_writing,
    appendix1_bound,
    frobenius_claim,
    centred_norms,  # RMSNorm models only
]


def write(r: ModelStudy, directory: Path, makers=FIGURES) -> list[Shown]:
    """Draw and save one model's figures (PNG and SVG) into directory; return them for the report, in order
    (the figures themselves closed: figure None). A maker returning None has nothing for this kind of model."""
    drawn = []
    for make in makers:
        shown = make(r)
        if shown is None:
            continue
        if shown.drawn:
            plots.save(shown.figure, directory, shown.stem)
        drawn.append(replace(shown, figure=None))
    return drawn
