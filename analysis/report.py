"""The study's outputs: report.md, summary.json and layers.csv, and the figures they show.

Each figure and its caption is drawn in figures.py; this file puts them together for every model.
"""

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import outdir
from analysis import engine, rates
from analysis.inputs import Prompts
from analysis.progress import Progress
from analysis.study import ModelStudy


@dataclass
class Inputs:
    """What went into the forward passes, as the report and summary.json state it."""

    prompts: Prompts
    n_tokens: int  # with one BOS per prompt, as the first model tokenizes them
    truncated: int  # prompts cut to the first model's context
    n_ctx: int

    def sentence(self) -> str:
        p = self.prompts
        how = f" (a uniform sample, seed {p.seed}, of the {p.available} it holds)" if p.seed is not None else ""
        cut = f"; {self.truncated} cut to the model's context of {self.n_ctx} tokens (--truncate)" if self.truncated else ""
        tokens = f"{self.n_tokens} tokens including one BOS per prompt (each model's own, listed below)"
        return f"{len(p.texts)} prompts from {p.path}{how}, {tokens}{cut}."


# The weight decay each released family was trained with, by hub repository (from each family's paper and
# training configs; the models' files do not record it). A local directory or another repository: unknown.
PUBLISHED_WEIGHT_DECAY = {
    "EleutherAI/pythia-": "0.01",
    "facebook/opt-": "0.1",
    "EleutherAI/gpt-neo-": "0.1",
    "openai-community/gpt2": "not published",
    "distilbert/distilgpt2": "not published",
}

# The weight measures set side by side across models, by weight_stats key, with their heading: the gains and
# matrices as trained, and the matrices as the study reads them (the gains folded in, writing weights centred).
SIDE_BY_SIDE = {
    "ln1_gain_rms": "ln1 gain (RMS)",
    "ln2_gain_rms": "ln2 gain (RMS)",
    "W_OV_unfolded": "‖W_OV‖ as trained",
    "W_OV_frobenius": "‖W_OV‖ folded",
    "W_in_unfolded": "‖W_in‖ as trained",
    "W_in_norm": "‖W_in‖ folded",
    "W_out_unfolded": "‖W_out‖ as trained",
    "W_out_norm": "‖W_out‖ centred",
}


def weight_decay(r: ModelStudy) -> str:
    repo = r.source.get("repo") or ""
    return next((decay for prefix, decay in PUBLISHED_WEIGHT_DECAY.items() if repo.startswith(prefix)), "unknown")


def per_layer(r: ModelStudy, key: str) -> np.ndarray:
    """A weight measure per layer: W_OV's, given per head, as the mean over heads."""
    values = r.weight_stats[key]
    return values.mean(1) if values.ndim == 2 else values


def weight_growth(r: ModelStudy) -> dict[str, float]:
    """Each SIDE_BY_SIDE measure's least-squares growth per layer over the model's fit layers: a measure that
    grows ×g per layer carries that much of the residual's growth; where the as-trained matrix stays flat and
    its folded form grows, the growth is stored in the LayerNorm gain."""
    g = r.rates
    return {key: rates.growth_rate(per_layer(r, key), g["first_layer"], g["last_layer"])["fit_rate"] for key in SIDE_BY_SIDE}


def model_line(r: ModelStudy) -> str:
    s = r.source
    (bos_id, bos), (pad_id, pad) = r.bos, r.pad
    return (
        f"- **{r.name}**: {r.family}, {r.cfg.n_layers} layers, d_model {r.cfg.d_model}, {r.nonlinearity} MLP; prompts "
        f"start with `{bos}` (id {bos_id}), padding is `{pad}` (id {pad_id}); revision `{s['revision']}`; {s['dtype']}"
    )


def cannot_have(results: list[ModelStudy], shown: dict) -> list[str]:
    """The report's list of what each model cannot have, and why; [] when every model has every figure."""
    lines = []
    for r in results:
        for figure in shown[r.slug]:
            if not figure.drawn:
                lines.append(f"- {r.slug} has no figure {int(figure.stem[:2])} ({figure.title}): {figure.caption}.")
    kinds = {r.nonlinearity for r in results}
    if len(kinds) > 1:  # measures.nonlinearity
        by_kind = "; ".join(f"{kind}: {', '.join(r.slug for r in results if r.nonlinearity == kind)}" for kind in sorted(kinds))
        lines.append(
            f"- Figure 12 counts positive MLP pre-activations in every model ({by_kind}), but the count is not one "
            "quantity: with ReLU it is the fraction of neurons whose output is not 0; with GELU, which passes small "
            "negative values too, the fraction on its near-linear side. Each model's figure 12 says which it is; "
            "compare the two kinds by their trend with depth, not by their level."
        )
    return lines


def side_by_side(results: list[ModelStudy]) -> list[str]:
    """The weight measures across models: where each model stores its growth (the post's open question about
    weight decay: Pythia trained with 0.01, OPT and GPT-Neo with 0.1)."""
    lines = [
        "## Where the growth is stored: the weights side by side",
        "",
        "Least-squares growth per layer over each model's fit layers (×1 = flat). *As trained* is the released "
        "weights; *folded* is what the study reads, the LayerNorm gain folded into W_OV and W_in and the writing "
        "weights centred. Where a matrix as trained stays flat but its folded form grows, the growth is stored in "
        "the LayerNorm gain. Weight decay is the one each family's paper states for its released models.",
        "",
        "| model | weight decay | ‖resid_post‖ | " + " | ".join(SIDE_BY_SIDE.values()) + " |",
        "|---|---|---:|" + "---:|" * len(SIDE_BY_SIDE),
    ]
    for r in results:
        fits = weight_growth(r)
        cells = " | ".join(f"×{fits[key]:.3f}" for key in SIDE_BY_SIDE)
        lines.append(f"| {r.slug} | {weight_decay(r)} | ×{r.rates['fit_rate']:.3f} | {cells} |")
    lines += [
        "",
        "The same measures at the first and the last layer:",
        "",
        "| model | " + " | ".join(SIDE_BY_SIDE.values()) + " |",
        "|---|" + "---:|" * len(SIDE_BY_SIDE),
    ]
    for r in results:
        ends = (f"{per_layer(r, key)[0]:.3g} → {per_layer(r, key)[-1]:.3g}" for key in SIDE_BY_SIDE)
        lines.append(f"| {r.slug} | " + " | ".join(ends) + " |")
    if len(results) > 1:
        lines += ["", "![the weights by depth, every model](16-weights-by-model.png)"]
    return lines + [""]


def write_report(results: list[ModelStudy], directory: Path, inputs: Inputs, shown: dict) -> None:
    lines = [
        "# Residual stream norms grow exponentially over the forward pass: reproduction",
        "",
        f"{inputs.sentence()} Averages exclude BOS and padding. Weights processed as in the study (LayerNorm folded, "
        f"writing weights centred).{processes_sentence(results)}",
        "",
    ]
    lines += [model_line(r) for r in results] + [""]
    missing = cannot_have(results, shown)
    if missing:
        lines += ["## What each model cannot have", "", *missing, ""]
    lines += ["## 3. Mean norm by layer, every model", "", "![figure 3](03-mean-norm-by-model.png)", ""]
    lines += [rates.growth_sentence(r.slug, r.rates, r.cfg.n_layers) + " " for r in results] + [""]
    lines += side_by_side(results)
    for r in results:
        lines += [f"# {r.slug}", ""]
        for figure in shown[r.slug]:
            lines += [f"## {int(figure.stem[:2])}. {figure.title}", ""]
            if figure.drawn:
                lines += [f"![{figure.title}]({r.slug}/{figure.stem}.png)", "", figure.caption, ""]
            else:
                lines += [f"Not drawn for {r.slug}: {figure.caption}.", ""]
    with outdir.writing(directory / "report.md") as path:
        path.write_text("\n".join(lines), encoding="utf-8")


def summary(results: list[ModelStudy], inputs: Inputs) -> dict:
    models = {}
    for r in results:
        a = r.appendix
        models[r.name] = {
            "family": r.family,
            "n_layers": r.cfg.n_layers,
            "d_model": r.cfg.d_model,
            "nonlinearity": r.nonlinearity,
            "bos": {"id": r.bos[0], "text": r.bos[1]},
            "pad": {"id": r.pad[0], "text": r.pad[1]},
            "revision": r.source["revision"],
            "source": r.source,
            "mean_norm": {s: r.mean[s].tolist() for s in r.mean},
            "bos_norm": {s: r.act.bos(s).tolist() for s in r.mean},
            "growth": {"hook": "resid_post"} | {k: v for k, v in r.rates.items() if k != "fit_intercept"},
            "mlp_active_fraction": r.act.mean("active").tolist(),
            "weight_decay_published": weight_decay(r),
            "weights_growth_per_layer": weight_growth(r),
            "appendix1": {"violations": a["violations"], "worst_excess": a["worst_excess"]},
            "padding": None if r.padding is None else {k: v.tolist() for k, v in r.padding.items()},
        }
    n_prompts = len(inputs.prompts.texts)
    found = {
        "models": models,
        "prompts": n_prompts,
        "tokens": inputs.n_tokens,
        "tokens_averaged": inputs.n_tokens - n_prompts,
        "prompts_file": str(inputs.prompts.path),
        "prompts_available": inputs.prompts.available,
        "sample_seed": inputs.prompts.seed,
        "truncated": inputs.truncated,
    }
    if results[0].prompts_per_rank is not None:  # under torchrun; one process has no such key
        shares = {r.name: r.prompts_per_rank for r in results}  # each model has its own batches, so its own shares
        found["distributed"] = {"world_size": len(results[0].prompts_per_rank), "prompts_per_rank": shares}
    return found


def processes_sentence(results: list[ModelStudy]) -> str:
    """Under torchrun, how the forward passes were shared; "" for one process."""
    if results[0].prompts_per_rank is None:
        return ""
    shares = "; ".join(f"{r.slug} " + ", ".join(map(str, r.prompts_per_rank)) for r in results)
    return (
        f" Run as {len(results[0].prompts_per_rank)} processes (torchrun), each a share of the batches, their sums "
        f"added up; prompts per rank: {shares}."
    )


def layer_rows(r: ModelStudy) -> list[dict]:
    act, w, a = r.act, r.weight_stats, r.appendix
    columns = {f"mean_{s}": r.mean[s] for s in r.mean}
    columns |= {f"rms_{s}": act.rms(s) for s in r.mean}
    columns |= {f"bos_{s}": act.bos(s) for s in r.mean}
    columns |= {
        "mlp_active_fraction": act.mean("active"),
        "appendix1_growth_minus_1": a["growth_minus_1"],
        "appendix1_bound": a["bound"],
    }
    columns |= {"W_OV_frobenius_mean": w["W_OV_frobenius"].mean(1), "W_OV_mean_Wx_mean": w["W_OV_mean_Wx"].mean(1)}
    columns |= {key: value for key, value in w.items() if np.ndim(value) == 1}
    if r.padding is not None:
        columns |= {f"padding_batch_{k}_resid_post": v for k, v in r.padding.items()}
    return [{"model": r.name, "layer": l} | {k: float(v[l]) for k, v in columns.items()} for l in range(r.cfg.n_layers)]


def write_outputs(results: list[ModelStudy], directory: Path, inputs: Inputs, log: Progress) -> None:
    # matplotlib is imported here, once the models are gone: its 30 MB would otherwise sit beside the
    # weights through the forward passes, where the study's peak memory is.
    from analysis import figures, plots

    shown = {}
    for r in results:
        log(f"{r.name}: figures")
        with outdir.writing(directory / r.slug) as path:
            path.mkdir()
        # matplotlib draws on one core: where there are two, a forked process draws every other figure meanwhile.
        # Measured at gpt2-medium shape, two runs each, alternating: from the first figure to the report
        # written 1.9–2.2 s so, against 3.3–4.2 s one after the other.
        odd, even = engine.two_at_once(
            lambda r=r: figures.write(r, directory / r.slug, figures.FIGURES[1::2]),
            lambda r=r: figures.write(r, directory / r.slug, figures.FIGURES[0::2]),
        )
        shown[r.slug] = sorted(odd + even, key=lambda figure: figure.stem)
    plots.save(
        plots.models_mean_norm({r.slug: {"mean_norm": r.mean["resid_post"], "growth": r.rates} for r in results}),
        directory,
        "03-mean-norm-by-model",
    )
    if len(results) > 1:  # one model's weights are figures 8, 11 and 13; this one sets models side by side
        plots.save(
            plots.weights_by_depth(
                {title: {r.slug: per_layer(r, key) for r in results} for key, title in SIDE_BY_SIDE.items()},
                "Where the growth is stored: LayerNorm gains and weight norms by depth, every model",
            ),
            directory,
            "16-weights-by-model",
        )
    with outdir.writing(directory / "summary.json") as path:
        path.write_text(json.dumps(summary(results, inputs), indent=2) + "\n")
    rows = [row for r in results for row in layer_rows(r)]
    with outdir.writing(directory / "layers.csv") as path, open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
        writer.writeheader()
        writer.writerows(rows)
    write_report(results, directory, inputs, shown)
