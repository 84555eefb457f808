"""Lesson 1's checkers: GPT-2 from scratch. Each compares the student's function with minigpt's own
code (which the tests check against Hugging Face's GPT-2 to 1e-4) and names the usual mistakes.

    from lessons.check import lesson1 as check
    check.embed(embed)       # prints ✓ …, or raises Mistake("✗ embed: …")
    check.hint("embed")      # the next nudge for that exercise
"""

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from minigpt import Config, gelu_new
from minigpt.model import LayerNorm

from .core import Hints, Mistake, call, compare, generator, passed
from .models import bundled, sample_tokens

__all__ = ["Mistake", "attention", "attention_pattern", "embed", "forward", "gelu", "hint", "layer_norm", "mlp"]

hint = Hints(
    {
        "embed": [
            "W_E has one row per token id, W_pos one row per position: which of the two does `tokens` index?",
            "The positions of a prompt are 0, 1, …, pos − 1; pos is tokens' second axis (the first is batch).",
            "A [pos, d_model] tensor added to a [batch, pos, d_model] one is broadcast over the batch.",
        ],
        "layer_norm": [
            "Three steps over the last axis: subtract the mean, divide by the standard deviation, then gain and bias.",
            "The variance divides by N, not N − 1: torch.var's default is N − 1.",
            "ε goes inside the square root, with the variance; keep the axis (keepdim=True) so that it broadcasts.",
        ],
        "attention_pattern": [
            "First the scores: one dot product per (query, key) pair and head. einsum can name the axes for you.",
            "Divide the scores by √d_head before anything else happens to them.",
            "Which entries of a [query_pos, key_pos] grid lie in a query's future? torch.triu picks a triangle.",
            "Set those scores to -inf, then softmax over the keys, the last axis.",
        ],
        "attention": [
            "q, k and v are each x times a per-head matrix [n_heads, d_model, d_head], plus a per-head bias.",
            "Your attention_pattern gives [batch, n_heads, query_pos, key_pos]; z is that pattern times the values.",
            "Each head writes through its own W_O[h] [d_head, d_model]; sum the heads, then add b_O once.",
        ],
        "gelu": [
            "Write the formula in the text above as it stands; torch.tanh and math.sqrt are all you need.",
            "The constant is √(2/π) ≈ 0.798, multiplying (x + 0.044715 · x³).",
        ],
        "mlp": [
            "Up through W_in (plus b_in), the GELU, then down through W_out (plus b_out).",
            "Each bias belongs to the product it follows: the GELU reads x @ W_in + b_in.",
        ],
        "forward": [
            "Embed, then for each block two additions to x: attention's and the MLP's, each reading a LayerNorm of x.",
            "Each block adds to x; it does not replace it.",
            "After the blocks: the final LayerNorm, then the unembedding W_E transposed.",
        ],
    },
    solved="lessons/solutions/01-gpt2-from-scratch.ipynb",
)


def embed(fn: Callable) -> None:
    """fn(tokens [batch, pos], W_E [d_vocab, d_model], W_pos [n_ctx, d_model]) → [batch, pos, d_model]."""
    __tracebackhide__ = True
    model = bundled()
    W_E, W_pos = model.W_E, model.W_pos
    difference = 0.0
    # First token ids below n_ctx, so that W_pos[tokens] (looked up by id) returns an answer to name, not an IndexError.
    for tokens in (torch.randint(0, W_pos.shape[0], (2, 12), generator=generator(8)), sample_tokens()):
        expected = W_E[tokens] + W_pos[: tokens.shape[1]]
        mistakes = {
            "only the token embeddings: add the position embedding W_pos[p] of each position p": W_E[tokens],
            "only the position embeddings: add the token embedding W_E[token] too": W_pos[: tokens.shape[1]].expand_as(expected),
        }
        if tokens.max() < W_pos.shape[0]:
            by_id = "position embeddings looked up by token id: W_pos is indexed by position 0, 1, 2, …"
            mistakes[by_id] = W_E[tokens] + W_pos[tokens]
        got = call("embed", fn, tokens, W_E, W_pos)
        difference = max(difference, compare("embed", got, expected, mistakes, pos_axis=1))
    passed("embed", "minigpt on the bundled model's embeddings", difference)


def layer_norm(fn: Callable) -> None:
    """fn(x [..., d_model], w [d_model], b [d_model], eps) → [..., d_model]."""
    __tracebackhide__ = True
    x = torch.randn(2, 5, 32, generator=generator(1)) * 0.01 + 0.5  # a variance of 1e-4, where ε = 1e-5 shows
    w, b = torch.randn(32, generator=generator(2)) * 0.2 + 1, torch.randn(32, generator=generator(3)) * 0.1
    reference = LayerNorm(Config(d_model=32, n_heads=1, d_head=32))
    reference.w.data, reference.b.data = w.clone(), b.clone()
    expected = reference(x)
    centred = x - x.mean(-1, keepdim=True)
    variance = centred.pow(2).mean(-1, keepdim=True)
    mistakes = {
        "variance with N − 1 (torch.var's default, unbiased=True): LayerNorm divides by N": centred
        / (x.var(-1, keepdim=True) + 1e-5).sqrt()
        * w
        + b,
        "x is not centred: subtract the mean over d_model before dividing": x / (variance + 1e-5).sqrt() * w + b,
        "this is RMSNorm (x / √(mean x² + ε), as in Llama): GPT-2's LayerNorm first subtracts the mean": x
        / (x.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt()
        * w
        + b,
        "ε added outside the square root: divide by √(variance + ε)": centred / (variance.sqrt() + 1e-5) * w + b,
        "ε is missing: divide by √(variance + ε), which matters when the variance is small": centred / variance.sqrt() * w + b,
        "the gain w and bias b are missing: return x̂ · w + b": centred / (variance + 1e-5).sqrt(),
        "statistics over the wrong axis: mean and variance are over d_model, the last axis": (x - x.mean(1, keepdim=True))
        / (x.var(1, unbiased=False, keepdim=True) + 1e-5).sqrt()
        * w
        + b,
    }
    difference = compare("layer_norm", call("layer_norm", fn, x, w, b, 1e-5), expected, mistakes, rtol=1e-5)
    model = bundled()
    resid = model.W_E[sample_tokens()] + model.W_pos[:12]
    ln1 = model.blocks[0].ln1
    got = call("layer_norm", fn, resid, ln1.w, ln1.b, 1e-5)
    difference = max(difference, compare("layer_norm", got, ln1(resid), rtol=1e-5))
    passed("layer_norm", "minigpt on random inputs and on the bundled model's first LayerNorm", difference)


def _qk(seed: int, n_heads: int = 3, d_head: int = 16, n_pos: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    q = torch.randn(2, n_pos, n_heads, d_head, generator=generator(seed))
    k = torch.randn(2, n_pos, n_heads, d_head, generator=generator(seed + 1))
    return q, k


def _pattern(q, k, *, scale: float | None, mask: str = "future", fill: float = float("-inf"), axis: int = -1, after=False):
    """The attention pattern with one of its parts changed (the reference: scale √d_head, the future masked with -inf)."""
    scores = torch.einsum("bqhe,bkhe->bhqk", q, k)
    if scale is not None:
        scores = scores / scale
    ones = torch.ones(q.shape[1], q.shape[1], dtype=torch.bool)
    masked = {"future": ones.triu(1), "future and self": ones.triu(0), "past and self": ones.tril(0), "past": ones.tril(-1)}
    if after:  # softmax first, then the future's weights set to 0
        return scores.softmax(axis).masked_fill(masked[mask], 0.0)
    if mask != "none":
        scores = scores.masked_fill(masked[mask], fill)
    return scores.softmax(axis)


def attention_pattern(fn: Callable) -> None:
    """fn(q [batch, pos, n_heads, d_head], k [same]) → pattern [batch, n_heads, query_pos, key_pos]."""
    __tracebackhide__ = True
    q, k = _qk(4)
    s = math.sqrt(q.shape[-1])
    expected = _pattern(q, k, scale=s)
    inverted = "the mask covers the past: query q may read keys k ≤ q, so mask the keys after it (torch.triu(…, diagonal=1))"
    mistakes = [
        (
            "no causal mask: query q must not attend to keys after it (set scores above the diagonal to -inf before the softmax)",
            _pattern(q, k, scale=s, mask="none"),
        ),
        ("masked with 0 instead of -inf: softmax gives a score of 0 the weight e⁰ = 1, not 0", _pattern(q, k, scale=s, fill=0.0)),
        (
            "masked after the softmax: the weights left no longer sum to 1; mask the scores, then take the softmax",
            _pattern(q, k, scale=s, after=True),
        ),
        (
            "the diagonal is masked too: a position may read itself (torch.triu(…, diagonal=1) leaves the diagonal out)",
            _pattern(q, k, scale=s, mask="future and self"),
        ),
        (inverted, _pattern(q, k, scale=s, mask="past and self")),
        (inverted, _pattern(q, k, scale=s, mask="past")),
        ("scores not scaled: divide q · k by √d_head", _pattern(q, k, scale=None)),
        ("scores divided by d_head: the scale is √d_head", _pattern(q, k, scale=q.shape[-1])),
        (
            "softmax over the query axis: each query's weights over the keys must sum to 1 (softmax over the last axis)",
            _pattern(q, k, scale=s, axis=-2),
        ),
    ]
    difference = compare("attention_pattern", call("attention_pattern", fn, q, k), expected, mistakes)
    passed("attention_pattern", "minigpt on random queries and keys", difference)


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
        s = math.sqrt(q.shape[-1])

        def out(pattern):
            return torch.einsum("bhqk,bkhe,hed->bqd", pattern, v, attn.W_O) + attn.b_O

        value_bias = torch.einsum("he,hed->d", attn.b_V, attn.W_O)  # what b_V adds to every position's output
        mistakes = {
            "no causal mask: each position may only read itself and earlier positions": out(_pattern(q, k, scale=s, mask="none")),
            "scores not scaled: divide q · k by √d_head (your attention_pattern, or the scores you give it)": out(
                _pattern(q, k, scale=None)
            ),
            "b_O is missing: the output is Σ_h z_h @ W_O[h] + b_O": expected - attn.b_O,
            "b_O added once per head: sum the heads' outputs, then add b_O once": expected + (attn.W_Q.shape[0] - 1) * attn.b_O,
            "b_V is missing: the values are x @ W_V[h] + b_V[h]": expected - value_bias,
        }
    difference = compare("attention", call("attention", fn, x, attn), expected, mistakes, rtol=1e-4, pos_axis=1)
    passed("attention", "minigpt on the bundled model's first attention layer", difference)


def gelu(fn: Callable) -> None:
    """fn(x) → GPT-2's GELU of x, elementwise."""
    __tracebackhide__ = True
    x = torch.linspace(-6, 6, 1001, dtype=torch.float64)
    expected = gelu_new(x)
    c = math.sqrt(2 / math.pi)
    mistakes = {
        (
            "this is the exact (erf) GELU, x·Φ(x), which differs from GPT-2's by up to 4.7e-4 (near x = ±2.7); "
            "GPT-2 uses the tanh form 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))"
        ): F.gelu(x),
        "the x³ term is missing inside the tanh: √(2/π)·(x + 0.044715·x³)": 0.5 * x * (1 + torch.tanh(c * x)),
        "this is ReLU: GPT-2's MLP uses the GELU, 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))": torch.relu(x),
        "√(2π) where √(2/π) belongs": 0.5 * x * (1 + torch.tanh(math.sqrt(2 * math.pi) * (x + 0.044715 * x**3))),
        "x² where x³ belongs: √(2/π)·(x + 0.044715·x³)": 0.5 * x * (1 + torch.tanh(c * (x + 0.044715 * x**2))),
    }
    difference = compare("gelu", call("gelu", fn, x), expected, mistakes, rtol=1e-7)
    passed("gelu", "minigpt's gelu_new on x from −6 to 6", difference)


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
            "b_in is added after the GELU: it belongs inside, GELU(x @ W_in + b_in)": (gelu_new(x @ layer.W_in) + layer.b_in)
            @ layer.W_out
            + layer.b_out,
            "no GELU: the MLP is GELU(x @ W_in + b_in) @ W_out + b_out": pre @ layer.W_out + layer.b_out,
        }
    difference = compare("mlp", call("mlp", fn, x, layer), expected, mistakes, rtol=1e-5)
    passed("mlp", "minigpt on the bundled model's first MLP", difference)


def forward(fn: Callable) -> None:
    """fn(tokens [batch, pos], model: a minigpt GPT2 holding the weights) → logits [batch, pos, d_vocab]."""
    __tracebackhide__ = True
    model = bundled()
    tokens = sample_tokens(n_pos=16, batch=2, seed=5)
    with torch.no_grad():
        expected = model(tokens)
        x = model.W_E[tokens] + model.W_pos[:16]
        no_residual, post_ln, no_final = x.clone(), x.clone(), x.clone()
        for block in model.blocks:
            no_residual = block.mlp(block.ln2(block.attn(block.ln1(no_residual))))
            post_ln = block.ln1(post_ln + block.attn(post_ln))
            post_ln = block.ln2(post_ln + block.mlp(post_ln))
            no_final = no_final + block.attn(block.ln1(no_final))
            no_final = no_final + block.mlp(block.ln2(no_final))
        variants = {
            "no residual connection: each block adds to x (x = x + attn(ln1(x)); x = x + mlp(ln2(x))), it does not replace it": (
                model.ln_final(no_residual) @ model.W_E.T
            ),
            (
                "LayerNorm after the addition (the original transformer's post-LN): "
                "GPT-2 normalises the sublayer's input, x + attn(ln1(x))"
            ): model.ln_final(post_ln) @ model.W_E.T,
            "the final LayerNorm is missing: unembed ln_final(x), not x": no_final @ model.W_E.T,
        }
    advice = ". forward is only as right as the functions it calls: do their checks above pass?"
    got = call("forward", fn, tokens, model)
    difference = compare("forward", got, expected, variants, rtol=1e-4, pos_axis=1, advice=advice)
    passed("forward", "minigpt on the bundled model (logits of 2 × 16 tokens)", difference)


CHECKERS = [embed, layer_norm, attention_pattern, attention, gelu, mlp, forward]  # in the lesson's order
