"""Checkers for the lessons' exercises. Each runs the student's function on random inputs and on the
bundled model, against minigpt's own code (which the tests prove equal to Hugging Face), and when the
answer is wrong says in words what the error looks like.

How a wrong answer is diagnosed: the checker also computes the answers of the usual mistakes (variance
with N − 1, the erf GELU, no causal mask, …), each from the reference with one thing changed, and names
the one the student's output matches. Failing that, it describes the difference: wrong shape, off by a
constant factor, right at some positions and wrong at others, or just how large it is.

    from lessons import check
    check.layer_norm(layer_norm)      # prints ✓ …, or raises Mistake("✗ layer_norm: … (hint)")
"""

import copy
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

import weights
from analysis import measures, rates, weight_measures
from minigpt import GPT2, Config, gelu_new
from minigpt.model import LayerNorm


class Mistake(AssertionError):
    """The student's answer is wrong; the message says how, and what to look at."""


# ---------------------------------------------------------------------------------------------
# Comparing an answer with the reference


def _as_tensor(name: str, value, like: torch.Tensor) -> torch.Tensor:
    __tracebackhide__ = True
    if isinstance(value, np.ndarray | float | int | np.floating):
        value = torch.as_tensor(np.asarray(value, dtype=np.float64))
    if not isinstance(value, torch.Tensor):
        raise Mistake(f"✗ {name} returned {type(value).__name__}; expected a tensor of shape {list(like.shape)}")
    if value.shape != like.shape:
        raise Mistake(f"✗ {name} returned shape {list(value.shape)}; expected {list(like.shape)}")
    return value.detach().double()


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> bool:
    scale = b.abs().max().clamp(min=1e-12)
    return bool(((a - b).abs().max() / scale) <= rtol)


def compare(
    name: str,
    got,
    expected: torch.Tensor,
    mistakes: dict[str, torch.Tensor] | None = None,
    *,
    rtol: float = 1e-5,
    pos_axis: int | None = None,
    advice: str = "",
) -> float:
    """Raise Mistake naming what is wrong with `got`, or return the largest difference from `expected`.

    mistakes: {hint: what that mistake would have returned}. pos_axis: the axis of positions, if any,
    so that the message can say which positions are right. advice: added to a message that names no mistake.
    """
    __tracebackhide__ = True
    expected = expected.detach().double()
    got = _as_tensor(name, got, expected)
    difference = float((got - expected).abs().max())
    if not torch.isfinite(got).all():
        raise Mistake(f"✗ {name} returned NaN or infinite values: a division by zero, or -inf where a 0 should be?")
    if _close(got, expected, rtol):
        return difference
    for hint, answer in (mistakes or {}).items():
        if answer.shape == expected.shape and _close(got, answer.detach().double(), rtol):
            raise Mistake(f"✗ {name}: {hint}")
    ratio = got / torch.where(expected.abs() > 1e-9, expected, torch.nan)
    ratio = ratio[torch.isfinite(ratio)]
    if len(ratio) and float(ratio.std() / ratio.mean().abs()) < 1e-4:
        raise Mistake(
            f"✗ {name} is off by a constant factor of {float(ratio.mean()):.4g}: a scale, or a missing ½, √ or 1/n?" + advice
        )
    if pos_axis is not None:
        per_position = (got - expected).abs().movedim(pos_axis, 0).flatten(1).amax(1)
        right = [p for p, d in enumerate(per_position.tolist()) if d <= rtol * float(expected.abs().max())]
        if right and len(right) < len(per_position):
            raise Mistake(
                f"✗ {name} is right at positions {_ranges(right)} and wrong at the others "
                f"(largest difference {difference:.3g}): what differs between those positions?{advice}"
            )
    raise Mistake(
        f"✗ {name} differs from minigpt's answer by up to {difference:.3g} "
        f"(relative {difference / float(expected.abs().max()):.2g}){advice}"
    )


def _ranges(positions: list[int]) -> str:
    if positions == list(range(positions[0], positions[-1] + 1)):
        return f"{positions[0]}" if len(positions) == 1 else f"{positions[0]}–{positions[-1]}"
    return ", ".join(map(str, positions[:8])) + (" …" if len(positions) > 8 else "")


def passed(name: str, what: str, difference: float) -> None:
    print(f"✓ {name}: matches minigpt {what} (largest difference {difference:.1e})")


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _bundled(process: bool = False) -> GPT2:
    model, _ = weights.load("bundled", process=process)
    return model


_models: dict[bool, GPT2] = {}


def bundled(process: bool = False) -> GPT2:
    """The bundled model, loaded once per session (unprocessed unless asked); callers must not modify it."""
    if process not in _models:
        _models[process] = _bundled(process)
    return _models[process]


def sample_tokens(n_pos: int = 12, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 50257, (batch, n_pos), generator=_generator(seed))


# ---------------------------------------------------------------------------------------------
# Lesson 1: GPT-2 from scratch


def embed(fn: Callable) -> None:
    """fn(tokens [batch, pos], W_E [d_vocab, d_model], W_pos [n_ctx, d_model]) → [batch, pos, d_model]."""
    __tracebackhide__ = True
    model = bundled()
    tokens = sample_tokens()
    W_E, W_pos = model.W_E, model.W_pos
    expected = W_E[tokens] + W_pos[: tokens.shape[1]]
    mistakes = {
        "only the token embeddings: add the position embedding W_pos[p] of each position p": W_E[tokens],
        "only the position embeddings: add the token embedding W_E[token] too": W_pos[: tokens.shape[1]].expand_as(expected),
        "position embeddings looked up by token id: W_pos is indexed by position 0, 1, 2, …": W_E[tokens]
        + W_pos[tokens % W_pos.shape[0]],
    }
    difference = compare("embed", fn(tokens, W_E, W_pos), expected, mistakes, pos_axis=1)
    passed("embed", "on the bundled model's embeddings", difference)


def layer_norm(fn: Callable) -> None:
    """fn(x [..., d_model], w [d_model], b [d_model], eps) → [..., d_model]."""
    __tracebackhide__ = True
    x = torch.randn(2, 5, 32, generator=_generator(1)) * 0.01 + 0.5  # a variance of 1e-4, where ε = 1e-5 shows
    w, b = torch.randn(32, generator=_generator(2)) * 0.2 + 1, torch.randn(32, generator=_generator(3)) * 0.1
    reference = LayerNorm(Config(d_model=32, n_heads=1, d_head=32))
    reference.w.data, reference.b.data = w.clone(), b.clone()
    expected = reference(x)
    centred = x - x.mean(-1, keepdim=True)
    mistakes = {
        "variance with N − 1 (torch.var's default, unbiased=True): LayerNorm divides by N": centred
        / (x.var(-1, keepdim=True) + 1e-5).sqrt()
        * w
        + b,
        "x is not centred: subtract the mean over d_model before dividing": x
        / (centred.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt()
        * w
        + b,
        "ε added outside the square root: divide by √(variance + ε)": centred
        / (centred.pow(2).mean(-1, keepdim=True).sqrt() + 1e-5)
        * w
        + b,
        "the gain w and bias b are missing: return x̂ · w + b": centred / (centred.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt(),
        "statistics over the wrong axis: mean and variance are over d_model, the last axis": (x - x.mean(1, keepdim=True))
        / (x.var(1, unbiased=False, keepdim=True) + 1e-5).sqrt()
        * w
        + b,
    }
    difference = compare("layer_norm", fn(x, w, b, 1e-5), expected, mistakes, rtol=1e-5)
    model = bundled()
    resid = model.W_E[sample_tokens()] + model.W_pos[:12]
    difference = max(
        difference,
        compare(
            "layer_norm", fn(resid, model.blocks[0].ln1.w, model.blocks[0].ln1.b, 1e-5), model.blocks[0].ln1(resid), rtol=1e-5
        ),
    )
    passed("layer_norm", "on random inputs and on the bundled model's first LayerNorm", difference)


def _qk(seed: int, n_heads: int = 3, d_head: int = 16, n_pos: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    q = torch.randn(2, n_pos, n_heads, d_head, generator=_generator(seed))
    k = torch.randn(2, n_pos, n_heads, d_head, generator=_generator(seed + 1))
    return q, k


def _pattern(q, k, *, scale: float | None, mask: str = "-inf", axis: int = -1) -> torch.Tensor:
    """The attention pattern with one of its parts changed (the reference has scale √d_head, mask -inf)."""
    scores = torch.einsum("bqhe,bkhe->bhqk", q, k)
    if scale is not None:
        scores = scores / scale
    future = torch.ones(q.shape[1], q.shape[1], dtype=torch.bool).triu(1)
    if mask == "-inf":
        scores = scores.masked_fill(future, float("-inf"))
    elif mask == "zero":
        scores = scores.masked_fill(future, 0.0)
    return scores.softmax(axis)


def attention_pattern(fn: Callable) -> None:
    """fn(q [batch, pos, n_heads, d_head], k [same]) → pattern [batch, n_heads, query_pos, key_pos]."""
    __tracebackhide__ = True
    q, k = _qk(4)
    d_head = q.shape[-1]
    expected = _pattern(q, k, scale=math.sqrt(d_head))
    mistakes = {
        (
            "no causal mask: query q must not attend to keys after it (set scores above the diagonal to -inf before the softmax)"
        ): _pattern(q, k, scale=math.sqrt(d_head), mask="none"),
        "masked with 0 instead of -inf: softmax gives a score of 0 the weight e⁰ = 1, not 0": _pattern(
            q, k, scale=math.sqrt(d_head), mask="zero"
        ),
        "scores not scaled: divide q · k by √d_head": _pattern(q, k, scale=None),
        "scores divided by d_head: the scale is √d_head": _pattern(q, k, scale=d_head),
        "softmax over the query axis: each query's weights over the keys must sum to 1 (softmax over the last axis)": _pattern(
            q, k, scale=math.sqrt(d_head), axis=-2
        ),
    }
    difference = compare("attention_pattern", fn(q, k), expected, mistakes)
    passed("attention_pattern", "on random queries and keys", difference)


def attention(fn: Callable) -> None:
    """fn(x [batch, pos, d_model], attn: minigpt Attention with W_Q … b_O) → attn_out [batch, pos, d_model]."""
    __tracebackhide__ = True
    model = bundled()
    attn, ln1 = model.blocks[0].attn, model.blocks[0].ln1
    x = ln1(model.W_E[sample_tokens()] + model.W_pos[:12])
    expected = attn(x)
    with torch.no_grad():
        q, k, v = (
            torch.einsum("bpd,hde->bphe", x, W) + b for W, b in ((attn.W_Q, attn.b_Q), (attn.W_K, attn.b_K), (attn.W_V, attn.b_V))
        )
        unmasked = _pattern(q, k, scale=math.sqrt(q.shape[-1]), mask="none")  # [batch, n_heads, query_pos, key_pos]
        unscaled = _pattern(q, k, scale=None)
        no_mask = torch.einsum("bhqk,bkhe,hed->bqd", unmasked, v, attn.W_O) + attn.b_O
        no_scale = torch.einsum("bhqk,bkhe,hed->bqd", unscaled, v, attn.W_O) + attn.b_O
        value_bias = torch.einsum("he,hed->d", attn.b_V, attn.W_O)  # what b_V adds to every position's output
    mistakes = {
        "no causal mask: each position may only read itself and earlier positions": no_mask,
        "scores not scaled: divide q · k by √d_head (your attention_pattern, or the scores you give it)": no_scale,
        "b_O is missing: the output is Σ_h z_h @ W_O[h] + b_O": expected - attn.b_O,
        "b_V is missing: the values are x @ W_V[h] + b_V[h]": expected - value_bias,
    }
    difference = compare("attention", fn(x, attn), expected, mistakes, rtol=1e-4, pos_axis=1)
    passed("attention", "on the bundled model's first attention layer", difference)


def gelu(fn: Callable) -> None:
    """fn(x) → GPT-2's GELU of x, elementwise."""
    __tracebackhide__ = True
    x = torch.linspace(-6, 6, 1001, dtype=torch.float64)
    expected = gelu_new(x)
    c = math.sqrt(2 / math.pi)
    mistakes = {
        (
            "this is the exact (erf) GELU, which differs by up to ~1e-3; GPT-2 "
            "uses the tanh form 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))"
        ): F.gelu(x),
        "the x³ term is missing inside the tanh: √(2/π)·(x + 0.044715·x³)": 0.5 * x * (1 + torch.tanh(c * x)),
        "this is ReLU: GPT-2's MLP uses the GELU, 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))": torch.relu(x),
        "√(2π) where √(2/π) belongs": 0.5 * x * (1 + torch.tanh(math.sqrt(2 * math.pi) * (x + 0.044715 * x**3))),
    }
    difference = compare("gelu", fn(x), expected, mistakes, rtol=1e-7)
    passed("gelu", "on x from −6 to 6", difference)


def mlp(fn: Callable) -> None:
    """fn(x [batch, pos, d_model], mlp: minigpt MLP with W_in, b_in, W_out, b_out) → [batch, pos, d_model]."""
    __tracebackhide__ = True
    model = bundled()
    block = model.blocks[0]
    x = block.ln2(model.W_E[sample_tokens()] + model.W_pos[:12])
    layer = block.mlp
    expected = layer(x)
    with torch.no_grad():
        pre = x @ layer.W_in + layer.b_in
        mistakes = {
            "the exact (erf) GELU: GPT-2 uses the tanh form (your gelu above)": F.gelu(pre) @ layer.W_out + layer.b_out,
            "ReLU where GPT-2 has the GELU": torch.relu(pre) @ layer.W_out + layer.b_out,
            "b_out is missing: the output is GELU(x @ W_in + b_in) @ W_out + b_out": gelu_new(pre) @ layer.W_out,
            "b_in is missing: the pre-activation is x @ W_in + b_in": gelu_new(x @ layer.W_in) @ layer.W_out + layer.b_out,
        }
    difference = compare("mlp", fn(x, layer), expected, mistakes, rtol=1e-5)
    passed("mlp", "on the bundled model's first MLP", difference)


def forward(fn: Callable) -> None:
    """fn(tokens [batch, pos], model: a minigpt GPT2 holding the weights) → logits [batch, pos, d_vocab]."""
    __tracebackhide__ = True
    model = bundled()
    tokens = sample_tokens(n_pos=16, batch=2, seed=5)
    with torch.no_grad():
        expected = model(tokens)
        variants = {}
        x = model.W_E[tokens] + model.W_pos[:16]
        no_residual, post_ln, no_final = x.clone(), x.clone(), x.clone()
        for block in model.blocks:
            no_residual = block.mlp(block.ln2(block.attn(block.ln1(no_residual))))
            post_ln = block.ln1(post_ln + block.attn(post_ln))
            post_ln = block.ln2(post_ln + block.mlp(post_ln))
            no_final = no_final + block.attn(block.ln1(no_final))
            no_final = no_final + block.mlp(block.ln2(no_final))
        variants[
            "no residual connection: each block adds to x (x = x + attn(ln1(x)); x = x + mlp(ln2(x))), it does not replace it"
        ] = model.ln_final(no_residual) @ model.W_E.T
        variants[
            (
                "LayerNorm after the addition (the original transformer's "
                "post-LN): GPT-2 normalises the sublayer's input, x + attn(ln1(x))"
            )
        ] = model.ln_final(post_ln) @ model.W_E.T
        variants["the final LayerNorm is missing: unembed ln_final(x), not x"] = no_final @ model.W_E.T
    advice = ". forward is only as right as the functions it calls: do their checks above pass?"
    difference = compare("forward", fn(tokens, model), expected, variants, rtol=1e-4, pos_axis=1, advice=advice)
    passed("forward", "on the bundled model (logits of 2 × 16 tokens)", difference)


# ---------------------------------------------------------------------------------------------
# Lesson 2: weight rewrites


def _random_model(seed: int = 0, n_layers: int = 2) -> GPT2:
    torch.manual_seed(seed)
    model = GPT2(Config(n_layers=n_layers, d_model=32, n_heads=4, d_head=8, d_mlp=64, d_vocab=101, n_ctx=16))
    for name, param in model.named_parameters():
        torch.nn.init.normal_(param, mean=1.0 if name.endswith(".w") else 0.0, std=0.2)
    return model.requires_grad_(False)


def fold_layer_norm_into(fn: Callable) -> None:
    """fn(w [d_model], b [d_model], W [d_model, d_out], bias [d_out]) → (W', bias'): LN(x) @ W + bias = x̂ @ W' + bias'."""
    __tracebackhide__ = True
    model = _random_model(1)
    ln, mlp = model.blocks[0].ln2, model.blocks[0].mlp
    expected = weights.fold_layer_norm(copy.deepcopy(model)).blocks[0].mlp
    got = fn(ln.w.clone(), ln.b.clone(), mlp.W_in.clone(), mlp.b_in.clone())
    if not isinstance(got, tuple) or len(got) != 2:
        raise Mistake("✗ fold_layer_norm_into must return a pair (W', bias')")
    folded = ln.w[:, None] * mlp.W_in
    W_mistakes = {
        (
            "W' matches up to each column's mean over d_model: centre the "
            "reading weights (x̂ has zero mean, so a column's mean adds nothing)"
        ): folded,
        "w scales the wrong axis: row i of W reads component i of x̂, so W' = w[:, None] * W (before centring)": (
            mlp.W_in * ln.w[None, : mlp.W_in.shape[1]] if mlp.W_in.shape[1] == ln.w.shape[0] else folded * 0
        ),
        "centred over the wrong axis: subtract the mean over d_model (dim 0), the axis x̂ · 1 = 0 sums over": folded
        - folded.mean(1, keepdim=True),
    }
    b_mistakes = {
        "bias' is missing b @ W: LN's bias b reaches the output as b @ W": mlp.b_in,
        "bias' uses the folded W': LN's bias meets the original W, b @ W + bias": mlp.b_in
        + ln.b @ (folded - folded.mean(0, keepdim=True)),
    }
    difference = compare("fold_layer_norm_into (W')", got[0], expected.W_in, W_mistakes)
    difference = max(difference, compare("fold_layer_norm_into (bias')", got[1], expected.b_in, b_mistakes))
    passed("fold_layer_norm_into", "(weights.fold_layer_norm) on a random model's W_in", difference)


def center_writing(fn: Callable) -> None:
    """fn(W [..., d_model]) → W with its mean over d_model (the last axis) subtracted."""
    __tracebackhide__ = True
    model = _random_model(2)
    expected = weights.center_writing_weights(copy.deepcopy(model))
    difference = 0.0
    for name in ("W_E", "W_pos", "blocks.0.attn.W_O", "blocks.1.mlp.b_out"):
        original, centred = model.get_parameter(name), expected.get_parameter(name)
        axis0 = original - original.mean(0, keepdim=True)
        mistakes = {
            (
                "the mean was taken over the wrong axis: each vector written to "
                "the residual loses its own mean over d_model (the last axis)"
            ): axis0,
            (
                "one mean for the whole matrix: subtract each vector's own mean over d_model (keepdim=True on the last axis)"
            ): original - original.mean(),
            "nothing subtracted": original,
        }
        if original.ndim == 1:
            mistakes.pop(
                "the mean was taken over the wrong axis: each vector written to "
                "the residual loses its own mean over d_model (the last axis)"
            )
        difference = max(difference, compare(f"center_writing ({name})", fn(original.clone()), centred, mistakes))
    passed("center_writing", "(weights.center_writing_weights) on W_E, W_pos, W_O and b_out", difference)


def center_unembed(fn: Callable) -> None:
    """fn(W_U [d_model, d_vocab], b_U [d_vocab]) → (W_U', b_U') with their means over the vocabulary removed."""
    __tracebackhide__ = True
    model = _random_model(3)
    # Its own W_U and b_U, with means over both axes (so that centring the wrong one, or nothing, shows):
    g = _generator(3)
    model.W_U = torch.nn.Parameter(torch.randn(32, 101, generator=g) + 0.5, requires_grad=False)
    model.b_U = torch.nn.Parameter(torch.randn(101, generator=g) + 0.5, requires_grad=False)
    expected = weights.center_unembed(copy.deepcopy(model))
    got = fn(model.W_U.clone(), model.b_U.clone())
    if not isinstance(got, tuple) or len(got) != 2:
        raise Mistake("✗ center_unembed must return a pair (W_U', b_U')")
    W_U = model.W_U
    W_mistakes = {
        (
            "W_U centred over d_model: the logits shift by a constant only "
            "if each row's mean over the vocabulary (the last axis) goes"
        ): W_U - W_U.mean(0, keepdim=True),
        (
            "one number subtracted from all of W_U: the log-probs survive, "
            "but each row's own mean over the vocabulary is what should go"
        ): W_U - W_U.mean(),
        "W_U unchanged": W_U,
    }
    difference = compare("center_unembed (W_U')", got[0], expected.W_U, W_mistakes)
    difference = max(
        difference, compare("center_unembed (b_U')", got[1], expected.b_U, {"b_U unchanged: subtract its mean too": model.b_U})
    )
    passed("center_unembed", "(weights.center_unembed) on a random model's unembedding", difference)


def fold_value_bias(fn: Callable) -> None:
    """fn(b_V [n_heads, d_head], W_O [n_heads, d_head, d_model], b_O [d_model]) → (b_V', b_O')."""
    __tracebackhide__ = True
    model = _random_model(4)
    attn = model.blocks[0].attn
    expected = weights.fold_value_biases(copy.deepcopy(model)).blocks[0].attn
    got = fn(attn.b_V.clone(), attn.W_O.clone(), attn.b_O.clone())
    if not isinstance(got, tuple) or len(got) != 2:
        raise Mistake("✗ fold_value_bias must return a pair (b_V', b_O')")
    moved = torch.einsum("he,hed->d", attn.b_V, attn.W_O)
    difference = compare(
        "fold_value_bias (b_V')",
        got[0],
        expected.b_V,
        {"b_V is still there: it now lives in b_O, so set it to zero (or it counts twice)": attn.b_V},
    )
    b_mistakes = {
        "only head 0's b_V @ W_O was added: sum over every head": attn.b_O + attn.b_V[0] @ attn.W_O[0],
        "b_O unchanged: add Σ_h b_V[h] @ W_O[h] to it": attn.b_O,
        "subtracted instead of added": attn.b_O - moved,
    }
    difference = max(difference, compare("fold_value_bias (b_O')", got[1], expected.b_O, b_mistakes))
    passed("fold_value_bias", "(weights.fold_value_biases) on a random model's first attention layer", difference)


# ---------------------------------------------------------------------------------------------
# Lesson 3: the residual-stream study


def _norms_per_prompt(seed: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.exp(rng.normal(size=(4, n)) * 0.3 + np.arange(4)[:, None] * 0.1) for n in (3, 9, 5)]


def mean_norm_without_bos(fn: Callable) -> None:
    """fn(norms: list of [n_layers, n_pos] arrays, one per prompt, BOS at position 0) → [n_layers]."""
    __tracebackhide__ = True
    norms = _norms_per_prompt()
    expected = torch.as_tensor(measures.mean_over_positions(norms))
    mistakes = {
        "BOS is included: leave out position 0 of every prompt": np.concatenate(norms, axis=1).mean(1),
        "a mean of the prompts' means: pool every (prompt, position) pair, so each vector counts once": np.mean(
            [n[:, 1:].mean(1) for n in norms], axis=0
        ),
        "the last position was left out instead of the first (BOS is position 0)": np.concatenate(
            [n[:, :-1] for n in norms], axis=1
        ).mean(1),
    }
    difference = compare(
        "mean_norm_without_bos", fn(norms), expected, {k: torch.as_tensor(v) for k, v in mistakes.items()}, rtol=1e-9
    )
    passed("mean_norm_without_bos", "(measures.mean_over_positions) on three prompts of random norms", difference)


def _growth_inputs() -> np.ndarray:
    return 20 * 1.05 ** np.arange(12) * np.exp(np.random.default_rng(7).normal(size=12) * 0.05)


def endpoint_rate(fn: Callable) -> None:
    """fn(mean_norms [n_layers], first, last) → the study's per-layer rate (n[last] / n[first]) ** (1 / (last − first))."""
    __tracebackhide__ = True
    n, first, last = _growth_inputs(), 2, 10
    expected = torch.tensor(rates.growth_rate(n, first, last)["rate"], dtype=torch.float64)
    mistakes = {
        f"the root is one too deep: from layer {first} to layer {last} are {last - first} steps, not {last - first + 1}": (
            n[last] / n[first]
        )
        ** (1 / (last - first + 1)),
        "the ratio is the total growth: take its (last − first)-th root for the rate per layer": n[last] / n[first],
        "the ratio is upside down: later over earlier, n[last] / n[first]": (n[first] / n[last]) ** (1 / (last - first)),
    }
    difference = compare(
        "endpoint_rate", fn(n, first, last), expected, {k: torch.tensor(v) for k, v in mistakes.items()}, rtol=1e-9
    )
    passed("endpoint_rate", "(rates.growth_rate's 'rate')", difference)


def fitted_rate(fn: Callable) -> None:
    """fn(mean_norms [n_layers], first, last) → exp(slope) of the least-squares line through log(norm) over first..last."""
    __tracebackhide__ = True
    n, first, last = _growth_inputs(), 2, 10
    expected = torch.tensor(rates.growth_rate(n, first, last)["fit_rate"], dtype=torch.float64)
    layers = np.arange(first, last + 1)
    mistakes = {
        (
            "a straight line through the norms themselves: fit log(norm), "
            "since exponential growth is a straight line in log space"
        ): np.exp(np.polyfit(layers, n[first : last + 1], 1)[0]),
        "log10 fitted, then exp taken: use the natural log (or 10 ** slope)": np.exp(
            np.polyfit(layers, np.log10(n[first : last + 1]), 1)[0]
        ),
        "fitted over every layer: fit only layers first..last, inclusive": np.exp(np.polyfit(np.arange(len(n)), np.log(n), 1)[0]),
        "the slope itself: the rate per layer is exp(slope)": np.polyfit(layers, np.log(n[first : last + 1]), 1)[0],
    }
    difference = compare(
        "fitted_rate", fn(n, first, last), expected, {k: torch.tensor(v) for k, v in mistakes.items()}, rtol=1e-9
    )
    passed("fitted_rate", "(rates.growth_rate's 'fit_rate')", difference)


def W_OV_frobenius(fn: Callable) -> None:
    """fn(W_V [n_heads, d_model, d_head], W_O [n_heads, d_head, d_model]) → ‖W_V[h] @ W_O[h]‖_F per head [n_heads]."""
    __tracebackhide__ = True
    attn = bundled(process=True).blocks[3].attn
    W_V, W_O = attn.W_V, attn.W_O
    expected = weight_measures.W_OV_frobenius(W_V, W_O)
    products = W_V @ W_O  # [n_heads, d_model, d_model]
    mistakes = {
        "the square root is missing: ‖A‖_F = √(Σ A²)": products.pow(2).sum((1, 2)),
        "‖W_V‖_F · ‖W_O‖_F is only an upper bound on ‖W_V W_O‖_F": W_V.norm(dim=(1, 2)) * W_O.norm(dim=(1, 2)),
        "W_O @ W_V (d_head × d_head) is the other product: W_OV = W_V @ W_O maps d_model to d_model": (W_O @ W_V).norm(
            dim=(1, 2)
        ),
    }
    difference = compare("W_OV_frobenius", fn(W_V, W_O), expected, mistakes, rtol=1e-4)
    passed("W_OV_frobenius", "(weight_measures.W_OV_frobenius) on the processed bundled model's layer 3", difference)


# The solutions' check: every checker with its exercise's name, in the lessons' order.
CHECKERS = {
    1: [embed, layer_norm, attention_pattern, attention, gelu, mlp, forward],
    2: [fold_layer_norm_into, center_writing, center_unembed, fold_value_bias],
    3: [mean_norm_without_bos, endpoint_rate, fitted_rate, W_OV_frobenius],
}
