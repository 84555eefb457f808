"""Lesson 3's checkers: the residual-stream study's measures, each against `analysis.measures` (or,
where the package has no function for it, the definition written out here and flagged as such).

    from lessons.check import lesson3 as check
    check.fitted_rate(fitted_rate)
    check.hint("fitted_rate")
"""

from collections.abc import Callable

import numpy as np
import torch

from analysis import measures
from analysis.rates import growth_rate
from analysis.weight_measures import W_OV_frobenius as reference_W_OV_frobenius

from .core import Hints, Mistake, call, compare, pair, passed
from .models import bundled

__all__ = ["Mistake", "W_OV_frobenius", "appendix1", "endpoint_rate", "fitted_rate", "hint", "mean_norm_without_bos", "r_squared"]

hint = Hints(
    {
        "mean_norm_without_bos": [
            "Every (prompt, position) pair but position 0 counts once, however long its prompt.",
            "Drop position 0 of each prompt, put all prompts' positions side by side, then take one mean per layer.",
        ],
        "endpoint_rate": [
            "If n grows by a factor g per layer, how many factors of g lie between layer first and layer last?",
            "n[last] / n[first] is the total growth over those steps; the rate per layer is its root.",
        ],
        "fitted_rate": [
            "Exponential growth n = A · gˡ is a straight line in log n against l: log n = log A + l · log g.",
            "np.polyfit(x, y, 1) returns [slope, intercept]; which of the two is log g?",
            "Fit layers first..last inclusive: a Python slice stops one before its end.",
        ],
        "r_squared": [
            "R² = 1 − (sum of squared residuals) / (sum of squares of y about its mean), for the same line as fitted_rate.",
            "y is log n, not n: the line is fitted to log n, so its R² is about log n.",
        ],
        "W_OV_frobenius": [
            "‖A‖_F is the square root of the sum of A's squared entries; @ on [n_heads, …] tensors works head by head.",
            "Which product maps d_model to d_model: W_V[h] @ W_O[h] or W_O[h] @ W_V[h]?",
        ],
        "appendix1": [
            "g is how much the block multiplied this vector's norm: post over pre.",
            "The triangle inequality bounds ‖post‖ by ‖pre‖ + ‖attn_out‖ + ‖mlp_out‖; divide both sides by ‖pre‖.",
        ],
    },
    solved="lessons/solutions/03-residual-growth.ipynb",
)


def _float64(value) -> torch.Tensor:
    """Numbers from numpy or Python as a float64 tensor (torch.tensor(0.1) would round a Python float to float32)."""
    return torch.as_tensor(np.asarray(value, dtype=np.float64))


def _norms_per_prompt(seed: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.exp(rng.normal(size=(4, n)) * 0.3 + np.arange(4)[:, None] * 0.1) for n in (3, 9, 5)]


def mean_norm_without_bos(fn: Callable) -> None:
    """fn(norms: list of [n_layers, n_pos] arrays, one per prompt, BOS at position 0) → [n_layers]."""
    __tracebackhide__ = True
    norms = _norms_per_prompt()
    expected = measures.mean_over_positions(norms)  # the study's own definition
    mistakes = {
        "BOS is included: leave out position 0 of every prompt": np.concatenate(norms, axis=1).mean(1),
        "a mean of the prompts' means: pool every (prompt, position) pair, so each vector counts once": np.mean(
            [n[:, 1:].mean(1) for n in norms], axis=0
        ),
        "the last position was left out instead of the first (BOS is position 0)": np.concatenate(
            [n[:, :-1] for n in norms], axis=1
        ).mean(1),
    }
    mistakes = {k: _float64(v) for k, v in mistakes.items()}
    got = call("mean_norm_without_bos", fn, norms)
    if np.shape(got) == (len(expected) - 1,):
        raise Mistake(
            "✗ mean_norm_without_bos returned one layer too few: n[1:] drops layer 0, a row; BOS is position 0, n[:, 1:]"
        )
    difference = compare("mean_norm_without_bos", got, _float64(expected), mistakes, rtol=1e-9)
    passed("mean_norm_without_bos", "analysis.measures.mean_over_positions on three prompts of random norms", difference)


def _growth_inputs() -> np.ndarray:
    return 20 * 1.05 ** np.arange(12) * np.exp(np.random.default_rng(7).normal(size=12) * 0.05)


def endpoint_rate(fn: Callable) -> None:
    """fn(mean_norms [n_layers], first, last) → the study's per-layer rate (n[last] / n[first]) ** (1 / (last − first))."""
    __tracebackhide__ = True
    n, first, last = _growth_inputs(), 2, 10
    expected = growth_rate(n, first, last)["rate"]
    mistakes = {
        f"the root is one too deep: from layer {first} to layer {last} are {last - first} steps, not {last - first + 1}": (
            n[last] / n[first]
        )
        ** (1 / (last - first + 1)),
        "the ratio is the total growth: take its (last − first)-th root for the rate per layer": n[last] / n[first],
        "the ratio is upside down: later over earlier, n[last] / n[first]": (n[first] / n[last]) ** (1 / (last - first)),
        "the root was taken as a product: ** (1 / (last − first)) needs its brackets": (n[last] / n[first]) ** 1 / (last - first),
        "n[last] is one layer short (a slice's end is excluded, an index is not): use n[last]": (n[last - 1] / n[first])
        ** (1 / (last - first)),
    }
    mistakes = {k: _float64(v) for k, v in mistakes.items()}
    got = call("endpoint_rate", fn, n, first, last)
    difference = compare("endpoint_rate", got, _float64(expected), mistakes, rtol=1e-9)
    passed("endpoint_rate", "analysis.rates.growth_rate's 'rate'", difference)


def _slope(x, y) -> float:
    return np.polyfit(x, y, 1)[0]


def fitted_rate(fn: Callable) -> None:
    """fn(mean_norms [n_layers], first, last) → exp(slope) of the least-squares line through log(norm) over first..last."""
    __tracebackhide__ = True
    n, first, last = _growth_inputs(), 2, 10
    expected = growth_rate(n, first, last)["fit_rate"]
    layers, y = np.arange(first, last + 1), np.log(n[first : last + 1])
    mistakes = {
        "the line was fitted to the norms, not to log(norm): exponential growth is a straight line in log space": np.exp(
            _slope(layers, n[first : last + 1])
        ),
        "log10 fitted, then exp taken: use the natural log (or 10 ** slope)": np.exp(
            _slope(layers, np.log10(n[first : last + 1]))
        ),
        "fitted over every layer: fit only layers first..last, inclusive": np.exp(_slope(np.arange(len(n)), np.log(n))),
        f"layer {last} was left out: a slice stops before its end, so first..last inclusive is [first : last + 1]": np.exp(
            _slope(np.arange(first, last), np.log(n[first:last]))
        ),
        "the slope itself: the rate per layer is exp(slope)": _slope(layers, y),
        "1 + slope is only the first terms of exp(slope): the rate per layer is exp(slope)": 1 + _slope(layers, y),
        "exp of the intercept: np.polyfit(x, y, 1) returns [slope, intercept], the slope first": np.exp(
            np.polyfit(layers, y, 1)[1]
        ),
        "x and y swapped: np.polyfit(x, y, 1) takes the layers first, then log n": np.exp(_slope(y, layers)),
    }
    mistakes = {k: _float64(v) for k, v in mistakes.items()}
    got = call("fitted_rate", fn, n, first, last)
    difference = compare("fitted_rate", got, _float64(expected), mistakes, rtol=1e-9)
    passed("fitted_rate", "analysis.rates.growth_rate's 'fit_rate'", difference)


def r_squared(fn: Callable) -> None:
    """fn(mean_norms [n_layers], first, last) → R² of that least-squares line through log n over first..last."""
    __tracebackhide__ = True
    n, first, last = _growth_inputs(), 2, 10
    expected = growth_rate(n, first, last)["r2"]
    layers = np.arange(first, last + 1)

    def r2(x, y):
        slope, intercept = np.polyfit(x, y, 1)
        return 1 - ((y - slope * x - intercept) ** 2).sum() / ((y - y.mean()) ** 2).sum()

    y = np.log(n[first : last + 1])
    residuals = ((y - np.polyval(np.polyfit(layers, y, 1), layers)) ** 2).sum()
    mistakes = {
        "R² of a line through the norms: the rate's line goes through log n, so its R² must too": r2(layers, n[first : last + 1]),
        "the total sum of squares is about 0, not about the mean: Σ (y − ȳ)²": 1 - residuals / (y**2).sum(),
        "the ratio itself: R² = 1 − (residual sum of squares) / (total sum of squares)": residuals / ((y - y.mean()) ** 2).sum(),
        "this is r, the correlation: R² is its square": np.sqrt(expected),
        f"layer {last} was left out: first..last inclusive is [first : last + 1]": r2(
            np.arange(first, last), np.log(n[first:last])
        ),
    }
    mistakes = {k: _float64(v) for k, v in mistakes.items()}
    got = call("r_squared", fn, n, first, last)
    difference = compare("r_squared", got, _float64(expected), mistakes, rtol=1e-9)
    passed("r_squared", "analysis.rates.growth_rate's 'r2'", difference)


def W_OV_frobenius(fn: Callable) -> None:
    """fn(W_V [n_heads, d_model, d_head], W_O [n_heads, d_head, d_model]) → ‖W_V[h] @ W_O[h]‖_F per head [n_heads]."""
    __tracebackhide__ = True
    attn = bundled(processed=True).blocks[3].attn
    W_V, W_O = attn.W_V, attn.W_O
    expected = reference_W_OV_frobenius(W_V, W_O)
    products = W_V @ W_O  # [n_heads, d_model, d_model]
    mistakes = {
        "the square root is missing: ‖A‖_F = √(Σ A²)": products.pow(2).sum((1, 2)),
        "‖W_V‖_F · ‖W_O‖_F is only an upper bound on ‖W_V W_O‖_F": W_V.norm(dim=(1, 2)) * W_O.norm(dim=(1, 2)),
        "W_O @ W_V (d_head × d_head) is the other product: W_OV = W_V @ W_O maps d_model to d_model": (W_O @ W_V).norm(
            dim=(1, 2)
        ),
        "the spectral norm (largest singular value) is not the Frobenius norm: ‖A‖_F = √(Σ A²)": torch.linalg.matrix_norm(
            products, ord=2
        ),
    }
    got = call("W_OV_frobenius", fn, W_V, W_O)
    if isinstance(got, torch.Tensor) and got.ndim == 0:
        raise Mistake("✗ W_OV_frobenius returned one number for all heads: take each head's norm over its last two axes")
    difference = compare("W_OV_frobenius", got, expected, mistakes, rtol=1e-4)
    passed("W_OV_frobenius", "analysis.weight_measures.W_OV_frobenius on the processed bundled model's layer 3", difference)


def _block_norms(seed: int = 9) -> tuple[np.ndarray, ...]:
    """Norms of 50 vectors at one layer, made to satisfy x_post = x_pre + attn_out + mlp_out."""
    rng = np.random.default_rng(seed)
    pre, attn, mlp = (rng.normal(size=(50, 16)) * s for s in (3.0, 1.0, 1.5))
    post = pre + attn + mlp
    return tuple(np.linalg.norm(v, axis=-1) for v in (pre, attn, mlp, post))


def appendix1(fn: Callable) -> None:
    """fn(pre, attn_out, mlp_out, post: norms [n]) → (g − 1 [n], bound [n]), with g = ‖post‖ / ‖pre‖."""
    __tracebackhide__ = True
    pre, attn, mlp, post = _block_norms()
    norms = {"resid_pre": pre, "attn_out": attn, "mlp_out": mlp, "resid_post": post}
    g_minus_1, bound = (side(norms) for side in measures.APPENDIX1.values())  # the study's own definition
    got = pair("appendix1", call("appendix1", fn, pre, attn, mlp, post), "(g − 1, bound)")
    g_mistakes = {
        "this is g, not g − 1: subtract 1 from post / pre": post / pre,
        "upside down: g = ‖post‖ / ‖pre‖": pre / post - 1,
    }
    b_mistakes = {
        "the bound is divided by ‖post‖: divide by ‖pre‖, the vector the block started from": (attn + mlp) / post,
        "only one sublayer in the bound: both attn_out and mlp_out are added to the stream": mlp / pre,
        "the bound adds ‖pre‖ too: that is the bound on g, not on g − 1": (pre + attn + mlp) / pre,
    }
    difference = compare("appendix1 (g − 1)", got[0], _float64(g_minus_1), {k: _float64(v) for k, v in g_mistakes.items()})
    bound_got = compare("appendix1 (bound)", got[1], _float64(bound), {k: _float64(v) for k, v in b_mistakes.items()})
    passed("appendix1", "analysis.measures.APPENDIX1 on 50 vectors", max(difference, bound_got))


CHECKERS = [mean_norm_without_bos, endpoint_rate, fitted_rate, r_squared, W_OV_frobenius, appendix1]  # in the lesson's order
