"""Read or replace any tensor of the forward pass by its name.

Names are module paths to minigpt's HookPoints, the same as TransformerLens's:
"hook_embed", "blocks.3.hook_resid_post", "blocks.3.attn.hook_pattern", "ln_final.hook_scale", ...

    logits, cache = run_with_cache(model, tokens)                         # everything
    _, cache = run_with_cache(model, tokens, names=lambda n: "resid" in n,
                              reduce=lambda t, name: t.norm(dim=-1))     # only residual norms
    with hooks(model, {"blocks.0.attn.hook_pattern": ablate}):           # edit while running
        logits = model(tokens)
"""

import difflib
from collections.abc import Callable, Iterable
from contextlib import contextmanager

import torch

from minigpt import GPT2, HookPoint

# fn(tensor, name) -> a replacement tensor, or None to leave the tensor as it was.
HookFn = Callable[[torch.Tensor, str], torch.Tensor | None]
Names = None | Iterable[str] | Callable[[str], bool]


def hook_points(model: GPT2) -> dict[str, HookPoint]:
    """Every hook point of the model by name, in the order the forward pass reaches them."""
    return {name: module for name, module in model.named_modules() if isinstance(module, HookPoint)}


def select(model: GPT2, names: Names) -> list[str]:
    """The hook names picked by `names`: None (all), a list of names, or a predicate on the name."""
    points = hook_points(model)
    if names is None:
        return list(points)
    if callable(names):
        return [name for name in points if names(name)]
    names = [names] if isinstance(names, str) else list(names)
    for name in names:
        if name not in points:
            close = difflib.get_close_matches(name, points, n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else f"; names look like {next(iter(points))!r}"
            raise KeyError(f"{name!r} is not a hook point of this {model.cfg.n_layers}-layer model{hint}")
    return names


@contextmanager
def hooks(model: GPT2, fns: dict[str, HookFn]):
    """Within the block, each named hook point calls fn(tensor, name); a returned tensor replaces the original.

    The hooks are removed on leaving the block, also when it raises.
    """
    points = hook_points(model)
    handles = []
    try:
        for name in select(model, list(fns)):
            fn = fns[name]
            handles.append(points[name].register_forward_hook(lambda _module, _inputs, out, fn=fn, name=name: fn(out, name)))
        yield model
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def run_with_cache(
    model: GPT2,
    tokens,
    names: Names = None,
    *,
    reduce: Callable[[torch.Tensor, str], torch.Tensor] | None = None,
    unembed: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run the model and keep the tensors at the selected hook points: (logits, {name: tensor}).

    reduce(tensor, name), if given, is applied as each tensor is produced and only its result is kept:
    e.g. `lambda t, name: t.norm(dim=-1)` keeps [batch, pos] norms instead of [batch, pos, d_model].
    The cache holds the forward pass's own tensors, not copies; nothing in the forward pass modifies
    a tensor in place after its hook, so they stay as they were when produced.
    unembed=False skips ln_final and the unembedding and returns the final residual stream instead.
    """
    cache: dict[str, torch.Tensor] = {}

    def keep(tensor: torch.Tensor, name: str) -> None:
        cache[name] = tensor if reduce is None else reduce(tensor, name)

    with hooks(model, dict.fromkeys(select(model, names), keep)):
        out = model(tokens, unembed=unembed)
    return out, cache
