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
        tokens = f"{self.n_tokens} tokens including one BOS (<|endoftext|>) per prompt"
        return f"{len(p.texts)} prompts from {p.path}{how}, {tokens}{cut}."


def write_report(results: list[ModelStudy], directory: Path, inputs: Inputs, shown: dict) -> None:
    lines = [
        "# Residual stream norms grow exponentially over the forward pass: reproduction",
        "",
        f"{inputs.sentence()} Averages exclude BOS and padding. Weights processed as in the study (LayerNorm folded, "
        f"writing weights centred).{processes_sentence(results)}",
        "",
    ]
    for r in results:
        s = r.source
        lines.append(
            f"- **{r.name}**: {r.cfg.n_layers} layers, d_model {r.cfg.d_model}; revision `{s['revision']}`; {s['dtype']}"
        )
    lines += ["", "## 3. Mean norm by layer, every model", "", "![figure 3](03-mean-norm-by-model.png)", ""]
    lines += [rates.growth_sentence(r.slug, r.rates, r.cfg.n_layers) + " " for r in results] + [""]
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
            "n_layers": r.cfg.n_layers,
            "d_model": r.cfg.d_model,
            "revision": r.source["revision"],
            "source": r.source,
            "mean_norm": {s: r.mean[s].tolist() for s in r.mean},
            "bos_norm": {s: r.act.bos(s).tolist() for s in r.mean},
            "growth": {"hook": "resid_post"} | {k: v for k, v in r.rates.items() if k != "fit_intercept"},
            "mlp_active_fraction": r.act.mean("active").tolist(),
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
    with outdir.writing(directory / "summary.json") as path:
        path.write_text(json.dumps(summary(results, inputs), indent=2) + "\n")
    rows = [row for r in results for row in layer_rows(r)]
    with outdir.writing(directory / "layers.csv") as path, open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
        writer.writeheader()
        writer.writerows(rows)
    write_report(results, directory, inputs, shown)
