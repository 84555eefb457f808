"""The lessons: every checker names typical mistakes (each written here as a small wrong implementation,
as a student would write it), reports a crash with the shapes it was given, catches inputs changed in
place and hides its own frames; the exercise notebooks hold no solution and stay in step with their
solved twins; the solved notebooks run offline, and print what lessons/expected holds."""

import ast
import math
import re
import time

import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

import instrument
from lessons import build, expected
from lessons.check import CHECKERS, LESSONS, Crash, Mistake, core, lesson1, lesson2, lesson3, lesson4

# ---------------------------------------------------------------------------------------------
# Wrong implementations, as a student might write them


def pattern_with(q, k, *, scale=True, mask=float("-inf"), dim=-1, triangle=lambda m: m.triu(1), after=False):
    scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / (math.sqrt(q.shape[-1]) if scale else 1)
    future = triangle(torch.ones(q.shape[1], q.shape[1], dtype=torch.bool))
    if after:
        return scores.softmax(dim).masked_fill(future, 0.0)
    if mask is not None:
        scores = scores.masked_fill(future, mask)
    return scores.softmax(dim)


def attention_with(pattern=pattern_with, *, b_V=True, b_O=True):
    def attention(x, attn):
        q = torch.einsum("bpd,hde->bphe", x, attn.W_Q) + attn.b_Q
        k = torch.einsum("bpd,hde->bphe", x, attn.W_K) + attn.b_K
        v = torch.einsum("bpd,hde->bphe", x, attn.W_V) + (attn.b_V if b_V else 0)
        z = torch.einsum("bhqk,bkhe->bqhe", pattern(q, k), v)
        return torch.einsum("bphe,hed->bpd", z, attn.W_O) + (attn.b_O if b_O else 0)

    return attention


def ln(x, w, b, eps=1e-5):
    x = x - x.mean(-1, keepdim=True)
    return x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt() * w + b


def forward_with(order="pre", residual=True, final_ln=True):
    def forward(tokens, model):
        x = model.W_E[tokens] + model.W_pos[: tokens.shape[1]]
        for block in model.blocks:
            sublayers = ((block.ln1, block.attn), (block.ln2, block.mlp))
            for norm, sublayer in sublayers:
                if order == "post":
                    x = ln(x + sublayer(x), norm.w, norm.b)
                elif residual:
                    x = x + sublayer(ln(x, norm.w, norm.b))
                else:
                    x = sublayer(ln(x, norm.w, norm.b))
        if final_ln:
            x = ln(x, model.ln_final.w, model.ln_final.b)
        return x @ model.W_E.T

    return forward


def gelu_tanh(x):
    return F.gelu(x, approximate="tanh")


def slope(x, y):
    return np.polyfit(x, y, 1)[0]


def fold_in_place(w, b, W, bias):  # passes the values, but edits the caller's W (in the notebook: the model's)
    W *= w[:, None]
    return W, b @ (W / w[:, None]) + bias


def embed_positions_by_batch(tokens, W_E, W_pos):  # pos taken from the wrong axis: raises inside the student's code
    return W_E[tokens] + W_pos[: tokens.shape[0]]


def center_unembed_no_keepdim(W_U, b_U):  # [32, 101] − [32]: raises
    return W_U - W_U.mean(-1), b_U - b_U.mean()


# Lesson 4's interventions, right, and with one thing changed.
def scaled_ln(model, tokens, layer, c, *, at="hook_resid_pre", read="ln1.hook_normalized", returns=True):
    kept = {}

    def scale(t, name):
        t2 = c * t
        return t2 if returns else None

    def keep(t, name):
        kept[name] = t

    with instrument.hooks(model, {f"blocks.{layer}.{at}": scale, f"blocks.{layer}.{read}": keep}):
        model(tokens, unembed=False)
    return kept[f"blocks.{layer}.{read}"]


def scaled_residual(model, tokens, layer, c):  # the hook that scales the block's input keeps it, and that is returned
    kept = {}

    def scale(t, name):
        kept[name] = c * t
        return kept[name]

    with instrument.hooks(model, {f"blocks.{layer}.hook_resid_pre": scale}):
        model(tokens, unembed=False)
    return kept[f"blocks.{layer}.hook_resid_pre"]


def feature_with(model, tokens, layer, direction, *, unit=True, difference=True, bos=False, at="hook_resid_post"):
    names = [f"blocks.{l}.hook_resid_post" for l in range(layer, model.cfg.n_layers)]

    def run(added):
        kept = {}

        def add(t, name):
            return t + added

        def keep(t, name):
            kept[name] = t

        fns = dict.fromkeys(names, keep)
        if at == "hook_resid_post":
            fns[names[0]] = lambda t, name: kept.setdefault(name, t + added)
        else:
            fns[f"blocks.{layer}.{at}"] = add
        with instrument.hooks(model, fns):
            model(tokens, unembed=False)
        return torch.stack([kept[n] for n in names])

    change = run(direction) - (run(torch.zeros_like(direction)) if difference else 0)
    d = direction / direction.norm() if unit else direction
    return (change @ d)[:, :, (0 if bos else 1) :].mean((1, 2))


def kept_with(
    model, tokens, layer, s, *, by_s=False, read=None, bos=False, stream="mlp_out", at=None, norm=False, sums=False, aliased=False
):
    out = f"blocks.{layer}.hook_{stream}"
    final = f"blocks.{model.cfg.n_layers - 1 if read is None else read}.hook_resid_post"
    _, clean = instrument.run_with_cache(model, tokens, names=[out, final], unembed=False)
    kept = {}

    def scale(t, name):
        if aliased:  # keeps the tensor it is handed, then scales it in place: the kept o is s · o
            kept["o"] = t
            t *= s
            return t
        return s * t

    with instrument.hooks(model, {at or out: scale, final: lambda t, name: kept.setdefault(name, t)}):
        model(tokens, unembed=False)
    o = kept["o"] if aliased else clean[out]
    change = kept[final] - clean[final]
    along = change.norm(dim=-1) if norm else (change * o).sum(-1) / o.norm(dim=-1)
    added = (s if by_s else s - 1) * o.norm(dim=-1)
    first = 0 if bos else 1
    if sums:
        return along[:, first:].sum() / added[:, first:].sum()
    return (along / added)[:, first:].mean()


def kept_crashing_in_a_hook(model, tokens, layer, s):
    def scale(t, name):
        return t * torch.ones(s.shape)  # s is a float: raises AttributeError inside the forward pass

    with instrument.hooks(model, {f"blocks.{layer}.hook_mlp_out": scale}):
        model(tokens, unembed=False)


def bos_ablation(pattern, name, *, rows=slice(1, None), renormalise=True, axis=-1):
    pattern = pattern.clone()
    pattern[..., rows, 0] = 0
    if renormalise:
        pattern[..., rows, :] = pattern[..., rows, :] / pattern[..., rows, :].sum(axis, keepdim=True)
    return pattern


MISTAKES = {
    lesson1.embed: [
        (lambda tokens, W_E, W_pos: W_E[tokens], "only the token embeddings"),
        (lambda tokens, W_E, W_pos: W_pos[: tokens.shape[1]].expand(*tokens.shape, -1), "only the position embeddings"),
        (lambda tokens, W_E, W_pos: W_E[tokens] + W_pos[tokens], "looked up by token id"),  # as a student writes it
    ],
    lesson1.layer_norm: [
        (lambda x, w, b, eps: (x - x.mean(-1, keepdim=True)) / (x.var(-1, keepdim=True) + eps).sqrt() * w + b, "N − 1"),
        (lambda x, w, b, eps: x / (x.var(-1, unbiased=False, keepdim=True) + eps).sqrt() * w + b, "x is not centred"),
        (lambda x, w, b, eps: x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt() * w + b, "this is RMSNorm"),
        (
            lambda x, w, b, eps: (x - x.mean(-1, keepdim=True)) / (x.std(-1, unbiased=False, keepdim=True) + eps) * w + b,
            "ε added outside the square root",
        ),
        (lambda x, w, b, eps: (x - x.mean(-1, keepdim=True)) / x.std(-1, unbiased=False, keepdim=True) * w + b, "ε is missing"),
        (lambda x, w, b, eps: F.layer_norm(x, x.shape[-1:], eps=eps), "the gain w and bias b are missing"),
    ],
    lesson1.attention_pattern: [
        (lambda q, k: pattern_with(q, k, mask=None), "no causal mask"),
        (lambda q, k: pattern_with(q, k, mask=0.0), "masked with 0 instead of -inf"),
        (lambda q, k: pattern_with(q, k, after=True), "masked after the softmax"),
        (lambda q, k: pattern_with(q, k, triangle=lambda m: m.tril()), "the mask covers the past"),  # tril for triu
        (lambda q, k: pattern_with(q, k, triangle=lambda m: m.tril(-1)), "the mask covers the past"),
        (lambda q, k: pattern_with(q, k, triangle=lambda m: m.triu()), "the diagonal is masked too"),
        (lambda q, k: pattern_with(q, k, scale=False), "scores not scaled"),
        (lambda q, k: pattern_with(q, k, dim=-2), "softmax over the query axis"),
    ],
    lesson1.attention: [
        (attention_with(lambda q, k: pattern_with(q, k, mask=None)), "no causal mask"),
        (attention_with(lambda q, k: pattern_with(q, k, scale=False)), "scores not scaled"),
        (attention_with(b_O=False), "b_O is missing"),
        (attention_with(b_V=False), "b_V is missing"),
    ],
    lesson1.gelu: [
        (F.gelu, "exact (erf) GELU"),
        (torch.relu, "this is ReLU"),
        (lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * x)), "x³ term is missing"),
        (lambda x: x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))), "constant factor of 2"),
    ],
    lesson1.mlp: [
        (lambda x, m: F.gelu(x @ m.W_in + m.b_in) @ m.W_out + m.b_out, "the exact (erf) GELU"),
        (lambda x, m: torch.relu(x @ m.W_in + m.b_in) @ m.W_out + m.b_out, "ReLU where GPT-2 has the GELU"),
        (lambda x, m: gelu_tanh(x @ m.W_in + m.b_in) @ m.W_out, "b_out is missing"),
        (lambda x, m: gelu_tanh(x @ m.W_in) @ m.W_out + m.b_out, "b_in is missing"),
        (lambda x, m: (gelu_tanh(x @ m.W_in) + m.b_in) @ m.W_out + m.b_out, "b_in is added after the GELU"),
    ],
    lesson1.forward: [
        (forward_with(residual=False), "no residual connection"),
        (forward_with(order="post"), "post-LN"),
        (forward_with(final_ln=False), "the final LayerNorm is missing"),
    ],
    lesson2.fold_layer_norm_into: [
        (lambda w, b, W, c: (W, b @ W + c), "W' is W unchanged"),
        (lambda w, b, W, c: (W * w, b @ W + c), "w scales the wrong axis"),
        (lambda w, b, W, c: (w[:, None] * W, c), "missing b @ W"),
        (lambda w, b, W, c: (w[:, None] * W, b @ (w[:, None] * W) + c), "uses the folded W'"),
        (lambda w, b, W, c: (torch.zeros_like(W), b @ W + c), "returned all zeros"),  # not "wrong axis"
        (fold_in_place, "in place"),
    ],
    lesson2.center_reading: [
        (lambda W: W - W.mean(1, keepdim=True), "centred over the wrong axis"),
        (lambda W: W - W.mean(), "one mean for the whole matrix"),
        (lambda W: W, "nothing subtracted"),
    ],
    lesson2.center_writing: [
        (lambda W: W - W.mean(0, keepdim=True), "wrong axis"),
        (lambda W: W - W.mean(), "one mean for the whole matrix"),
        (lambda W: W, "nothing subtracted"),
    ],
    lesson2.center_unembed: [
        (
            lambda W_U, b_U: (W_U - W_U.mean(0, keepdim=True), b_U - b_U.mean()),
            "W_U centred over d_model: the logits shift by the same amount for every token only when each row of W_U "
            "loses its mean over the vocabulary (the last axis)",  # the whole sentence: it used to stop mid-way
        ),
        (lambda W_U, b_U: (W_U - W_U.mean(), b_U - b_U.mean()), "one number subtracted from all of W_U"),
        (lambda W_U, b_U: (W_U - W_U.mean(-1, keepdim=True), b_U), "b_U unchanged"),
    ],
    lesson2.fold_value_bias: [
        (lambda b_V, W_O, b_O: (b_V, b_O + torch.einsum("he,hed->d", b_V, W_O)), "b_V is still there"),
        (lambda b_V, W_O, b_O: (torch.zeros_like(b_V), b_O + b_V[0] @ W_O[0]), "only head 0"),
        (lambda b_V, W_O, b_O: (torch.zeros_like(b_V), b_O - torch.einsum("he,hed->d", b_V, W_O)), "subtracted instead of added"),
        (lambda b_V, W_O, b_O: (torch.ones_like(b_V), b_O), "differs from the right answer"),  # unforeseen; b_V' expected 0
    ],
    lesson3.mean_norm_without_bos: [
        (lambda norms: np.concatenate(norms, axis=1).mean(1), "BOS is included"),
        (lambda norms: np.mean([n[:, 1:].mean(1) for n in norms], axis=0), "a mean of the prompts' means"),
        (lambda norms: np.concatenate([n[:, :-1] for n in norms], axis=1).mean(1), "the last position was left out"),
        (lambda norms: np.concatenate([n[1:] for n in norms], axis=1).mean(1), "n[1:] drops layer 0, a row"),
    ],
    lesson3.endpoint_rate: [
        (lambda n, a, b: (n[b] / n[a]) ** (1 / (b - a + 1)), "the root is one too deep"),
        (lambda n, a, b: n[b] / n[a], "the ratio is the total growth"),
        (lambda n, a, b: (n[a] / n[b]) ** (1 / (b - a)), "upside down"),
        (lambda n, a, b: (n[b] / n[a]) ** 1 / (b - a), "needs its brackets"),
    ],
    lesson3.fitted_rate: [
        (lambda n, a, b: np.exp(slope(np.arange(a, b + 1), n[a : b + 1])), "fitted to the norms, not to log(norm)"),
        (lambda n, a, b: np.exp(slope(np.arange(a, b + 1), np.log10(n[a : b + 1]))), "log10 fitted"),
        (lambda n, a, b: np.exp(slope(np.arange(len(n)), np.log(n))), "fitted over every layer"),
        (lambda n, a, b: np.exp(slope(np.arange(a, b), np.log(n[a:b]))), "was left out: a slice stops before its end"),
        (lambda n, a, b: slope(np.arange(a, b + 1), np.log(n[a : b + 1])), "the slope itself"),
        (lambda n, a, b: np.exp(np.polyfit(np.arange(a, b + 1), np.log(n[a : b + 1]), 1)[1]), "exp of the intercept"),
    ],
    lesson3.r_squared: [
        (lambda n, a, b: np.corrcoef(np.arange(a, b + 1), np.log(n[a : b + 1]))[0, 1], "this is r, the correlation"),
        (lambda n, a, b: np.corrcoef(np.arange(a, b + 1), n[a : b + 1])[0, 1] ** 2, "R² of a line through the norms"),
        (lambda n, a, b: np.corrcoef(np.arange(a, b), np.log(n[a:b]))[0, 1] ** 2, "was left out"),
    ],
    lesson3.W_OV_frobenius: [
        (lambda W_V, W_O: (W_V @ W_O).pow(2).sum((1, 2)), "the square root is missing"),
        (lambda W_V, W_O: W_V.norm(dim=(1, 2)) * W_O.norm(dim=(1, 2)), "only an upper bound"),
        (lambda W_V, W_O: torch.linalg.matrix_norm(W_O @ W_V), "the other product"),
        (lambda W_V, W_O: torch.linalg.matrix_norm(W_V @ W_O, ord=2), "the spectral norm"),
    ],
    lesson3.appendix1: [
        (lambda pre, a, m, post: (post / pre, (a + m) / pre), "this is g, not g − 1"),
        (lambda pre, a, m, post: (post / pre - 1, (a + m) / post), "divided by ‖post‖"),
        (lambda pre, a, m, post: (post / pre - 1, m / pre), "only one sublayer"),
    ],
    lesson4.normalized_after_scaling: [
        (lambda m, t, l, c: scaled_ln(m, t, l, c, returns=False), "the scaling never reached the model"),
        (lambda m, t, l, c: scaled_ln(m, t, l, c, at="hook_resid_post"), "you hooked blocks.3.hook_resid_post, after the read"),
        (lambda m, t, l, c: c * scaled_ln(m, t, l, 1.0), "LayerNorm's output was scaled, not its input"),
        (scaled_residual, "this is the scaled residual itself"),
        (lambda m, t, l, c: scaled_ln(m, t, l, c, read="hook_resid_pre"), "this is the block's input, unscaled"),
    ],
    lesson4.feature_left: [
        (lambda m, t, l, d: feature_with(m, t, l, d, unit=False), "projected onto the direction itself"),
        (lambda m, t, l, d: feature_with(m, t, l, d, difference=False), "the patched run alone"),
        (lambda m, t, l, d: feature_with(m, t, l, d, bos=True), "BOS is included"),
        (lambda m, t, l, d: feature_with(m, t, l, d, at="hook_resid_pre"), "added before block"),
    ],
    lesson4.kept_fraction: [
        (lambda m, t, l, s: kept_with(m, t, l, s, by_s=True), "divided by s · ‖o‖"),
        (lambda m, t, l, s: kept_with(m, t, l, s, read=l), "own resid_post"),
        (lambda m, t, l, s: kept_with(m, t, l, s, bos=True), "BOS is included"),
        (lambda m, t, l, s: kept_with(m, t, l, s, stream="attn_out"), "attn_out was scaled"),
        (lambda m, t, l, s: kept_with(m, t, l, s, read=m.cfg.n_layers - 2), "one before the last"),
        (lambda m, t, l, s: kept_with(m, t, l, s, at=f"blocks.{l}.mlp.hook_post"), "mlp.hook_post was scaled"),
        (lambda m, t, l, s: kept_with(m, t, l, s, norm=True), "this is ‖change‖"),
        (lambda m, t, l, s: kept_with(m, t, l, s, sums=True), "a ratio of sums"),
        (lambda m, t, l, s: kept_with(m, t, l, s, aliased=True), "scaled the tensor it kept in place"),
    ],
    lesson4.no_attention_to_bos: [
        (lambda p, name: bos_ablation(p, name, renormalise=False), "the rows no longer sum to 1"),
        (lambda p, name: bos_ablation(p, name, rows=slice(None)), "leave row 0 as it is"),
        (
            lambda p, name: (p := bos_ablation(p, name, renormalise=False)) / p.sum(-2, keepdim=True),
            "renormalised over the queries",
        ),
        (lambda p, name: None, "the pattern is unchanged"),
    ],
}


def test_every_exercise_has_at_least_three_typical_mistakes_tested_and_hints():
    exercises = [checker for checkers in CHECKERS.values() for checker in checkers]
    assert set(MISTAKES) == set(exercises)
    assert all(len(mistakes) >= 3 for mistakes in MISTAKES.values())
    for number, module in LESSONS.items():
        assert set(module.hint.hints) == {checker.__name__ for checker in module.CHECKERS}, f"lesson {number}"
        assert all(len(hints) >= 2 for hints in module.hint.hints.values())


@pytest.mark.parametrize(
    "checker, wrong, diagnosis",
    [(checker, wrong, diagnosis) for checker, cases in MISTAKES.items() for wrong, diagnosis in cases],
    ids=[f"{checker.__module__[-7:]}.{checker.__name__}: {d}" for checker, cases in MISTAKES.items() for _, d in cases],
)
def test_a_typical_mistake_gets_its_own_diagnosis(checker, wrong, diagnosis):
    with pytest.raises(Mistake) as mistake:
        checker(wrong)
    assert diagnosis in str(mistake.value), str(mistake.value)


def test_wrong_shapes_and_types_are_named():
    with pytest.raises(Mistake, match=r"✗ gelu returned NoneType; expected a tensor of shape \[1001\]"):
        lesson1.gelu(lambda x: None)
    with pytest.raises(Mistake, match=r"✗ embed returned shape \[2, 12\]; expected \[2, 12, 160\]"):
        lesson1.embed(lambda tokens, W_E, W_pos: tokens.float())
    with pytest.raises(Mistake, match=r"must return a pair \(W', bias'\); it returned tensor \[32, 32\]"):
        lesson2.fold_layer_norm_into(lambda w, b, W, bias: W)


def test_a_crash_in_the_students_function_names_the_shapes_it_was_called_with():
    with pytest.raises(Crash) as crash:
        lesson1.embed(embed_positions_by_batch)
    message = str(crash.value)
    assert "embed raised RuntimeError: The size of tensor a (12) must match the size of tensor b (2)" in message
    assert "tokens = tensor [2, 12] int64, W_E = tensor [50257, 160], W_pos = tensor [256, 160]" in message
    with pytest.raises(Crash, match=r"W_U = tensor \[32, 101\], b_U = tensor \[101\]"):
        lesson2.center_unembed(center_unembed_no_keepdim)
    with pytest.raises(Crash, match=r"norms = list of 3 arrays \[4, 3\], \[4, 9\], \[4, 5\]"):
        lesson3.mean_norm_without_bos(lambda norms: np.stack(norms))
    with pytest.raises(Mistake, match=r"embed is not written yet"):
        lesson1.embed(lambda tokens, W_E, W_pos: (_ for _ in ()).throw(NotImplementedError("write embed here")))


def test_what_a_student_sees_is_the_message_and_their_own_lines_not_the_checkers_frames():
    with pytest.raises(Crash) as crash:
        lesson1.embed(embed_positions_by_batch)
    shown = "".join(crash.value._render_traceback_())  # what IPython and Jupyter print for it
    assert "embed_positions_by_batch" in shown and "W_pos[: tokens.shape[0]]" in shown
    assert str(core.HERE) not in shown and "compare" not in shown and "raise Mistake" not in shown
    with pytest.raises(Mistake) as mistake:
        lesson1.gelu(torch.relu)
    assert mistake.value._render_traceback_() == [str(mistake.value)]


def test_in_a_notebook_a_failed_check_shows_only_its_message(tmp_path):
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("from lessons.check import lesson1 as check\nimport torch"),
            nbformat.v4.new_code_cell("def gelu(x):\n    return torch.relu(x)\n\ncheck.gelu(gelu)"),
        ]
    )
    client = NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    with pytest.raises(CellExecutionError) as error:
        client.execute()
    shown = str(error.value)
    assert "✗ gelu: this is ReLU" in shown
    assert "lessons/check" not in shown and "compare(" not in shown, shown


def test_a_crash_inside_a_hook_shows_the_students_lines_and_none_of_contextlib_instrument_torch_or_the_model():
    with pytest.raises(Crash) as crash:
        lesson4.kept_fraction(kept_crashing_in_a_hook)
    shown = "".join(crash.value._render_traceback_())
    assert "kept_crashing_in_a_hook" in shown and "torch.ones(s.shape)" in shown and "model(tokens, unembed=False)" in shown
    for theirs in ("contextlib.py", "instrument/__init__.py", "minigpt/model.py", "torch/nn", "lessons/check"):
        assert theirs not in shown, shown
    assert "kept_fraction raised AttributeError: 'float' object has no attribute 'shape'" in shown


def test_an_in_place_change_to_the_direction_is_not_called_the_models_weight():
    def feature_left(model, tokens, layer, direction):
        direction /= direction.norm()  # in place: the caller's direction is now a unit vector
        return feature_with(model, tokens, layer, direction)

    with pytest.raises(Mistake, match=r"changed its input direction in place") as mistake:
        lesson4.feature_left(feature_left)
    assert "the direction you pass in" in str(mistake.value) and "weight" not in str(mistake.value)


def test_one_number_that_is_wrong_is_not_called_off_by_a_constant_factor():
    with pytest.raises(Mistake) as mistake:
        lesson3.endpoint_rate(lambda n, a, b: 1.5)
    assert "constant factor" not in str(mistake.value) and "differs from the right answer" in str(mistake.value)


def test_an_in_place_fold_is_caught_before_it_corrupts_the_model():
    with pytest.raises(Mistake, match=r"changed its input W in place") as mistake:
        lesson2.fold_layer_norm_into(fold_in_place)
    assert "your model's own weight" in str(mistake.value)
    lesson2.center_reading(lambda W: W - W.mean(0, keepdim=True))  # a right answer passes (and prints ✓)


def test_the_fallback_message_never_divides_by_zero_and_zeros_are_not_a_wrong_axis():
    with pytest.raises(Mistake, match=r"b_V'\) differs from the right answer by up to 1 \(relative 1\)"):
        lesson2.fold_value_bias(lambda b_V, W_O, b_O: (torch.ones_like(b_V), b_O))
    with pytest.raises(Mistake, match=r"returned all zeros") as mistake:
        lesson2.fold_layer_norm_into(lambda w, b, W, c: (torch.zeros_like(W), b @ W + c))
    assert "axis" not in str(mistake.value)


def test_forward_built_on_a_wrong_piece_points_back_at_the_pieces():
    def forward(tokens, model):  # a correct forward pass over an embedding without positions
        x = model.W_E[tokens]
        for block in model.blocks:
            x = x + block.attn(ln(x, block.ln1.w, block.ln1.b))
            x = x + block.mlp(ln(x, block.ln2.w, block.ln2.b))
        return ln(x, model.ln_final.w, model.ln_final.b) @ model.W_E.T

    with pytest.raises(Mistake, match=r"forward is only as right as the functions it calls: do their checks above pass\?$"):
        lesson1.forward(forward)


def test_an_unforeseen_mistake_is_still_described():
    def attention_pattern(q, k):  # the mask shifted by one, and row 0 patched up by hand
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(q.shape[-1])
        future = torch.ones(q.shape[1], q.shape[1], dtype=torch.bool).triu(0)
        future[0, 0] = False
        return scores.masked_fill(future, float("-inf")).softmax(-1)

    with pytest.raises(Mistake, match=r"differs from the right answer by up to"):
        lesson1.attention_pattern(attention_pattern)


def test_hints_come_one_at_a_time_on_request_and_then_point_to_the_solved_twin(capsys):
    hint = core.Hints({"embed": ["first nudge", "second nudge"]}, solved="lessons/solutions/01-gpt2-from-scratch.ipynb")
    for _ in range(3):
        hint("embed")
    assert capsys.readouterr().out.splitlines() == [
        "hint 1 of 2 for embed: first nudge",
        "hint 2 of 2 for embed: second nudge",
        "no more hints for embed: its answer is in lessons/solutions/01-gpt2-from-scratch.ipynb, after you have tried",
    ]
    with pytest.raises(KeyError, match="this lesson's exercises are embed"):
        hint("embedding")


# ---------------------------------------------------------------------------------------------
# The notebooks


RUNNING_THE_MODEL = {"model(tokens, unembed=False)", "model(tokens)"}  # a line the lessons teach; not an answer


def solution_lines(name: str) -> list[str]:
    """The lines of code in the source's solution blocks that carry an idea (not short, a comment, or running the model)."""
    source = (build.SOURCES / f"{name}.py").read_text(encoding="utf-8")
    lines = [line.strip() for block in build.SOLUTION.finditer(source) for line in block.group(2).splitlines()]
    return [line for line in lines if len(line) >= 16 and not line.startswith(("#", '"""')) and line not in RUNNING_THE_MODEL]


@pytest.mark.parametrize("name", build.names())
def test_notebooks_are_what_their_source_builds(name):
    for path, text in build.build(name).items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path} is out of date: edit {build.SOURCES / name}.py, run python -m lessons.build"
        )


@pytest.mark.parametrize("name", build.names())
def test_titles_are_headings_and_the_first_cell_sets_up_colab(name):
    notebook = nbformat.read(build.LESSONS / f"{name}.ipynb", as_version=4)
    assert notebook.cells[0].source == build.COLAB
    markdown = [cell.source for cell in notebook.cells if cell.cell_type == "markdown"]
    assert markdown[0].startswith(f"# Lesson {int(name[:2])}: ")
    sections = [line for text in markdown for line in text.splitlines() if re.match(r"#+ ", line)]
    assert len([s for s in sections if s.startswith("## ")]) >= 4
    assert not [line for text in markdown for line in text.splitlines() if line.startswith(" ") and line.strip().startswith("#")]


@pytest.mark.parametrize("name", build.names())
def test_no_exercise_notebook_shows_its_solution(name):
    exercise = nbformat.read(build.LESSONS / f"{name}.ipynb", as_version=4)
    text = "\n".join(cell.source for cell in exercise.cells)
    hints = " ".join(h for hints in LESSONS[int(name[:2])].hint.hints.values() for h in hints)
    for line in solution_lines(name):
        assert line not in text, f"the exercise notebook shows a solution line: {line}"
        assert line not in hints, f"a hint gives a solution line away: {line}"


@pytest.mark.parametrize("name", build.names())
def test_each_exercise_notebook_is_its_solved_twin_but_the_exercise_bodies(name):
    exercise = nbformat.read(build.LESSONS / f"{name}.ipynb", as_version=4)
    solved = nbformat.read(build.LESSONS / "solutions" / f"{name}.ipynb", as_version=4)
    assert len(exercise.cells) == len(solved.cells)
    n_exercises = 0
    for ours, theirs in zip(exercise.cells, solved.cells):
        assert ours.cell_type == theirs.cell_type and not ours.get("outputs") and not theirs.get("outputs")
        if "exercise" not in ours.metadata.get("tags", []):
            assert ours.source == theirs.source
            continue
        n_exercises += 1
        messages = [
            node.exc.args[0].value
            for node in ast.walk(ast.parse(ours.source))
            if isinstance(node, ast.Raise) and getattr(node.exc, "func", None) and node.exc.func.id == "NotImplementedError"
        ]
        (function,) = re.findall(r"^def (\w+)", ours.source, re.M)
        assert messages == [f"write {function} here; check.hint({function!r}) gives a nudge"]
        assert "NotImplementedError" not in theirs.source
        head = ours.source[: ours.source.index("raise NotImplementedError")]
        assert theirs.source.startswith(head), "the exercise and its solution differ above the body"
        namespace = {}
        exec(ours.source, namespace)  # the placeholder raises before it reads any argument
        with pytest.raises(NotImplementedError):
            namespace[function](*[None] * namespace[function].__code__.co_argcount)
    assert n_exercises == len(CHECKERS[int(name[:2])])


# The solved notebooks' CPU time, as the kernel counts it (all its threads): unlike the wall clock, it
# does not grow when other processes share the CPU, and on an idle machine the wall clock is below it.
CPU_SECONDS = "import time\nprint(f'kernel CPU time: {time.process_time():.1f} s')"


@pytest.mark.parametrize("name", build.names())
def test_each_solved_notebook_runs_offline_in_under_a_minute_and_prints_what_the_guide_says(name, tmp_path):
    notebook = nbformat.read(build.LESSONS / "solutions" / f"{name}.ipynb", as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(CPU_SECONDS))
    start = time.perf_counter()
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    wall = time.perf_counter() - start
    printed = expected.printed(notebook)
    *printed, cpu_line = printed.rstrip("\n").split("\n")
    cpu = float(re.search(r"([\d.]+) s", cpu_line)[1])
    assert "".join(printed).count("✓") == len(CHECKERS[int(name[:2])])
    assert expected.figures(notebook), "no inline figure"
    assert cpu < 60, f"{name}: {cpu:.0f} s of CPU time ({wall:.0f} s wall)"
    expected.assert_same("\n".join(printed) + "\n", expected.read(name))


def test_a_shape_that_says_how_it_went_wrong_gets_a_nudge():
    with pytest.raises(Mistake, match=r"multiplied every head's b_V with every head's W_O"):
        lesson2.fold_value_bias(lambda b_V, W_O, b_O: (torch.zeros_like(b_V), b_O + b_V @ W_O))
    with pytest.raises(Mistake, match=r"one number for all heads"):
        lesson3.W_OV_frobenius(lambda W_V, W_O: torch.linalg.norm(W_V @ W_O))
    with pytest.raises(Mistake, match=r"returned shape \[\]; expected \[1001\]: one number for everything"):
        lesson1.gelu(lambda x: x.sum())


def test_the_guide_quotes_what_the_solved_notebooks_print_and_draw():
    blocks = expected.guide_blocks(expected.GUIDE.read_text(encoding="utf-8"))
    assert set(blocks) == set(build.names())
    for name in build.names():
        n_figures = len(list(expected.EXPECTED.glob(f"{name}-*.png")))
        assert n_figures >= 1, f"{name} has no figure for the slides"
        assert blocks[name] == expected.quote(name, expected.read(name), n_figures), f"run python -m lessons.expected ({name})"


def test_printed_numbers_are_compared_to_their_last_printed_digit():
    expected.assert_same("rate ×1.0241, R² 0.53, change 6.1e-07\n", "rate ×1.0240, R² 0.53, change 4.8e-07\n")
    with pytest.raises(AssertionError, match="printed 1.0243 where 1.0240 is expected"):
        expected.assert_same("rate ×1.0243\n", "rate ×1.0240\n")
    with pytest.raises(AssertionError, match="expected"):
        expected.assert_same("steady growth: True\n", "steady growth: False\n")


def test_the_shipped_checkpoint_loads_and_its_provenance_records_the_same_growth_in_bfloat16():
    import json

    import lessons
    import weights

    provenance = json.loads((lessons.MID_TRAINING / "provenance.json").read_text())
    size = sum(f.stat().st_size for f in lessons.MID_TRAINING.iterdir())
    assert size <= 25_000_000 and provenance["bytes"] <= 25_000_000
    as_trained, shipped = provenance["growth_float32"], provenance["growth_bfloat16"]
    assert as_trained["steady"]["steady"] and shipped["steady"]["steady"]
    assert abs(as_trained["fit_rate"] - shipped["fit_rate"]) < 1e-3 and abs(as_trained["r2"] - shipped["r2"]) < 1e-3
    model, _ = weights.load(lessons.MID_TRAINING)
    assert model.cfg.n_layers == 6 and model.source["dtype"] == "float32"
