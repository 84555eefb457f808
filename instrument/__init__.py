"""Read or replace any tensor of the forward pass by its name.

Names are module paths to minigpt's HookPoints, the same as TransformerLens's:
"hook_embed", "blocks.3.hook_resid_post", "blocks.3.attn.hook_pattern", "ln_final.hook_scale", ...

    logits, cache = run_with_cache(model, tokens)                         # everything
    cache["blocks.5.hook_resid_post"], cache["resid_post", 5]             # the same tensor, two ways
    _, cache = run_with_cache(model, tokens, names=lambda n: "resid" in n,
                              reduce=lambda t, name: t.norm(dim=-1))     # only residual norms
    with hooks(model, {"blocks.0.attn.hook_pattern": ablate}):           # edit while running
        logits = model(tokens)
    get_act_name("resid_pre", 5)                                          # "blocks.5.hook_resid_pre"
"""

import difflib
import re
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from typing import NoReturn

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


# TransformerLens's shorthands, as its utils.get_act_name reads them: a short name that lives in one sublayer,
# the other spellings of a name, and the one-letter sublayers.
_SUBLAYER_OF = dict.fromkeys(("q", "k", "v", "z", "rot_q", "rot_k", "result", "pattern", "attn_scores"), "attn") | dict.fromkeys(
    ("pre", "post", "mid", "pre_linear"), "mlp"
)
_ALIASES = {"attn": "pattern", "attn_logits": "attn_scores", "query": "q", "key": "k", "value": "v"}
_ALIASES |= {"mlp_pre": "pre", "mlp_mid": "mid", "mlp_post": "post"}
_SUBLAYER_ALIASES = {"a": "attn", "attention": "attn", "m": "mlp", "b": "", "block": "", "blocks": ""}


def get_act_name(name: str, layer: int | None = None, sublayer: str | None = None) -> str:
    """A hook's full name from TransformerLens's shorthand, as transformer_lens.utils.get_act_name builds it:

        get_act_name("resid_pre", 5)          "blocks.5.hook_resid_pre"
        get_act_name("pattern", 2)            "blocks.2.attn.hook_pattern"   (q, k, v, z, attn_scores too)
        get_act_name("post", 2)               "blocks.2.mlp.hook_post"       (pre too)
        get_act_name("scale", 4, "ln1")       "blocks.4.ln1.hook_scale"      (normalized too)
        get_act_name("scale")                 "ln_final.hook_scale"
        get_act_name("embed")                 "hook_embed"
        get_act_name("k6"), get_act_name("scale4ln1")    the layer (and sublayer) written into the name
    A full name is returned as it is. Like TransformerLens's, it only builds the string: a hook the model
    lacks is refused where the name is used (instrument.hooks, run_with_cache), with the names it has.
    """
    if not isinstance(name, str):
        raise TypeError(f"get_act_name: name must be a string such as 'resid_pre', not {type(name).__name__}")
    if ("." in name or name.startswith("hook_")) and layer is None and sublayer is None:
        return name
    written = re.fullmatch(r"([a-z_]+?)(\d+)([a-z]\w*)?", name)
    if written:
        name, layer, sublayer = written[1], int(written[2]), written[3]
    name = _ALIASES.get(name, name.removeprefix("hook_"))
    sublayer = _SUBLAYER_OF.get(name) or _SUBLAYER_ALIASES.get(sublayer, sublayer)
    path = [] if layer is None else ["blocks", str(layer)]
    if sublayer:
        path.append(sublayer)
    elif layer is None and name in ("scale", "normalized"):
        path.append("ln_final")
    return ".".join([*path, f"hook_{name}"])


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


class Cache(dict):
    """{hook name: tensor}, as run_with_cache returns it: a dict, so whatever reads a dict reads it.

    Also indexed as TransformerLens's ActivationCache is, by a hook's short name (its name without the
    module path and "hook_") and its layer:
        cache["resid_post", 5]     cache["blocks.5.hook_resid_post"]
        cache["pattern", -1]       cache["blocks.{n_layers - 1}.attn.hook_pattern"]: negative layers count from the end
        cache["scale", 2, "ln1"]   cache["blocks.2.ln1.hook_scale"]: the sublayer, where a block has the name twice
        cache["embed"]             cache["hook_embed"]; without a layer, the names outside the blocks
        cache["scale"]             cache["ln_final.hook_scale"]
    The full name is looked up among the model's hook names, so nothing maps a short name to a full one
    but the names themselves. `in`, `get` and iteration see the full names only.
    """

    def __init__(self, *args, n_layers: int, hook_names: Iterable[str] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.n_layers = n_layers
        self.hook_names = tuple(hook_names)  # all the model's, kept or not: to tell "not kept" from "no such hook"

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, str) and dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        return dict.__getitem__(self, self.full_name(key))

    def full_name(self, key) -> str:
        """The full hook name that a short key (name, or (name, layer), or (name, layer, sublayer)) stands for."""
        name, layer, sublayer = (*key, None, None)[:3] if isinstance(key, tuple) else (key, None, None)
        shown = f"cache[{', '.join(map(repr, key)) if isinstance(key, tuple) else repr(key)}]"
        if not isinstance(name, str) or "." in name:  # a full name (or no name) that the cache does not hold
            return self._missing(shown, str(name))
        name = name.removeprefix("hook_")
        if layer is not None:
            if not isinstance(layer, int) or not -self.n_layers <= layer < self.n_layers:
                raise KeyError(
                    f"{shown}: layer {layer!r} is out of range for this {self.n_layers}-layer model "
                    f"(0 to {self.n_layers - 1}, or -1 to -{self.n_layers} from the end)"
                )
            layer %= self.n_layers
        names = self.hook_names or tuple(self)
        found = [full for full in names if _is_short_name(full, name, layer, sublayer)]
        if len(found) == 1:
            return found[0] if found[0] in self else self._missing(shown, found[0])
        if found:
            example = f"cache[{name!r}, {layer}, {found[0].split('.')[2]!r}]"
            raise KeyError(f"{shown} could be {' or '.join(found)}; name the sublayer, e.g. {example}")
        if layer is None and any(_is_short_name(full, name, 0, sublayer) for full in names):
            raise KeyError(f"{shown}: every block has {name!r}; give the layer, e.g. cache[{name!r}, 0]")
        within = f"blocks.{layer}." if layer is not None else ""
        return self._missing(shown, within + (f"{sublayer}." if sublayer else "") + f"hook_{name}")

    def _missing(self, shown: str, full: str) -> NoReturn:
        if full in self.hook_names:
            raise KeyError(
                f"{shown}: {full} was not kept (run_with_cache's names= kept {len(self)} of {len(self.hook_names)} hook points)"
            )
        close = difflib.get_close_matches(full, self.hook_names or self, n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise KeyError(f"{shown}: this model has no hook {full}{hint}")


def _is_short_name(full: str, name: str, layer: int | None, sublayer: str | None) -> bool:
    """Whether hook `full` is `name` (without "hook_") in block `layer` (None: outside the blocks), in `sublayer` if given."""
    *path, last = full.split(".")
    in_block = path[:1] == ["blocks"]
    if last != f"hook_{name}" or in_block != (layer is not None) or (in_block and path[1] != str(layer)):
        return False
    return sublayer is None or path[2 if in_block else 0 :] == [sublayer]


@torch.no_grad()
def run_with_cache(
    model: GPT2,
    tokens,
    names: Names = None,
    *,
    names_filter: Names = None,
    reduce: Callable[[torch.Tensor, str], torch.Tensor] | None = None,
    unembed: bool = True,
) -> tuple[torch.Tensor, Cache]:
    """Run the model and keep the tensors at the selected hook points: (logits, a Cache {name: tensor}).

    reduce(tensor, name), if given, is applied as each tensor is produced and only its result is kept:
    e.g. `lambda t, name: t.norm(dim=-1)` keeps [batch, pos] norms instead of [batch, pos, d_model].
    The cache holds the forward pass's own tensors, not copies; nothing in the forward pass modifies
    a tensor in place after its hook, so they stay as they were when produced.
    unembed=False skips ln_final and the unembedding and returns the final residual stream instead.
    names_filter= is TransformerLens's word for names=; either may be given, not both.
    """
    if names is not None and names_filter is not None:
        raise TypeError("run_with_cache: give names= or names_filter= (TransformerLens's word for it), not both")
    names = names if names_filter is None else names_filter
    cache = Cache(n_layers=model.cfg.n_layers, hook_names=hook_points(model))

    def keep(tensor: torch.Tensor, name: str) -> None:
        cache[name] = tensor if reduce is None else reduce(tensor, name)

    with hooks(model, dict.fromkeys(select(model, names), keep)):
        out = model(tokens, unembed=unembed)
    return out, cache
