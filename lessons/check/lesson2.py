"""Lesson 2's checkers: the weight rewrites, each against minigpt's own (`weights.fold_layer_norm`,
`center_writing_weights`, `center_unembed`, `fold_value_biases`) on a small random model. A rewrite
that changes its inputs in place is a mistake even when its answer is right: in the notebook those
inputs are the model's weights (and W_E.T is a view of the embedding).

    from lessons.check import lesson2 as check
    check.fold_layer_norm_into(fold_layer_norm_into)
    check.hint("fold_layer_norm_into")
"""

import copy
from collections.abc import Callable

import torch

import weights

from .core import Hints, Mistake, call, compare, generator, pair, passed
from .models import random_model

__all__ = ["Mistake", "center_reading", "center_unembed", "center_writing", "fold_layer_norm_into", "fold_value_bias", "hint"]

hint = Hints(
    {
        "fold_layer_norm_into": [
            "Expand (x̂ · w + b) @ W + bias: one term has x̂ in it, the other does not. Each is one of your outputs.",
            "Row i of W meets component i of x̂, which LayerNorm multiplies by w[i]: w scales W's rows, not its columns.",
            "The bias meets the original W: LayerNorm adds b before the reader multiplies by W.",
        ],
        "center_reading": [
            "Which axis of W does x̂ · 1 = 0 sum over? The one W shares with x̂: d_model, the first.",
            "keepdim=True keeps the mean's axis, so that it broadcasts back over W.",
        ],
        "center_writing": [
            "The vectors written into the residual stream run along the last axis, d_model, whatever W's other axes are.",
            "Subtract each vector's own mean, not one number for the whole matrix.",
        ],
        "center_unembed": [
            "A logit is x̂ @ W_U[:, token] + b_U[token]: what must be the same for every token for the shift to be constant?",
            "Row i of W_U has one entry per token: remove each row's mean over the vocabulary, and b_U's mean too.",
            "A mean over the last axis of a [d_model, d_vocab] matrix has d_model entries: keep its axis to broadcast.",
        ],
        "fold_value_bias": [
            "Head h's b_V[h] reaches the output as b_V[h] @ W_O[h]: one d_model vector per head.",
            "All heads' outputs add up, so their constant vectors do too; then b_V has nothing left to do.",
        ],
    },
    solved="lessons/solutions/02-weight-rewrites.ipynb",
)


def fold_layer_norm_into(fn: Callable) -> None:
    """fn(w [d_model], b [d_model], W [d_model, d_out], bias [d_out]) → (W', bias'): (x̂·w + b) @ W + bias = x̂ @ W' + bias'."""
    __tracebackhide__ = True
    model = random_model(1)
    ln, mlp = model.blocks[0].ln2, model.blocks[0].mlp
    reference = weights.fold_layer_norm(copy.deepcopy(model)).blocks[0].mlp  # its W_in is also centred: the next exercise
    square = torch.randn(32, 32, generator=generator(11))  # a reader with d_out = d_model, where W * w broadcasts silently
    difference = 0.0
    for W, bias, expected_bias in ((square, mlp.b_in[:32], ln.b @ square + mlp.b_in[:32]), (mlp.W_in, mlp.b_in, reference.b_in)):
        got = pair("fold_layer_norm_into", call("fold_layer_norm_into", fn, ln.w, ln.b, W, bias), "(W', bias')")
        folded = ln.w[:, None] * W
        W_mistakes = {
            "W' is W unchanged: the gain w moves into W's rows, W' = w[:, None] * W": W,
            "W' is divided by w: LayerNorm multiplies x̂ by w, so W' = w[:, None] * W": W / ln.w[:, None],
            (
                "W' is also centred: right for the whole rewrite, but this function only folds; "
                "centring the reading weights is the next exercise"
            ): folded - folded.mean(0, keepdim=True),
        }
        b_mistakes = {
            "bias' is missing b @ W: LayerNorm's bias b reaches the output as b @ W": bias,
            "bias' is missing the reader's own bias: b @ W + bias": ln.b @ W,
            "bias' uses the folded W': LayerNorm's bias meets the original W, b @ W + bias": ln.b @ folded + bias,
        }
        if W.shape[1] == ln.w.shape[0]:  # only a square W lets W * w broadcast (over its columns); a wider one raises
            W_mistakes["w scales the wrong axis: row i of W reads component i of x̂, so w[i] multiplies row i"] = W * ln.w
        difference = max(difference, compare("fold_layer_norm_into (W')", got[0], folded, W_mistakes))
        difference = max(difference, compare("fold_layer_norm_into (bias')", got[1], expected_bias, b_mistakes))
    passed("fold_layer_norm_into", "weights.fold_layer_norm on a random model's W_in and a square reader", difference)


def center_reading(fn: Callable) -> None:
    """fn(W [d_model, d_out]) → W minus its mean over d_model (dim 0): what weights.fold_layer_norm does after folding."""
    __tracebackhide__ = True
    model = random_model(1)
    ln, mlp = model.blocks[0].ln2, model.blocks[0].mlp
    expected = weights.fold_layer_norm(copy.deepcopy(model)).blocks[0].mlp.W_in
    W = ln.w[:, None] * mlp.W_in  # [32, 64]: folded, not yet centred
    mistakes = {
        "centred over the wrong axis: subtract the mean over d_model (dim 0), the axis x̂ · 1 = 0 sums over": W
        - W.mean(1, keepdim=True),
        "one mean for the whole matrix: each column loses its own mean over d_model": W - W.mean(),
        "nothing subtracted": W,
    }
    difference = compare("center_reading", call("center_reading", fn, W), expected, mistakes)
    passed("center_reading", "weights.fold_layer_norm's centring on a random model's folded W_in", difference)


def center_writing(fn: Callable) -> None:
    """fn(W [..., d_model]) → W with its mean over d_model (the last axis) subtracted."""
    __tracebackhide__ = True
    model = random_model(2)
    expected = weights.center_writing_weights(copy.deepcopy(model))
    difference = 0.0
    for name in ("W_E", "W_pos", "blocks.0.attn.W_O", "blocks.1.mlp.b_out"):
        original, centred = model.get_parameter(name), expected.get_parameter(name)
        mistakes = {
            "one mean for the whole matrix: subtract each vector's own mean over d_model (keepdim=True on the last axis)": (
                original - original.mean()
            ),
            "nothing subtracted": original,
        }
        if original.ndim > 1:
            mistakes = {
                "the mean was taken over the wrong axis: each vector written to the residual loses its own mean over "
                "d_model (the last axis)": original - original.mean(0, keepdim=True)
            } | mistakes
        got = call(f"center_writing ({name})", fn, original)
        difference = max(difference, compare(f"center_writing ({name})", got, centred, mistakes))
    passed("center_writing", "weights.center_writing_weights on W_E, W_pos, W_O and b_out", difference)


def center_unembed(fn: Callable) -> None:
    """fn(W_U [d_model, d_vocab], b_U [d_vocab]) → (W_U', b_U') with their means over the vocabulary removed."""
    __tracebackhide__ = True
    model = random_model(3)
    # Its own W_U and b_U, with means over both axes (so that centring the wrong one, or nothing, shows):
    g = generator(3)
    model.W_U = torch.nn.Parameter(torch.randn(32, 101, generator=g) + 0.5, requires_grad=False)
    model.b_U = torch.nn.Parameter(torch.randn(101, generator=g) + 0.5, requires_grad=False)
    expected = weights.center_unembed(copy.deepcopy(model))
    W_U = model.W_U
    got = pair("center_unembed", call("center_unembed", fn, W_U, model.b_U), "(W_U', b_U')")
    W_mistakes = {
        (
            "W_U centred over d_model: the logits shift by the same amount for every token only when each "
            "row of W_U loses its mean over the vocabulary (the last axis)"
        ): W_U - W_U.mean(0, keepdim=True),
        (
            "one number subtracted from all of W_U: the log-probs survive, "
            "but each row's own mean over the vocabulary is what should go"
        ): W_U - W_U.mean(),
        "W_U unchanged": W_U,
    }
    difference = compare("center_unembed (W_U')", got[0], expected.W_U, W_mistakes)
    b_mistakes = {"b_U unchanged: subtract its mean too": model.b_U}
    difference = max(difference, compare("center_unembed (b_U')", got[1], expected.b_U, b_mistakes))
    passed("center_unembed", "weights.center_unembed on a random model's unembedding", difference)


def fold_value_bias(fn: Callable) -> None:
    """fn(b_V [n_heads, d_head], W_O [n_heads, d_head, d_model], b_O [d_model]) → (b_V', b_O')."""
    __tracebackhide__ = True
    model = random_model(4)
    attn = model.blocks[0].attn
    expected = weights.fold_value_biases(copy.deepcopy(model)).blocks[0].attn
    got = pair("fold_value_bias", call("fold_value_bias", fn, attn.b_V, attn.W_O, attn.b_O), "(b_V', b_O')")
    moved = torch.einsum("he,hed->d", attn.b_V, attn.W_O)
    n_heads, _, d_model = attn.W_O.shape
    if isinstance(got[1], torch.Tensor) and got[1].shape == (n_heads, n_heads, d_model):
        raise Mistake(
            f"✗ fold_value_bias (b_O') returned shape {list(got[1].shape)}: b_V @ W_O multiplied every head's b_V with every "
            "head's W_O. Pair b_V[h] with its own W_O[h], then sum over the heads."
        )
    b_V_mistakes = {"b_V is still there: it now lives in b_O, so set it to zero (or it counts twice)": attn.b_V}
    difference = compare("fold_value_bias (b_V')", got[0], expected.b_V, b_V_mistakes)
    b_mistakes = {
        "only head 0's b_V @ W_O was added: sum over every head": attn.b_O + attn.b_V[0] @ attn.W_O[0],
        "b_O unchanged: add Σ_h b_V[h] @ W_O[h] to it": attn.b_O,
        "subtracted instead of added": attn.b_O - moved,
        "b_O was replaced: add Σ_h b_V[h] @ W_O[h] to the b_O already there": moved,
    }
    difference = max(difference, compare("fold_value_bias (b_O')", got[1], expected.b_O, b_mistakes))
    passed("fold_value_bias", "weights.fold_value_biases on a random model's first attention layer", difference)


CHECKERS = [fold_layer_norm_into, center_reading, center_writing, center_unembed, fold_value_bias]  # in the lesson's order
