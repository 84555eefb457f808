"""The study's outputs: report.md, summary.json and layers.csv, and the figures they show.

Each figure and its caption is drawn in figures.py; this file puts them together for every model.
"""

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import outdir
from analysis import differences, measures, rates
from analysis.inputs import Prompts
from analysis.progress import Progress
from analysis.study import ModelStudy
from analysis.weights_table import SIDE_BY_SIDE, per_layer, side_by_side, weight_decay, weight_growth
from analysis.weights_table import columns as weight_columns

__all__ = ["Inputs", "summary", "weight_decay", "write_outputs"]  # weight_decay: weights_table's, read here too


@dataclass
class Inputs:
    """What went into the forward passes, as the report and summary.json state it."""

    prompts: Prompts
    n_tokens: int  # with one BOS per prompt, as the first model tokenizes them
    truncated: int  # prompts cut to the first model's context
    n_ctx: int

    def sentence(self, n_models: int = 1) -> str:
        """The prompts, and, for one model, its tokens; several models tokenize the prompts each their own way,
        so their counts are given model by model (`model_line`)."""
        p = self.prompts
        how = f" (a uniform sample, seed {p.seed}, of the {p.available} it holds)" if p.seed is not None else ""
        if n_models > 1:
            return f"{len(p.texts)} prompts from {p.path}{how}, each tokenized by each model, with its own BOS first."
        cut = f"; {self.truncated} cut to the model's context of {self.n_ctx} tokens (--truncate)" if self.truncated else ""
        tokens = f"{self.n_tokens} tokens including one BOS per prompt"
        return f"{len(p.texts)} prompts from {p.path}{how}, {tokens}{cut}."


def nonfinite_layers(r: ModelStudy) -> dict[str, str]:
    """Each stream whose mean norm is not finite somewhere (float16 overflows past 65504; NaN weights give NaN),
    with where: {"resid_post": "inf at layer 1; NaN at layers 2–3"}."""
    found = {}
    for stream, values in r.mean.items():
        where = [
            f"{kind} at layer{'s' * (len(layers) > 1)} {rates.layer_list(layers)}"
            for kind, test in (("inf", np.isinf), ("NaN", np.isnan))
            if (layers := np.flatnonzero(test(values)).tolist())
        ]
        if where:
            found[stream] = ", ".join(where)
    return found


def nonfinite_section(results: list[ModelStudy]) -> list[str]:
    """report.md's account of activations that overflowed or went NaN: named by model, stream and layer, in
    place of the rates and figures they would have given."""
    lines = []
    for r in results:
        if found := nonfinite_layers(r):
            streams = "; ".join(f"{stream}: {where}" for stream, where in found.items())
            fix = ""
            if "float16" in str(r.source.get("dtype")):
                fix = " (float16's largest number is 65504: run with --dtype float32 or bfloat16)"
            lines.append(
                f"- **{r.slug}**: mean norms that are not finite{fix}. {streams}. No growth rate is computed from them, "
                "and this model's figures are not drawn."
            )
    return ["## Activations that are not finite", "", *lines, ""] if lines else []


def model_line(r: ModelStudy) -> str:
    s = r.source
    (bos_id, bos), (pad_id, pad) = r.bos, r.pad
    cut = f", {r.truncated} prompt{'s' * (r.truncated != 1)} cut to its context (--truncate)" if r.truncated else ""
    return (
        f"- **{r.name}**: {r.family}, {r.cfg.n_layers} layers, d_model {r.cfg.d_model}, {r.nonlinearity} MLP; prompts "
        f"start with `{bos}` (id {bos_id}), padding is `{pad}` (id {pad_id}); {r.n_tokens} tokens{cut}; "
        f"revision `{s['revision']}`; {s['dtype']}; processed: {r.arch.processing}"
    )


def not_drawn(results: list[ModelStudy], shown: dict) -> list[str]:
    """The figures a model did not get, and why (its block has no resid_mid; the prompts fill its context)."""
    return [
        f"- {r.slug}, figure {int(figure.stem[:2])} ({figure.title}) — {figure.caption}."
        for r in results
        for figure in shown[r.slug]
        if not figure.drawn
    ]


# What figure 12's count is, by measures.nonlinearity.
COUNTED = {
    "ReLU": "with ReLU it is the fraction of neurons whose output is not 0",
    "GELU": "with GELU, which passes small negative values too, the fraction on its near-linear side",
    "SwiGLU": "with SwiGLU, the fraction of gates g = x @ W_gate > 0 (silu(g) > 0 iff g > 0), the output being silu(g) times "
    "a linear term that may be small or negative",
    "GeGLU": "with GeGLU, the fraction of gates g = x @ W_gate > 0, the output being GELU(g) times a linear term",
}


def nonlinearities(results: list[ModelStudy]) -> list[str]:
    """Where models of different MLPs are compared: figure 12's count is not one quantity (measures.nonlinearity)."""
    kinds = sorted({r.nonlinearity for r in results})
    if len(kinds) < 2:
        return []
    by_kind = "; ".join(f"{kind}: {', '.join(r.slug for r in results if r.nonlinearity == kind)}" for kind in kinds)
    return [
        f"Figure 12 counts positive MLP pre-activations (a gated MLP's gates) in every model ({by_kind}), but the count "
        "is not one quantity: "
        + "; ".join(COUNTED[kind] for kind in kinds)
        + ". Each model's figure 12 says which it is; compare the kinds by their trend with depth, not by their level.",
        "",
    ]


def write_report(results: list[ModelStudy], directory: Path, inputs: Inputs, shown: dict) -> None:
    lines = [
        "# Residual stream norms grow exponentially over the forward pass: reproduction",
        "",
        f"{inputs.sentence(len(results))} Averages exclude BOS and padding. {differences.processing_sentence(results)}"
        f"{processes_sentence(results)}",
        "",
    ]
    lines += [model_line(r) for r in results] + [""]
    missing, kinds = not_drawn(results, shown), nonlinearities(results)
    missing += [line for r in results for line in differences.model_differences(r)]
    if missing or kinds:
        lines += ["## What each model cannot have", ""]
        lines += [*missing, ""] if missing else []
        lines += kinds
    lines += nonfinite_section(results)
    figure_3 = "![figure 3](03-mean-norm-by-model.png)"
    if not any(r.rates["fit_rate"] for r in results):
        figure_3 = "Not drawn: no model has a rate."
    lines += ["## 3. Mean norm by layer, every model", "", figure_3, ""]
    lines += [rates.growth_sentence(r.slug, r.rates, r.cfg.n_layers) + " " for r in results] + [""]
    lines += differences.bos_section(results)
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
            "norm": r.arch.norm,
            "processed": r.arch.processing,
            "mean_norm": {s: r.mean[s].tolist() for s in r.mean},
            "bos_norm": {s: r.act.bos(s).tolist() for s in r.mean},
            "bos_over_median_resid_post": r.act.bos_ratio().tolist(),
            "growth": {"hook": "resid_post"} | {k: v for k, v in r.rates.items() if k != "fit_intercept"},
            active_key(r): r.act.mean("active").tolist(),
            "tokens": r.n_tokens,
            "truncated": r.truncated,
            "weight_decay_published": weight_decay(r),
            "weights_growth_per_layer": weight_growth(r),
            "appendix1": {"violations": a["violations"], "worst_excess": a["worst_excess"]},
            "padding": None if r.padding is None else {k: v.tolist() for k, v in r.padding.items()},
        }
        if r.centred:  # RMSNorm models: ‖x − mean(x)‖ beside ‖x‖
            centred_growth = rates.growth_rate(r.centred["resid_post"], *fit_span(r))
            models[r.name] |= {
                "centred_norm": {s: v.tolist() for s, v in r.centred.items()},
                "bos_centred_norm": {s: r.act.bos(f"centred_{s}").tolist() for s in r.centred},
                "centred_growth": {"hook": "resid_post"} | {k: v for k, v in centred_growth.items() if k != "fit_intercept"},
            }
    n_prompts = len(inputs.prompts.texts)
    found = {
        "models": models,
        "prompts": n_prompts,
        "tokens": inputs.n_tokens,  # as the first model tokenizes the prompts; each model's own is under "models"
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


def summary_json(found: dict) -> str:
    """summary.json's text: JSON always (NaN and Infinity are not JSON). A number that is not finite is written
    as null, and "nonfinite" says which, by the path of its key: {"models.gpt2.mean_norm.resid_post": "inf at
    layer 1; NaN at layers 2–3"}."""
    nonfinite = {}

    def finite(value, path: str):
        if isinstance(value, dict):
            return {key: finite(item, f"{path}.{key}" if path else str(key)) for key, item in value.items()}
        if isinstance(value, list | tuple):
            items = [finite(item, f"{path}[{i}]") for i, item in enumerate(value)]
            bad = [i for i, item in enumerate(value) if isinstance(item, float) and not np.isfinite(item)]
            if bad and path not in nonfinite:
                kinds = {kind: [i for i in bad if test(value[i])] for kind, test in (("inf", np.isinf), ("NaN", np.isnan))}
                nonfinite[path] = "; ".join(f"{k} at index {rates.layer_list(where)}" for k, where in kinds.items() if where)
                for i in bad:
                    nonfinite.pop(f"{path}[{i}]", None)
            return items
        if isinstance(value, float) and not np.isfinite(value):
            nonfinite[path] = "NaN" if np.isnan(value) else "inf"
            return None
        return value

    written = finite(found, "")
    if nonfinite:
        written["nonfinite"] = {"written as": "null", **nonfinite}
    return json.dumps(written, indent=2, allow_nan=False) + "\n"


def processes_sentence(results: list[ModelStudy]) -> str:
    """Under torchrun, how the forward passes were shared; "" for one process."""
    if results[0].prompts_per_rank is None:
        return ""
    shares = "; ".join(f"{r.slug} " + ", ".join(map(str, r.prompts_per_rank)) for r in results)
    return (
        f" Run as {len(results[0].prompts_per_rank)} processes (torchrun), each a share of the batches, their sums "
        f"added up; prompts per rank: {shares}."
    )


def active_key(r: ModelStudy) -> str:
    """Figure 12's count in summary.json and layers.csv: named as what it counts (measures.nonlinearity)."""
    return "mlp_gate_positive_fraction" if r.nonlinearity in measures.GATED else "mlp_active_fraction"


def fit_span(r: ModelStudy) -> tuple[int, int]:
    return r.rates["first_layer"], r.rates["last_layer"]


def layer_rows(r: ModelStudy) -> list[dict]:
    act, w, a = r.act, r.weight_stats, r.appendix
    columns = {f"mean_{s}": r.mean[s] for s in r.mean}
    columns |= {f"rms_{s}": act.rms(s) for s in r.mean}
    columns |= {f"bos_{s}": act.bos(s) for s in r.mean}
    columns |= {f"mean_centred_{s}": v for s, v in r.centred.items()}
    columns |= {
        "bos_over_median_resid_post": act.bos_ratio(),
        active_key(r): act.mean("active"),
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
        if nonfinite_layers(r):  # named in report.md instead (nonfinite_section)
            shown[r.slug] = []
            continue
        log(f"{r.name}: figures")
        with outdir.writing(directory / r.slug) as path:
            path.mkdir()
        shown[r.slug] = sorted(figures.write(r, directory / r.slug), key=lambda figure: figure.stem)
    measured = {r.slug: {"mean_norm": r.mean["resid_post"], "growth": r.rates} for r in results if r.rates["fit_rate"]}
    if measured:
        plots.save(plots.models_mean_norm(measured), directory, "03-mean-norm-by-model")
    if len(results) > 1:  # one model's weights are figures 8, 11 and 13; this one sets models side by side
        plots.save(
            plots.per_layer_by_run(
                {
                    SIDE_BY_SIDE[key][0]: {r.slug: per_layer(r, key) for r in results if key in r.weight_stats}
                    for key in weight_columns(results)
                },
                "Where the growth is stored: the norms' gains and weight norms by depth, every model",
                legend="model",
                units={title: unit for title, unit in SIDE_BY_SIDE.values()},
                by_depth=True,
            ),
            directory,
            "16-weights-by-model",
        )
    with outdir.writing(directory / "summary.json") as path:
        path.write_text(summary_json(summary(results, inputs)))
    rows = [row for r in results for row in layer_rows(r)]
    with outdir.writing(directory / "layers.csv") as path, open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
        writer.writeheader()
        writer.writerows(rows)
    write_report(results, directory, inputs, shown)
