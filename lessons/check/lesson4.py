"""Lesson 4's checkers: hooks and interventions that test the post's theories. Each runs the student's
function on the processed bundled model and compares it with the same intervention written with
`instrument.hooks` here.

    from lessons.check import lesson4 as check
    check.normalized_after_scaling(normalized_after_scaling)
    check.hint("normalized_after_scaling")
"""

from collections.abc import Callable
from contextlib import contextmanager

import torch

import instrument

from .core import Hints, Mistake, as_tensor, call, compare, generator, passed
from .models import bundled

__all__ = ["Mistake", "feature_left", "hint", "kept_fraction", "no_attention_to_bos", "normalized_after_scaling"]

hint = Hints(
    {
        "normalized_after_scaling": [
            "Two hooks in one `instrument.hooks` block: one that changes a tensor, one that only keeps one.",
            "The block's input is blocks.{layer}.hook_resid_pre; LayerNorm's output is blocks.{layer}.ln1.hook_normalized.",
            "A hook changes the forward pass only through what it returns: return the new tensor.",
        ],
        "feature_left": [
            "Run the model twice, without and with the addition, and keep resid_post at every layer from `layer` on.",
            "The feature's component in a vector v is v · d̂, with d̂ the direction divided by its norm.",
            "Average over positions 1 onwards (not BOS) and over the batch: one number per layer.",
        ],
        "kept_fraction": [
            "Keep o, the block's clean mlp_out; then run with mlp_out replaced by s · o, and compare the two final residuals.",
            "What was added to the stream is (s − 1) · o; measure the change along ô = o / ‖o‖, position by position.",
            "The fraction kept is (change along ô) / ((s − 1) · ‖o‖), averaged over positions 1 onwards.",
        ],
        "no_attention_to_bos": [
            "The pattern is [batch, n_heads, query_pos, key_pos]: BOS as a key is index 0 of the last axis.",
            "After removing BOS's weight, each row must again sum to 1.",
            "Query 0 is BOS itself and has nothing else to read: leave its row as it is.",
        ],
    },
    solved="lessons/solutions/04-hooks-and-theories.ipynb",
)

EOT = 50256


def _tokens(seed: int = 12, n_pos: int = 10) -> torch.Tensor:
    """Two prompts of random tokens, each with BOS (<|endoftext|>) first, as in the study."""
    body = torch.randint(0, EOT, (2, n_pos - 1), generator=generator(seed))
    return torch.cat([torch.full((2, 1), EOT), body], dim=1)


def _run(model, tokens, keep: list[str], edits: dict | None = None) -> dict[str, torch.Tensor]:
    """The tensors at `keep` while `edits` ({hook name: fn(tensor) → tensor}) change the forward pass."""
    kept = {}
    fns = {name: (lambda t, name, f=f: f(t)) for name, f in (edits or {}).items()}
    for name in keep:
        edit = fns.get(name)
        fns[name] = lambda t, name, edit=edit: kept.setdefault(name, t if edit is None else edit(t, name))
    with torch.no_grad(), instrument.hooks(model, fns):
        model(tokens, unembed=False)
    return kept


@contextmanager
def _watched(model):
    """Record, at every hook point, the tensor that reached it (before any hook of the student's changed it):
    [{name: tensor}], one dict per forward pass, so that a checker can tell where a student's edit took effect."""
    runs = []

    def watch(_module, _inputs, out, name):
        if name == names[0]:
            runs.append({})
        runs[-1][name] = out.detach().clone()

    points = instrument.hook_points(model)
    names = list(points)
    handles = [point.register_forward_hook(lambda m, i, o, name=name: watch(m, i, o, name)) for name, point in points.items()]
    try:
        yield runs
    finally:
        for handle in handles:
            handle.remove()


def _first_change(model, tokens, runs: list[dict]) -> str | None:
    """The hook point whose tensor the student changed first, judged from the first point downstream of it
    that saw a different tensor than a clean run: None if every run was clean."""
    names = list(instrument.hook_points(model))
    clean = _run(model, tokens, names)
    changed = [
        next((names[i - 1] for i, n in enumerate(names) if n in run and not torch.allclose(run[n], clean[n], rtol=1e-6)), None)
        for run in runs
        if run.get(names[0]) is not None and run[names[0]].shape == clean[names[0]].shape
    ]
    changed = [n for n in changed if n is not None]
    return min(changed, key=names.index) if changed else None


def normalized_after_scaling(fn: Callable) -> None:
    """fn(model, tokens, layer, c) → blocks.{layer}.ln1's output [batch, pos, d_model] when that block's input is scaled by c."""
    __tracebackhide__ = True
    model, tokens, layer = bundled(processed=True), _tokens(), 3
    pre, normalized = f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.ln1.hook_normalized"
    clean = _run(model, tokens, [pre, normalized])
    difference = 0.0
    for c in (0.01, 10.0):  # 0.01 first: there ε shows, so that an unscaled run is not right by accident
        expected = _run(model, tokens, [normalized], {pre: lambda t, c=c: c * t})[normalized]
        with _watched(model) as runs:
            got = call("normalized_after_scaling", fn, model, tokens, layer, c)
        edited = _first_change(model, tokens, runs)
        names = list(instrument.hook_points(model))
        if edited is not None and names.index(edited) >= names.index(normalized):
            unchanged = (
                f"you hooked {edited}, after the read: ln1 had already read the block's input by then, so its output "
                f"is unscaled. Scale {pre}, the input that ln1 reads"
            )
        else:
            unchanged = "the scaling never reached the model: a hook changes a tensor only by returning the new one"
        mistakes = {
            unchanged: clean[normalized],
            f"LayerNorm's output was scaled, not its input: scale {pre}, then read {normalized}": c * clean[normalized],
            "this is the scaled residual itself: return what LayerNorm makes of it (ln1.hook_normalized)": c * clean[pre],
            "this is the block's input, unscaled: return LayerNorm's output (ln1.hook_normalized)": clean[pre],
        }
        difference = max(difference, compare("normalized_after_scaling", got, expected, mistakes, rtol=1e-5))
    passed("normalized_after_scaling", "the same hooks on the processed bundled model (c = 0.01 and 10)", difference)


def _unit(seed: int, d_model: int) -> torch.Tensor:
    d = torch.randn(d_model, generator=generator(seed))
    d = d - d.mean()  # mean-free, as every vector of the processed model's residual stream
    return d / d.norm()


def _posts(model, tokens, layer: int, add_at: str, vector: torch.Tensor | None) -> torch.Tensor:
    """resid_post at layers layer.. [n_later, batch, pos, d_model], with `vector` added at hook `add_at`."""
    names = [f"blocks.{l}.hook_resid_post" for l in range(layer, model.cfg.n_layers)]
    kept = _run(model, tokens, names, {} if vector is None else {add_at: lambda t: t + vector})
    return torch.stack([kept[n] for n in names])


def feature_left(fn: Callable) -> None:
    """fn(model, tokens, layer, direction [d_model]) → [n_layers − layer]: at each layer from `layer` on, the mean
    (over the batch and positions ≥ 1) component along direction / ‖direction‖ of resid_post with the direction
    added at blocks.{layer}.hook_resid_post, minus resid_post without it."""
    __tracebackhide__ = True
    model, tokens, layer = bundled(processed=True), _tokens(13), 2
    unit = _unit(14, model.cfg.d_model)
    direction = 5.0 * unit
    at = f"blocks.{layer}.hook_resid_post"
    clean, patched = _posts(model, tokens, layer, at, None), _posts(model, tokens, layer, at, direction)

    def along(v, positions=slice(1, None)):
        return (v @ unit)[:, :, positions].mean((1, 2))

    before = _posts(model, tokens, layer, f"blocks.{layer}.hook_resid_pre", direction)
    mistakes = {
        "projected onto the direction itself: divide by ‖direction‖ to get the component along its unit vector": along(
            patched - clean
        )
        * 5.0,
        "the patched run alone: the feature's share is what the addition changed, patched minus clean": along(patched),
        "BOS is included in the mean: average over positions 1 onwards": along(patched - clean, slice(None)),
        "the change's norm, not its component along the direction (which is what the feature is)": (patched - clean)[:, :, 1:]
        .norm(dim=-1)
        .mean((1, 2)),
        f"added before block {layer} (hook_resid_pre), not after it: add at blocks.{layer}.hook_resid_post": along(
            before - clean
        ),
    }
    got = call("feature_left", fn, model, tokens, layer, direction, inputs_are="the direction you pass in, which later cells use")
    difference = compare("feature_left", got, along(patched - clean), mistakes, rtol=1e-4)
    passed("feature_left", "the same hooks on the processed bundled model (a direction of norm 5 added at layer 2)", difference)


def _kept(
    model,
    tokens,
    layer: int,
    s: float,
    *,
    scale_at: str = "hook_mlp_out",
    stream: str = "mlp_out",
    read: int | None = None,
    by=None,
    bos=False,
    measure: str = "along",
    pool: str = "ratios",
    o_times: float = 1.0,
):
    """The fraction kept, and the answers of its usual mistakes: scale `scale_at` of block `layer` by s, read the
    resid_post of block `read` (the last by default), measure the change `along` ô (or its `norm`), divide by
    (s − 1) · ‖o‖ (or by(o)), and average the positions ≥ 1 (`pool`: the mean of the ratios, or `sums`: a ratio
    of sums); o_times: o as the student's code saw it (s, when a hook scaled the kept tensor in place)."""
    out, last = f"blocks.{layer}.hook_{stream}", f"blocks.{model.cfg.n_layers - 1 if read is None else read}.hook_resid_post"
    clean = _run(model, tokens, [out, last])
    scaled = _run(model, tokens, [last], {f"blocks.{layer}.{scale_at}": lambda t: s * t})[last]
    o = o_times * clean[out]
    change = scaled - clean[last]
    along = (change * o).sum(-1) / o.norm(dim=-1) if measure == "along" else change.norm(dim=-1)  # [batch, pos]
    added = (s - 1) * o.norm(dim=-1) if by is None else by(o)
    first = 0 if bos else 1
    if pool == "sums":
        return along[:, first:].sum() / added[:, first:].sum()
    return (along / added)[:, first:].mean()


# The inputs kept_fraction is checked on: (layer, s). Two scales, so that the usual slips (dividing by s,
# o scaled in place) differ from the right answer by different factors, and one slip does not pass for another.
KEPT_CASES = [(2, 3.0), (5, 0.5)]


def kept_fraction(fn: Callable) -> None:
    """fn(model, tokens, layer, s) → the fraction of (s − 1) · mlp_out of block `layer` still in the last layer's
    resid_post, along that output's direction, when the output is scaled by s (mean over positions ≥ 1)."""
    __tracebackhide__ = True
    model, tokens = bundled(processed=True), _tokens(15)
    last = model.cfg.n_layers - 1

    def each(change=lambda layer, s: {}):
        """[len(KEPT_CASES)]: the fraction on each case, with `change(layer, s)` as _kept's keywords."""
        return torch.stack([_kept(model, tokens, layer, s, **change(layer, s)) for layer, s in KEPT_CASES])

    mistakes = {
        "divided by s · ‖o‖: what was added is s · o − o = (s − 1) · o": each(
            lambda layer, s: {"by": lambda o: s * o.norm(dim=-1)}
        ),
        "read at the block's own resid_post, where nothing later has acted: read the last layer's": each(
            lambda layer, s: {"read": layer}
        ),
        f"read at block {last - 1}'s resid_post, one before the last: the last block is n_layers − 1 = {last}": each(
            lambda layer, s: {"read": last - 1}
        ),
        "BOS is included in the mean: average over positions 1 onwards": each(lambda layer, s: {"bos": True}),
        "attn_out was scaled: this exercise scales the block's MLP output, blocks.{layer}.hook_mlp_out": each(
            lambda layer, s: {"scale_at": "hook_attn_out", "stream": "attn_out"}
        ),
        "mlp.hook_post was scaled, the neurons before W_out: that scales o − b_out, not o. Scale blocks.{layer}.hook_mlp_out": (
            each(lambda layer, s: {"scale_at": "mlp.hook_post"})
        ),
        "this is ‖change‖, the size of the whole change: take only its component along ô = o / ‖o‖, (change · o) / ‖o‖": (
            each(lambda layer, s: {"measure": "norm"})
        ),
        "a ratio of sums: divide position by position, then average the fractions over positions ≥ 1": each(
            lambda layer, s: {"pool": "sums"}
        ),
        "o is the scaled output, s · o: your hook scaled the tensor it kept in place (`t *= s`), so the o you kept "
        "changed with it. Return a new tensor (`return s * t`), or keep a copy": each(lambda layer, s: {"o_times": s}),
    }
    one = torch.zeros((), dtype=torch.float64)  # each answer is one number
    answers = [call("kept_fraction", fn, model, tokens, layer, s) for layer, s in KEPT_CASES]
    got = torch.stack([as_tensor("kept_fraction", answer, one) for answer in answers])
    difference = compare("kept_fraction", got, each(), mistakes, rtol=1e-4)
    cases = " and ".join(f"block {layer}'s mlp_out × {s:g}" for layer, s in KEPT_CASES)
    passed("kept_fraction", f"the same hooks on the processed bundled model ({cases})", difference)


def _without_bos(pattern: torch.Tensor, *, rows=slice(1, None), renormalise="keys", zero="key") -> torch.Tensor:
    p = pattern.clone()
    if zero == "key":
        p[..., rows, 0] = 0
    else:
        p[..., 0, :] = 0
    if renormalise == "keys":
        p[..., rows, :] = p[..., rows, :] / p[..., rows, :].sum(-1, keepdim=True)
    elif renormalise == "queries":
        p = p / p.sum(-2, keepdim=True)
    return p


def no_attention_to_bos(fn: Callable) -> None:
    """fn(pattern [batch, n_heads, query_pos, key_pos], name) → the pattern with no weight on key 0 (BOS) for queries ≥ 1,
    each of those rows renormalised to sum to 1; query 0's row unchanged. A hook: it may also edit pattern in place."""
    __tracebackhide__ = True
    model, tokens = bundled(processed=True), _tokens(16)
    name = "blocks.2.attn.hook_pattern"
    pattern = _run(model, tokens, [name])[name]
    mistakes = {
        "the rows no longer sum to 1: divide each row (queries ≥ 1) by its sum after removing BOS's weight": _without_bos(
            pattern, renormalise=None
        ),
        "query 0 (BOS itself) has only BOS to read, so its row became 0/0 = NaN: leave row 0 as it is": _without_bos(
            pattern, rows=slice(None)
        ),
        "row 0 (BOS as the query) was zeroed: BOS as a key is column 0, the last axis [batch, n_heads, query_pos, key_pos]": (
            _without_bos(pattern, zero="query", renormalise=None)
        ),
        "renormalised over the queries (axis −2): each query's weights over the keys (the last axis) must sum to 1": _without_bos(
            pattern, renormalise="queries"
        ),
        "the pattern is unchanged: return the new pattern (or edit the one you are given in place)": pattern,
    }
    given = pattern.clone()
    returned = call("no_attention_to_bos", fn, given, name, in_place=True)
    got = given if returned is None else returned
    difference = compare("no_attention_to_bos", got, _without_bos(pattern), mistakes, rtol=1e-5)
    passed("no_attention_to_bos", "the BOS ablation on the processed bundled model's block 2 pattern", difference)


CHECKERS = [normalized_after_scaling, feature_left, kept_fraction, no_attention_to_bos]  # in the lesson's order
