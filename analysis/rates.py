"""Growth rates of per-layer quantities, and when growth counts as steady and exponential.

Two rates, under two names everywhere (growth_rate's keys, summary.json, layers.csv, captions):
- "rate", the end-point rate, the post's formula: (n[last] / n[first]) ** (1 / (last − first));
- "fit_rate", the least-squares rate: exp(slope) of the line fitted through log n over the same layers,
  with its R².
The end-point rate reads two layers only; the fit reads them all and says, through R², whether one
exponential describes them.
"""

import math

import numpy as np


def default_fit_layers(n_layers: int) -> tuple[int, int]:
    """The study fits GPT-2-XL's layers 5..41 of 48; other depths get the same fractions of their depth."""
    if n_layers < 2:
        raise ValueError(f"a growth rate needs at least 2 layers; this model has {n_layers}")
    last = min(round(41 / 48 * n_layers), n_layers - 1)
    return min(round(5 / 48 * n_layers), last - 1), last


def unmeasurable(n: np.ndarray, first: int, last: int) -> str | None:
    """Why values n over layers first..last give no growth rate (a log needs finite positive numbers), or None.
    An overflow (inf, float16's limit is 65504) or a NaN gives no rate at all, never ×nan or an R² of 1."""
    layers = range(first, last + 1)
    found = {
        kind: bad
        for kind, test in (("inf", np.isinf), ("NaN", np.isnan), ("not positive", lambda v: v <= 0))
        if (bad := [layer for layer in layers if test(n[layer])])
    }
    return "; ".join(f"{kind} at layer{'s' * (len(bad) > 1)} {layer_list(bad)}" for kind, bad in found.items()) or None


def layer_list(layers: list[int]) -> str:
    """[3, 4, 5, 9] as "3–5, 9"."""
    runs: list[list[int]] = []
    for layer in layers:
        if runs and layer == runs[-1][-1] + 1:
            runs[-1].append(layer)
        else:
            runs.append([layer])
    return ", ".join(f"{run[0]}–{run[-1]}" if len(run) > 1 else f"{run[0]}" for run in runs)


def endpoint_rate(n: np.ndarray, first: int, last: int) -> float:
    """(n[last] / n[first]) ** (1 / (last − first)): the per-layer factor that takes n[first] to n[last]."""
    return float((n[last] / n[first]) ** (1 / (last - first)))


def growth_rate(values, first: int, last: int) -> dict:
    """Per-layer growth of positive per-layer values n over layers first..last.

    rate: the end-point rate; fit_rate and fit_intercept: exp of the least-squares line's slope and intercept
    through log n, with the fit's r2. rate_first_half and rate_second_half: the end-point rate over each half
    of the range (None under 3 layers). Exponential growth keeps one rate in both halves; a sum of
    independent updates of one size (norm ∝ √l) slows towards 1. Values that are not finite and positive
    over the range (an overflow, a NaN) give every rate as None and "no_rate", a sentence saying why.
    """
    n = np.asarray(values, dtype=np.float64)
    if not 0 <= first < last < len(n):
        raise ValueError(f"fit layers {first}:{last} must satisfy 0 <= first < last <= {len(n) - 1}")
    if reason := unmeasurable(n, first, last):
        none = dict.fromkeys(("rate", "rate_first_half", "rate_second_half", "fit_rate", "fit_intercept", "r2"))
        return {"first_layer": first, "last_layer": last} | none | {"no_rate": reason}
    layers = np.arange(first, last + 1)
    log_n = np.log(n[first : last + 1])
    slope, intercept = np.polyfit(layers, log_n, 1)
    residual = log_n - (slope * layers + intercept)
    total = ((log_n - log_n.mean()) ** 2).sum()
    middle = (first + last) // 2 if last - first >= 2 else None
    return {
        "first_layer": first,
        "last_layer": last,
        "rate": endpoint_rate(n, first, last),
        "rate_first_half": endpoint_rate(n, first, middle) if middle else None,
        "rate_second_half": endpoint_rate(n, middle, last) if middle else None,
        "fit_rate": float(np.exp(slope)),
        "fit_intercept": float(np.exp(intercept)),
        "r2": float(1.0 - (residual**2).sum() / total if total > 0 else 1.0),
    }


# The bar for "steady exponential growth": R² of the least-squares fit, its rate per layer, the share of the
# model's layers the fit spans, and how far apart the two halves' log-rates may be (relative to the larger).
STEADY = {"r2": 0.95, "rate": 1.02, "span": 2 / 3, "halves": 0.25}


def steady_growth(g: dict, n_layers: int) -> dict:
    """Is growth_rate's result g steady exponential growth? Each check of STEADY, and "steady" (all of them):
    fit_rate >= 1.02 with R² >= 0.95 over at least two thirds of the layers, both halves growing, and their
    log-rates within 25% of the larger."""
    if g["fit_rate"] is None:  # no rate (growth_rate's "no_rate" says why): no check passes
        return dict.fromkeys(("r2", "rate", "span", "halves", "steady"), False)
    span = (g["last_layer"] - g["first_layer"] + 1) / n_layers
    halves = [math.log(g[key]) if g[key] else float("nan") for key in ("rate_first_half", "rate_second_half")]
    checks = {
        "r2": g["r2"] >= STEADY["r2"],
        "rate": g["fit_rate"] >= STEADY["rate"],
        "span": span >= STEADY["span"] - 1e-9,
        "halves": bool(min(halves) > 0 and max(halves) - min(halves) <= STEADY["halves"] * max(halves)),
    }
    return checks | {"steady": all(checks.values())}


def growth_sentence(name: str, g: dict, n_layers: int) -> str:
    """What growth_rate's numbers say about mean ‖resid_post‖, and only that; the verdict is steady_growth's."""
    if g["fit_rate"] is None:
        return f"{name}: no growth rate of mean ‖resid_post‖ from layer {g['first_layer']} to {g['last_layer']}: {g['no_rate']}."
    text = (
        f"{name}: mean ‖resid_post‖ grows ×{g['rate']:.4f} per layer from layer {g['first_layer']} to {g['last_layer']} "
        f"(end points; least-squares fit ×{g['fit_rate']:.4f}, R² {g['r2']:.3f})."
    )
    a, b = g["rate_first_half"], g["rate_second_half"]
    if a is None:
        return text
    text += f" By halves of that range: ×{a:.4f} then ×{b:.4f} per layer."
    if abs(g["fit_rate"] - 1) < 0.005:
        return text + " That is no measurable growth."
    if steady_growth(g, n_layers)["steady"]:
        return text + " A steady rate: exponential growth over this range."
    # Compare the halves' log-rates themselves, not their ratio: a half that shrinks (rate < 1) has a
    # negative log-rate, and a ratio would flip the comparison.
    log_a, log_b = math.log(a), math.log(b)
    if log_b < log_a - STEADY["halves"] * abs(log_a):
        text += (
            " The rate falls with depth, so this is not growth at one exponential rate. (For comparison: a sum of l "
            "independent updates of one size grows like √l, whose rate per layer falls towards 1.)"
        )
    elif log_b > log_a + STEADY["halves"] * abs(log_a):
        text += " The rate rises with depth: faster than one exponential."
    else:
        text += f" Not steady by the study's bar (R² ≥ {STEADY['r2']}, ×{STEADY['rate']} per layer or more)."
    return text
