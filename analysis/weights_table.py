"""The weights side by side across models: report.md's table of where the growth is stored, and the weight decay
each family's release states (the post's open question about weight decay). Read by report.py and its figure 16."""

import re

import numpy as np

from analysis import rates
from analysis.study import ModelStudy

# The weight decay each family's released models were pretrained with, by hub repository (the models' files
# do not record it): Pythia's paper (Biderman et al. 2023), OPT's (Zhang et al. 2022), GPT-Neo's training
# configs (EleutherAI/gpt-neo, configs/*.json). GPT-2's paper gives none. A local directory, a fine-tuned or any
# other repository: unknown. Llama 3.2, Qwen 3 and OLMo 2 are not listed: no source at hand here states the
# decay of those released sizes (Llama 3.2's 1B and 3B were pruned and distilled from larger models), so unknown.
PUBLISHED_WEIGHT_DECAY = {
    r"EleutherAI/pythia-[\d.]+[mb](-deduped)?": "0.01 (Pythia paper)",
    r"facebook/opt-[\d.]+[mb]": "0.1 (OPT paper)",
    r"EleutherAI/gpt-neo-(125m|1\.3b|2\.7b)": "0.1 (GPT-Neo configs)",
    r"(openai-community/)?gpt2(-medium|-large|-xl)?|distilbert/distilgpt2": "not published",
}

# The weight measures set side by side across models, by weight_stats key, with their heading and unit: the
# gains and matrices as trained, and the matrices as the study reads them. W_OV is the mean over heads of
# ‖W_V[h] W_O[h]‖_F (weight_measures.W_OV_frobenius), not the norm of the layer's sum over heads; with grouped-query
# attention, over query heads h with W_V[h // group], the value matrix of h's key-value group. A measure no model of
# the run has (the post-sublayer gains of OLMo 2 and Gemma) is left out (`columns`).
SIDE_BY_SIDE = {
    "ln1_gain_rms": ("ln1 gain", "RMS of w over d_model"),
    "ln2_gain_rms": ("ln2 gain", "RMS of w over d_model"),
    "ln1_post_gain_rms": ("ln1_post gain", "RMS of w over d_model"),
    "ln2_post_gain_rms": ("ln2_post gain", "RMS of w over d_model"),
    "W_OV_as_trained": ("‖W_OV‖ as trained", "Frobenius norm, mean of heads"),
    "W_OV_frobenius": ("‖W_OV‖ processed", "Frobenius norm, mean of heads"),
    "W_in_as_trained": ("‖W_in‖ as trained", "Frobenius norm"),
    "W_in_norm": ("‖W_in‖ processed", "Frobenius norm"),
    "W_out_as_trained": ("‖W_out‖ as trained", "Frobenius norm"),
    "W_out_norm": ("‖W_out‖ processed", "Frobenius norm"),
}


def weight_decay(r: ModelStudy) -> str:
    repo = r.source.get("repo") or ""
    found = (decay for pattern, decay in PUBLISHED_WEIGHT_DECAY.items() if re.fullmatch(pattern, repo, re.IGNORECASE))
    return next(found, "unknown")


def per_layer(r: ModelStudy, key: str) -> np.ndarray:
    """A weight measure per layer: W_OV's, given per head, as the mean over heads."""
    values = r.weight_stats[key]
    return values.mean(1) if values.ndim == 2 else values


def columns(results: list[ModelStudy]) -> list[str]:
    """The SIDE_BY_SIDE measures that at least one of the models has (a model without ln1 has no ln1 gain)."""
    return [key for key in SIDE_BY_SIDE if any(key in r.weight_stats for r in results)]


def weight_growth(r: ModelStudy) -> dict[str, float]:
    """Each SIDE_BY_SIDE measure the model has: its least-squares growth per layer over the model's fit layers
    (rates.growth_rate's fit_rate; ×1: flat). A gain that grows with depth is in the processed matrix that reads
    it too, as a factor."""
    g = r.rates
    return {
        key: rates.growth_rate(per_layer(r, key), g["first_layer"], g["last_layer"])["fit_rate"]
        for key in SIDE_BY_SIDE
        if key in r.weight_stats
    }


def times(rate: float | None) -> str:
    """A rate per layer as the tables show it; "none" where rates.growth_rate found no rate (an overflow, a NaN)."""
    return "none" if rate is None else f"×{rate:.3f}"


def ends(r: ModelStudy, key: str) -> str:
    """A measure at layer 0 and at the last layer; "—" where the model has no such weight."""
    if key not in r.weight_stats:
        return "—"
    values = per_layer(r, key)
    return f"{values[0]:.3g} → {values[-1]:.3g}"


def side_by_side(results: list[ModelStudy]) -> list[str]:
    """The weight measures across models: where each model stores its growth (the post's open question about
    weight decay: PUBLISHED_WEIGHT_DECAY)."""
    keys = columns(results)
    headings = [SIDE_BY_SIDE[key][0] for key in keys]
    lines = [
        "## Where the growth is stored: the weights side by side",
        "",
        "Least-squares growth per layer over each model's fit layers (×1 = flat). *As trained* is the released "
        "weights. *Processed* is what the study reads: each LayerNorm's gain folded into the matrices that read it "
        "(W_V of W_OV, W_in) and their input side centred, and the writing weights (W_O of W_OV, W_out) centred; "
        "an RMSNorm's gain folded the same way (W_gate too), nothing centred, and post-sublayer gains (ln1_post, "
        "ln2_post) left as trained. "
        "A gain that grows with depth grows the processed matrix by the same factor, so where a matrix as trained "
        "is flat and its processed form grows, the growth is stored in the gain. ‖W_OV‖ is the mean over query heads "
        "of ‖W_V[h] W_O[h]‖_F; with grouped key-value heads, W_V per key-value group (W_V[h // group], shared by the "
        "group's heads). Weight decay: as each family's release states it for its pretrained models, by hub "
        "repository (unknown for a local directory). — : the model has no such weight.",
        "",
        "| model | weight decay | ‖resid_post‖ | " + " | ".join(headings) + " |",
        "|---|---|---:|" + "---:|" * len(keys),
    ]
    for r in results:
        fits = weight_growth(r)
        cells = " | ".join(times(fits[key]) if key in fits else "—" for key in keys)
        lines.append(f"| {r.slug} | {weight_decay(r)} | {times(r.rates['fit_rate'])} | {cells} |")
    lines += [
        "",
        "The same measures at layer 0 and at the last layer (all layers, not the fit layers):",
        "",
        "| model | " + " | ".join(headings) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    for r in results:
        lines.append(f"| {r.slug} | " + " | ".join(ends(r, key) for key in keys) + " |")
    if len(results) > 1:
        lines += ["", "![the weights by depth, every model](16-weights-by-model.png)"]
    return lines + [""]
