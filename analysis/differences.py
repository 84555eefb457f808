"""What a model has that GPT-2 has not, and what that changes in the study: report.md's per-family statements.

`analysis.architecture` reads the processed model once (which norm, which gains processing folded and which it left,
the key-value heads, the position embedding); the sentences below are built from it and from the study's numbers,
for the report's "What each model cannot have" and its BOS section. A LayerNorm model (GPT-2, GPT-Neo, OPT,
Pythia) gets none of them: what it cannot have is said by its figures (report.not_drawn, report.nonlinearities).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from analysis import measures, rates
from analysis.architecture import LAYER_NORM_PROCESSING

if TYPE_CHECKING:  # study imports this module; the sentences only read a ModelStudy's fields
    from analysis.study import ModelStudy


def processing_sentence(results: list[ModelStudy]) -> str:
    """report.md's opening words on the weights: GPT-2's phrase where every model is normalised by LayerNorm,
    otherwise model by model (each model's line says what was done to it)."""
    if all(r.arch.norm == "LayerNorm" for r in results):
        return f"Weights processed as in the study ({LAYER_NORM_PROCESSING})."
    return (
        "Weights processed as the study does, as far as each model allows: LayerNorm models with LayerNorm folded and "
        "writing weights centred; RMSNorm models with their gains folded and nothing centred (each model's line says which)."
    )


def number(x: float, spec: str = ".3g") -> str:
    """x as the report writes it; NaN spelt as report.nonfinite_section spells it (float16 overflows, NaN weights)."""
    return "NaN" if np.isnan(x) else format(x, spec)


def fit(r: ModelStudy, values: np.ndarray) -> str:
    rate = rates.growth_rate(values, r.rates["first_layer"], r.rates["last_layer"])["fit_rate"]
    return "none" if rate is None else f"×{rate:.3f}"


def mean_direction(r: ModelStudy) -> str:
    norm, centred = r.mean["resid_post"][-1], r.centred["resid_post"][-1]
    if not (np.isfinite(norm) and np.isfinite(centred)):
        return (
            f"- {r.slug}, ‖x‖ includes the mean: RMSNorm divides by the root mean square without subtracting the mean, "
            "so the residual is not mean-zero; ‖x‖ and ‖x − mean(x)‖ are not finite at the last layer (see "
            '"Activations that are not finite").'
        )
    return (
        f"- {r.slug}, ‖x‖ includes the mean: RMSNorm divides by the root mean square without subtracting the mean, "
        "so the residual is not mean-zero and centring the writing weights would change the model: only the gains "
        f"are folded. At the last layer mean ‖x‖ is {number(norm)} and mean ‖x − mean(x)‖ {number(centred)} "
        f"({number(centred / norm, '.1%')} of it); over the fit layers they grow {fit(r, r.mean['resid_post'])} and "
        f"{fit(r, r.centred['resid_post'])} per layer (figure 17; summary.json's centred_norm)."
    )


def post_norms(r: ModelStudy) -> str:
    """OLMo 2 and Gemma normalise each sublayer's output: attn_out and mlp_out are unit-RMS vectors times a gain."""
    w, d = r.weight_stats, r.cfg.d_model
    where = "instead of its input" if not r.arch.pre_norms else "as well as its input"
    sentence = (
        f"- {r.slug}, post-sublayer norms unfolded: {r.family} normalises each sublayer's output {where} (ln1_post, "
        "ln2_post), so attn_out and mlp_out are vectors of root mean square 1 times a gain, whatever the size of what "
        "the sublayer read; their growth with depth is stored in these gains, which cannot be folded into what reads "
        "the residual and are left as trained."
    )
    if "ln1_post_gain_rms" in w and "ln2_post_gain_rms" in w:
        sentence += (
            f" At the last layer mean ‖attn_out‖ is {number(r.mean['attn_out'][-1])} against √d_model × RMS(ln1_post "
            f"gain) = {number(np.sqrt(d) * w['ln1_post_gain_rms'][-1])}, mean ‖mlp_out‖ {number(r.mean['mlp_out'][-1])} "
            f"against {number(np.sqrt(d) * w['ln2_post_gain_rms'][-1])}; the gains grow {fit(r, w['ln1_post_gain_rms'])} and "
            f"{fit(r, w['ln2_post_gain_rms'])} per layer."
        )
    if not r.arch.pre_norms:
        sentence += (
            " No norm reads the residual before attention or the MLP: they read it raw, so the random normalised "
            "inputs of figures 9 and 12 are not what they read."
        )
    return sentence


def gemma(r: ModelStudy) -> str:
    """What Gemma adds to Llama's differences that bears on the residual stream's size."""
    cfg = r.cfg
    caps = [f"the attention scores at ±{cfg.attn_softcap:g}"] if cfg.attn_softcap else []
    caps += [f"the logits at ±{cfg.final_softcap:g} (which the study does not read)"] if cfg.final_softcap else []
    capped = f"; it caps {' and '.join(caps)} with c·tanh(s/c)" if caps else ""
    return (
        f"- {r.slug}, a scaled embedding: each token's row of W_E is multiplied by √d_model = {np.sqrt(cfg.d_model):.3g} "
        "before the first block, so the residual stream starts √d_model times the size of W_E's rows"
        f"{capped}; {len(cfg.local_layers)} of its {cfg.n_layers} layers attend within a window of "
        f"{cfg.window_size} positions, the others to every earlier position."
        if cfg.local_layers
        else f"{capped}; every layer attends to every earlier position."
    )


def model_differences(r: ModelStudy) -> list[str]:
    """The bullets of "What each model cannot have" for one model normalised by RMSNorm; [] for a LayerNorm model."""
    a = r.arch
    if a.norm != "RMSNorm":
        return []
    lines = [mean_direction(r)]
    if a.post_norms:
        lines.append(post_norms(r))
    if a.qk_norm:
        lines.append(
            f"- {r.slug}, q and k normalised {a.qk_norm} (q_norm, k_norm): their gains scale the queries and keys, "
            "not the residual, and are left as trained."
        )
    if not a.position_embedding:
        row = "its row of W_E times √d_model" if r.family.startswith("Gemma") else "its row of W_E alone"
        lines.append(
            f"- {r.slug}, no W_pos: positions are rotations of q and k (rotary), so nothing is added to the token's "
            f"embedding and layer 0's resid_pre is {row}."
        )
    if a.n_kv_heads < a.n_heads:
        group = a.n_heads // a.n_kv_heads
        lines.append(
            f"- {r.slug}, grouped key-value heads: {a.n_kv_heads} key-value head{'s' * (a.n_kv_heads > 1)} for {a.n_heads} "
            "query heads; query "
            f"head h reads W_V[h // {group}], so ‖W_OV[h]‖ = ‖W_V[h // {group}] W_O[h]‖ is per query head, the {group} "
            "heads of each group sharing one W_V (figures 8 and 15, the weight tables)."
        )
    if r.nonlinearity in measures.GATED:
        lines.append(
            f"- {r.slug}, figure 12 counts gates: a gated MLP ({r.nonlinearity}) writes act(g)·(x @ W_in) with "
            "g = x @ W_gate, and no single pre-activation says whether a neuron is on. Figure 12 gives the gate > 0 "
            f"fraction (hook_pre is the gate; {measures.GATED[r.nonlinearity]}(g) > 0 iff g > 0), not the GELU or ReLU models' "
            "active fraction."
        )
    if r.family.startswith("Gemma"):
        lines.append(gemma(r))
    bos_id, bos = r.bos
    if r.family.startswith("Qwen"):
        lines.append(
            f"- {r.slug}, no BOS token of its own: Qwen's tokenizer puts nothing before a text. The study starts every "
            f"prompt with config.json's bos_token_id, `{bos}` (id {bos_id}), the token that ends a document, so its "
            "position 0 is that token, as in GPT-2."
        )
    return lines


def bos_section(results: list[ModelStudy]) -> list[str]:
    """The first position's massive activation, per model: ‖x_BOS‖ over the median ‖x‖ of ordinary positions."""
    lines = [
        "## The BOS position",
        "",
        "‖resid_post‖ at position 0 (BOS) over the median ‖resid_post‖ of the ordinary positions (position ≥ 1), per "
        "layer; the median read from figure 1's histogram (bins 1.2% wide).",
        "",
    ]
    for r in results:
        ratio = r.act.bos_ratio()
        bos_id, bos = r.bos
        line = f"- **{r.slug}** (`{bos}`, id {bos_id}): ×{number(ratio[-1])} at the last layer (layer {r.cfg.n_layers - 1})"
        finite = np.isfinite(ratio)
        if finite.any():
            peak = int(np.argmax(np.where(finite, ratio, -np.inf)))
            over = "" if finite.all() else f" of the finite layers ({rates.layer_list(np.flatnonzero(finite).tolist())})"
            line += f"; largest{over} at layer {peak}, ×{number(ratio[peak])}"
        lines.append(line + ".")
    return [*lines, ""]
