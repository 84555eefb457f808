"""The lessons: every checker names typical mistakes (each written here as a small wrong implementation),
the exercise notebooks stay in step with their solved twins, and the solved notebooks run offline."""

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

from lessons import build, check

# ---------------------------------------------------------------------------------------------
# Wrong implementations, as a student might write them


def pattern_with(q, k, *, scale=True, mask=float("-inf"), dim=-1):
    scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / (math.sqrt(q.shape[-1]) if scale else 1)
    if mask is not None:
        scores = scores.masked_fill(torch.ones(q.shape[1], q.shape[1], dtype=torch.bool).triu(1), mask)
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


def log_fit(x, y):
    return np.polyfit(x, y, 1)[0]


MISTAKES = {
    check.embed: [
        (lambda tokens, W_E, W_pos: W_E[tokens], "only the token embeddings"),
        (lambda tokens, W_E, W_pos: W_pos[: tokens.shape[1]].expand(*tokens.shape, -1), "only the position embeddings"),
        (lambda tokens, W_E, W_pos: W_E[tokens] + W_pos[tokens % W_pos.shape[0]], "looked up by token id"),
    ],
    check.layer_norm: [
        (lambda x, w, b, eps: (x - x.mean(-1, keepdim=True)) / (x.var(-1, keepdim=True) + eps).sqrt() * w + b, "N − 1"),
        (lambda x, w, b, eps: x / (x.var(-1, unbiased=False, keepdim=True) + eps).sqrt() * w + b, "x is not centred"),
        (
            lambda x, w, b, eps: (x - x.mean(-1, keepdim=True)) / (x.std(-1, unbiased=False, keepdim=True) + eps) * w + b,
            "ε added outside the square root",
        ),
        (lambda x, w, b, eps: F.layer_norm(x, x.shape[-1:], eps=eps), "the gain w and bias b are missing"),
    ],
    check.attention_pattern: [
        (lambda q, k: pattern_with(q, k, mask=None), "no causal mask"),
        (lambda q, k: pattern_with(q, k, mask=0.0), "masked with 0 instead of -inf"),
        (lambda q, k: pattern_with(q, k, scale=False), "scores not scaled"),
        (lambda q, k: pattern_with(q, k, dim=-2), "softmax over the query axis"),
    ],
    check.attention: [
        (attention_with(lambda q, k: pattern_with(q, k, mask=None)), "no causal mask"),
        (attention_with(lambda q, k: pattern_with(q, k, scale=False)), "scores not scaled"),
        (attention_with(b_O=False), "b_O is missing"),
        (attention_with(b_V=False), "b_V is missing"),
    ],
    check.gelu: [
        (F.gelu, "exact (erf) GELU"),
        (torch.relu, "this is ReLU"),
        (lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * x)), "x³ term is missing"),
        (lambda x: x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))), "constant factor of 2"),
    ],
    check.mlp: [
        (lambda x, m: F.gelu(x @ m.W_in + m.b_in) @ m.W_out + m.b_out, "the exact (erf) GELU"),
        (lambda x, m: torch.relu(x @ m.W_in + m.b_in) @ m.W_out + m.b_out, "ReLU where GPT-2 has the GELU"),
        (lambda x, m: F.gelu(x @ m.W_in + m.b_in, approximate="tanh") @ m.W_out, "b_out is missing"),
        (lambda x, m: F.gelu(x @ m.W_in, approximate="tanh") @ m.W_out + m.b_out, "b_in is missing"),
    ],
    check.forward: [
        (forward_with(residual=False), "no residual connection"),
        (forward_with(order="post"), "post-LN"),
        (forward_with(final_ln=False), "the final LayerNorm is missing"),
    ],
    check.fold_layer_norm_into: [
        (lambda w, b, W, c: (w[:, None] * W, b @ W + c), "centre the reading weights"),
        (lambda w, b, W, c: ((w[:, None] * W) - (w[:, None] * W).mean(0), c), "missing b @ W"),
        (
            lambda w, b, W, c: (
                (w[:, None] * W) - (w[:, None] * W).mean(0),
                b @ ((w[:, None] * W) - (w[:, None] * W).mean(0)) + c,
            ),
            "uses the folded W'",
        ),
        (
            lambda w, b, W, c: ((w[:, None] * W) - (w[:, None] * W).mean(1, keepdim=True), b @ W + c),
            "centred over the wrong axis",
        ),
    ],
    check.center_writing: [
        (lambda W: W - W.mean(0, keepdim=True), "wrong axis"),
        (lambda W: W - W.mean(), "one mean for the whole matrix"),
        (lambda W: W, "nothing subtracted"),
    ],
    check.center_unembed: [
        (lambda W_U, b_U: (W_U - W_U.mean(0, keepdim=True), b_U - b_U.mean()), "W_U centred over d_model"),
        (lambda W_U, b_U: (W_U - W_U.mean(), b_U - b_U.mean()), "one number subtracted from all of W_U"),
        (lambda W_U, b_U: (W_U - W_U.mean(-1, keepdim=True), b_U), "b_U unchanged"),
    ],
    check.fold_value_bias: [
        (lambda b_V, W_O, b_O: (b_V, b_O + torch.einsum("he,hed->d", b_V, W_O)), "b_V is still there"),
        (lambda b_V, W_O, b_O: (torch.zeros_like(b_V), b_O + b_V[0] @ W_O[0]), "only head 0"),
        (lambda b_V, W_O, b_O: (torch.zeros_like(b_V), b_O - torch.einsum("he,hed->d", b_V, W_O)), "subtracted instead of added"),
    ],
    check.mean_norm_without_bos: [
        (lambda norms: np.concatenate(norms, axis=1).mean(1), "BOS is included"),
        (lambda norms: np.mean([n[:, 1:].mean(1) for n in norms], axis=0), "a mean of the prompts' means"),
        (lambda norms: np.concatenate([n[:, :-1] for n in norms], axis=1).mean(1), "the last position was left out"),
    ],
    check.endpoint_rate: [
        (lambda n, a, b: (n[b] / n[a]) ** (1 / (b - a + 1)), "the root is one too deep"),
        (lambda n, a, b: n[b] / n[a], "the ratio is the total growth"),
        (lambda n, a, b: (n[a] / n[b]) ** (1 / (b - a)), "upside down"),
    ],
    check.fitted_rate: [
        (lambda n, a, b: np.exp(log_fit(np.arange(a, b + 1), n[a : b + 1])), "a straight line through the norms themselves"),
        (lambda n, a, b: np.exp(log_fit(np.arange(a, b + 1), np.log10(n[a : b + 1]))), "log10 fitted"),
        (lambda n, a, b: np.exp(log_fit(np.arange(len(n)), np.log(n))), "fitted over every layer"),
        (lambda n, a, b: log_fit(np.arange(a, b + 1), np.log(n[a : b + 1])), "the slope itself"),
    ],
    check.W_OV_frobenius: [
        (lambda W_V, W_O: (W_V @ W_O).pow(2).sum((1, 2)), "the square root is missing"),
        (lambda W_V, W_O: W_V.norm(dim=(1, 2)) * W_O.norm(dim=(1, 2)), "only an upper bound"),
        (lambda W_V, W_O: torch.linalg.matrix_norm(W_O @ W_V), "the other product"),
    ],
}


def test_every_exercise_has_at_least_three_typical_mistakes_tested():
    exercises = [checker for checkers in check.CHECKERS.values() for checker in checkers]
    assert set(MISTAKES) == set(exercises)
    assert all(len(mistakes) >= 3 for mistakes in MISTAKES.values())


@pytest.mark.parametrize(
    "checker, wrong, hint",
    [(checker, wrong, hint) for checker, cases in MISTAKES.items() for wrong, hint in cases],
    ids=[f"{checker.__name__}: {hint}" for checker, cases in MISTAKES.items() for _, hint in cases],
)
def test_a_typical_mistake_gets_its_own_hint(checker, wrong, hint):
    with pytest.raises(check.Mistake) as mistake:
        checker(wrong)
    assert hint in str(mistake.value), str(mistake.value)


def test_wrong_shapes_and_types_are_named():
    with pytest.raises(check.Mistake, match=r"✗ gelu returned NoneType; expected a tensor of shape \[1001\]"):
        check.gelu(lambda x: None)
    with pytest.raises(check.Mistake, match=r"✗ embed returned shape \[2, 12\]; expected \[2, 12, 160\]"):
        check.embed(lambda tokens, W_E, W_pos: tokens.float())


def test_forward_built_on_a_wrong_piece_points_back_at_the_pieces():
    def forward(tokens, model):  # a correct forward pass over an embedding without positions
        x = model.W_E[tokens]
        for block in model.blocks:
            x = x + block.attn(ln(x, block.ln1.w, block.ln1.b))
            x = x + block.mlp(ln(x, block.ln2.w, block.ln2.b))
        return ln(x, model.ln_final.w, model.ln_final.b) @ model.W_E.T

    with pytest.raises(check.Mistake, match=r"forward is only as right as the functions it calls: do their checks above pass\?$"):
        check.forward(forward)


def test_an_unforeseen_mistake_is_still_described():
    def attention_pattern(q, k):  # the mask shifted by one: position q may not read itself
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(q.shape[-1])
        future = torch.ones(q.shape[1], q.shape[1], dtype=torch.bool).triu(0)
        future[0, 0] = False  # or row 0 would be all -inf
        return scores.masked_fill(future, float("-inf")).softmax(-1)

    with pytest.raises(check.Mistake, match=r"differs from minigpt's answer by up to"):
        check.attention_pattern(attention_pattern)


# ---------------------------------------------------------------------------------------------
# The notebooks


@pytest.mark.parametrize("name", build.names())
def test_notebooks_are_what_their_source_builds(name):
    for path, text in build.build(name).items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path} is out of date: edit {build.SOURCES / name}.py, run python -m lessons.build"
        )


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
        hints = [
            node.exc.args[0].value
            for node in ast.walk(ast.parse(ours.source))
            if isinstance(node, ast.Raise) and getattr(node.exc, "func", None) and node.exc.func.id == "NotImplementedError"
        ]
        assert len(hints) == 1 and len(hints[0]) >= 20, f"exercise without a hint:\n{ours.source}"
        assert "NotImplementedError" not in theirs.source
        head = ours.source[: ours.source.index("raise NotImplementedError")]
        assert theirs.source.startswith(head), "the exercise and its solution differ above the body"
        namespace = {}
        exec(ours.source, namespace)  # the placeholder raises before it reads any argument
        (function,) = [value for key, value in namespace.items() if callable(value) and not key.startswith("__")]
        with pytest.raises(NotImplementedError, match=re.escape(hints[0])):
            function(*[None] * function.__code__.co_argcount)
    assert n_exercises == len(check.CHECKERS[int(name[:2])])


@pytest.mark.parametrize("name", build.names())
def test_each_solved_notebook_runs_offline_with_figures_in_under_3_minutes(name, tmp_path):
    notebook = nbformat.read(build.LESSONS / "solutions" / f"{name}.ipynb", as_version=4)
    start = time.perf_counter()
    NotebookClient(notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    seconds = time.perf_counter() - start
    outputs = [output for cell in notebook.cells for output in cell.get("outputs", [])]
    printed = "".join(output.get("text", "") for output in outputs)
    assert printed.count("✓") == len(check.CHECKERS[int(name[:2])])
    assert any("image/png" in output.get("data", {}) for output in outputs), "no inline figure"
    assert seconds < 180
