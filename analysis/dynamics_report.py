"""The report of `python -m analysis.dynamics`: tables (steps.csv, layers.csv, summary.json), figures and
report.md, from the checkpoints analysis/over_training.py measured. Plots come from analysis/plots.py."""

import csv
import json
from pathlib import Path

import numpy as np

import outdir
from analysis import plots, rates
from analysis.over_training import WEIGHTS, Run


def layer_fits(run: Run) -> dict[str, float]:
    """Each weight measure's least-squares growth per layer at the final checkpoint, over the fit layers:
    where the residual's growth is stored (a quantity that grows ×r per layer carries that much of it)."""
    g = run.final.growth
    return {
        key: rates.growth_rate(values, g["first_layer"], g["last_layer"])["fit_rate"] for key, values in run.final.weights.items()
    }


def step_rows(run: Run) -> list[dict]:
    rows = []
    for c in run.checkpoints:
        g = c.growth
        rows.append(
            {"run": run.label, "step": c.step, "tokens": c.record.get("tokens"), "val_loss": c.record.get("val_loss")}
            | {k: g[k] for k in ("fit_rate", "r2", "rate", "rate_first_half", "rate_second_half")}
            | {"bos_norm_last_layer": float(c.bos_norm[-1]), "mean_norm_last_layer": float(c.mean_norm[-1])}
            | {"steady": rates.steady_growth(g, run.n_layers)["steady"]}
        )
    return rows


def layer_rows(run: Run) -> list[dict]:
    return [
        {
            "run": run.label,
            "step": c.step,
            "layer": l,
            "mean_resid_post": float(c.mean_norm[l]),
            "bos_resid_post": float(c.bos_norm[l]),
        }
        | {key: float(values[l]) for key, values in c.weights.items()}
        for c in run.checkpoints
        for l in range(run.n_layers)
    ]


def run_summary(run: Run) -> dict:
    hub_revisions = [{"step": c.step, "revision": c.revision, "commit": c.commit} for c in run.checkpoints] if run.repo else None
    return {
        "label": run.label,
        "directory": str(run.directory) if run.directory else None,
        "repo": run.repo,
        "revisions": hub_revisions,
        "command": run.log.get("command"),
        "model": run.log.get("model"),
        "train": run.log.get("train"),
        "device": run.log.get("device"),
        "training_seconds": run.log.get("seconds"),
        "final_step": run.final.step,
        "final_val_loss": run.final.record.get("val_loss"),
        "final_growth": run.final.growth,
        "final_steady": rates.steady_growth(run.final.growth, run.n_layers),
        "weights_growth_per_layer": layer_fits(run),
        "steps": step_rows(run),
    }


def growth_curves(run: Run) -> dict:
    keys = ("fit_rate", "r2", "rate_first_half", "rate_second_half")
    return {"steps": [c.step for c in run.checkpoints]} | {k: [c.growth[k] for c in run.checkpoints] for k in keys}


def write_figures(run: Run, folder: Path) -> list[str]:
    steps = [c.step for c in run.checkpoints]
    names = plots.save(
        plots.norm_by_layer_over_steps(np.stack([c.mean_norm for c in run.checkpoints]), steps, run.label),
        folder,
        "01-mean-norm-by-layer",
    )
    names += plots.save(
        plots.growth_over_steps({run.label: growth_curves(run)}, f"{run.label}: growth of the residual norm over training"),
        folder,
        "02-growth-rate",
    )
    bos = {
        "BOS ‖resid_post‖": np.stack([c.bos_norm for c in run.checkpoints]),
        "mean ‖resid_post‖, BOS excluded": np.stack([c.mean_norm for c in run.checkpoints]),
    }
    names += plots.save(
        plots.per_layer_over_steps(bos, steps, f"{run.label}: BOS and ordinary residual norms by layer over training", ncols=2),
        folder,
        "03-bos-norm",
    )
    panels = {title: np.stack([c.weights[key] for c in run.checkpoints]) for key, title in WEIGHTS.items()}
    names += plots.save(
        plots.per_layer_over_steps(panels, steps, f"{run.label}: weight norms and LayerNorm gains by layer over training"),
        folder,
        "04-weights",
    )
    return names


def write_comparison(runs: list[Run], directory: Path) -> list[str]:
    names = plots.save(
        plots.growth_over_steps({r.label: growth_curves(r) for r in runs}, "Growth of the residual norm over training, by run"),
        directory,
        "runs-growth-rate",
    )
    panels = {"mean ‖resid_post‖ (final)": {r.label: r.final.mean_norm for r in runs}} | {
        title: {r.label: r.final.weights[key] for r in runs} for key, title in WEIGHTS.items() if key != "mlp_random_out"
    }
    names += plots.save(
        plots.per_layer_by_run(panels, "Final checkpoints: the residual norm and where its growth is stored, by layer"),
        directory,
        "runs-final-by-layer",
    )
    return names


def shown(value, spec: str) -> str:
    """A number as the report's tables print it, or – where it is not known (a hub revision has no training record)."""
    return "–" if value is None else format(value, spec)


def halves(g: dict) -> str:
    """The end-point rates of the fit range's two halves, or – where the range is too short to halve (under 3
    layers: a 2- or 3-layer model's default fit spans 2)."""
    if g["rate_first_half"] is None:
        return "–"
    return f"×{g['rate_first_half']:.3f} then ×{g['rate_second_half']:.3f}"


def report(runs: list[Run], figures: dict[str, list[str]]) -> str:
    lines = ["# Residual-norm growth over training", ""]
    lines += [
        "Mean ‖resid_post‖ (BOS excluded) of the processed model over the study's prompts at every checkpoint, fitted "
        "with an exponential over the study's fit layers (5–41 of 48, scaled to depth). *Steady* means: R² ≥ 0.95, "
        "rate ≥ 1.02 per layer over at least two thirds of the layers, and the two halves' log-rates within 25%.",
        "",
        "| run | layers | steps | tokens | final val loss | rate ×/layer | R² | halves | steady |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in runs:
        g, verdict = r.final.growth, rates.steady_growth(r.final.growth, r.n_layers)
        failed = ", ".join(k for k, ok in verdict.items() if not ok and k != "steady")
        lines.append(
            f"| {r.label} | {r.n_layers} | {r.final.step:,} | {shown(r.final.record.get('tokens'), ',')} | "
            f"{shown(r.final.record.get('val_loss'), '.3f')} | ×{g['fit_rate']:.4f} | {g['r2']:.3f} | "
            f"{halves(g)} | {'yes' if verdict['steady'] else 'no (' + failed + ')'} |"
        )
    lines += ["", "## Where the growth is stored (final checkpoints)", ""]
    lines += [
        "Least-squares growth per layer of each weight measure over the fit layers. A LayerNorm's gain multiplies "
        "what its own block's sublayer reads (ln1's the attention, ln2's the MLP); folded into W_OV and W_in, it is "
        "part of the folded norms.",
        "",
        "| run | " + " | ".join(WEIGHTS[k] for k in WEIGHTS) + " |",
        "|---|" + "---:|" * len(WEIGHTS),
    ]
    for r in runs:
        fits = layer_fits(r)
        lines.append(f"| {r.label} | " + " | ".join(f"×{fits[k]:.4f}" for k in WEIGHTS) + " |")
    if len(runs) > 1:
        lines += ["", "![growth by run](runs-growth-rate.png)", "", "![final by layer](runs-final-by-layer.png)"]
    for r in runs:
        lines += ["", f"## {r.label}", ""]
        if r.log.get("command"):
            lines += [f"`{r.log['command']}`" + (f" on {r.log['device']}" if r.log.get("device") else ""), ""]
        if r.repo:
            lines += [
                f"Revisions {', '.join(c.revision for c in r.checkpoints)} of the hub repository {r.repo} (their commits "
                "are in summary.json). Tokens and validation loss come from a training run's own record, which a hub "
                "revision does not carry: –.",
                "",
            ]
        lines += ["| step | tokens | val loss | rate ×/layer | R² | halves | BOS ‖resid_post‖, last layer | mean, last layer |"]
        lines += ["|---:|---:|---:|---:|---:|---|---:|---:|"]
        for row in step_rows(r):
            lines.append(
                f"| {row['step']:,} | {shown(row['tokens'], ',')} | {shown(row['val_loss'], '.3f')} | "
                f"×{row['fit_rate']:.4f} | {row['r2']:.3f} | "
                f"{halves(row)} | {row['bos_norm_last_layer']:.1f} | "
                f"{row['mean_norm_last_layer']:.1f} |"
            )
        lines += [""] + [f"![{name}]({r.label}/{name})" for name in figures[r.label] if name.endswith(".png")]
    return "\n".join(lines) + "\n"


def write_outputs(runs: list[Run], directory: Path) -> None:
    figures = {}
    for r in runs:
        with outdir.writing(directory / r.label) as path:
            path.mkdir()
        figures[r.label] = write_figures(r, directory / r.label)
    if len(runs) > 1:
        write_comparison(runs, directory)
    with outdir.writing(directory / "summary.json") as path:
        path.write_text(json.dumps({"runs": [run_summary(r) for r in runs]}, indent=2) + "\n")
    for name, rows in (
        ("steps.csv", [row for r in runs for row in step_rows(r)]),
        ("layers.csv", [row for r in runs for row in layer_rows(r)]),
    ):
        with outdir.writing(directory / name) as path, open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    with outdir.writing(directory / "report.md") as path:
        path.write_text(report(runs, figures))
