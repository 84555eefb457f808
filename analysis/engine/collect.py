"""The forward passes of the study at scale: prompts batched by length, reduced as the model runs, summed."""

from collections.abc import Collection

import numpy as np
import torch

import instrument
from analysis import measures
from minigpt import GPT2

from . import batching
from .stats import RESERVOIR, NormStats

BATCH_POSITIONS = batching.CPU_POSITIONS  # collect's default; `positions_per_pass` chooses by device


def positions_per_pass(model: GPT2, prompts: list, asked: int | None = None) -> int:
    """The positions per forward pass (collect's max_positions) for these prompts: `asked` if given
    (--batch-positions), else batching.batch_positions for the model's device and dtype, its widest batch
    being the longest prompt plus the padding figure's PADDING_EXTRA positions, within n_ctx."""
    if asked is not None:
        return asked
    width = min(max(map(len, prompts)) + measures.PADDING_EXTRA, model.cfg.n_ctx)
    kinds = {}  # bytes_per_position's defaults are a LayerNorm model's: 6 quantities kept, an ungated MLP
    if measures.norm_kind(model) == "RMSNorm":  # 11 quantities kept (CENTRED's beside them), a gated MLP
        kinds = {"n_quantities": len(measures.quantities(model)), "gated": measures.gated(model)}
    return batching.batch_positions(model.W_E.device, model.cfg, model.W_E.dtype, width, **kinds)


def per_position_norms(model: GPT2, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """The fast form of measures.per_position: {quantity: [n_layers, batch, pos]} for every quantity of
    measures.PER_POSITION, each reduced as its tensor is produced, so memory holds the weights and one
    batch's activations, nothing of size d_model kept. The unembedding is skipped (the study reads no logits).

    The reductions are written into one tensor made before the pass: small tensors made during it and
    kept to its end would sit between its large freed blocks in malloc's heap and keep them from being
    reused (15 batches at gpt2-medium shape, malloc reusing its heap: peak +688 MiB so, +98 MiB thus).
    """
    L, present = model.cfg.n_layers, measures.quantities(model)
    kept = torch.empty(len(present), L, *tokens.shape, device=model.W_E.device)  # [quantity, layer, batch, pos]
    into = {}  # hook name → [(reduction, where its result goes)]: one hook may feed several (‖x‖ and ‖x − mean(x)‖)
    for i, (hook, reduce) in enumerate(present.values()):
        for l in range(L):
            into.setdefault(f"blocks.{l}.{hook}", []).append((reduce, kept[i, l]))

    def reduce_into(tensor: torch.Tensor, name: str) -> None:
        for reduce, out in into[name]:
            reduce(tensor, out=out)

    with torch.no_grad(), instrument.hooks(model, dict.fromkeys(into, reduce_into)):
        model(tokens, unembed=False)
    return dict(zip(present, kept))


def by_length(indices: list[int], lengths, batch_size: int, max_positions: int) -> list[list[int]]:
    """indices (sorted by length; lengths[i] is prompt i's) cut into consecutive batches of at most
    batch_size prompts whose padded size, count × longest, stays within max_positions (a longer prompt
    gets a batch of its own)."""
    batches, current = [], []
    for i in indices:
        if current and (len(current) == batch_size or (len(current) + 1) * lengths[i] > max_positions):
            batches.append(current)
            current = []
        current.append(i)
    return batches + [current] if current else batches


def plan_batches(
    lengths: list[int], batch_size: int, padded: list[int] | None, extra: int, max_positions: int, n_ctx: int
) -> list[tuple[list[int], int | None]]:
    """How `collect` runs prompts of these lengths: (the prompts' indices, the width they are padded to)
    per batch, in order. The padded prompts come first, all `extra` positions beyond the longest of them
    (within n_ctx); then the rest by length, each batch padded to its longest (width None)."""
    set_apart = sorted(set(padded or []))
    rest = sorted(set(range(len(lengths))) - set(set_apart), key=lambda i: lengths[i])
    plan = []
    if set_apart:  # all padded to one width, in as many batches as max_positions needs
        width = min(max(lengths[i] for i in set_apart) + extra, n_ctx)
        plan += [(chosen, width) for chosen in by_length(set_apart, dict.fromkeys(set_apart, width), batch_size, max_positions)]
    return plan + [(chosen, None) for chosen in by_length(rest, lengths, batch_size, max_positions)]


def collect(
    model: GPT2,
    prompts: list,
    batch_size: int,
    pad: int,
    *,
    example: int | None = None,
    padded: list[int] | None = None,
    extra: int = measures.PADDING_EXTRA,
    max_positions: int = BATCH_POSITIONS,
    reservoir: int = RESERVOIR,
    seed: int = 0,
    only: Collection[int] | None = None,
    on_batch=None,
) -> NormStats:
    """Run every prompt (token ids, BOS first) in batches of similar length and keep NormStats.

    A batch holds at most batch_size prompts and, padding included, max_positions positions (unless one
    prompt alone is longer): sorted by length, neighbours pad little.

    example: the index of the prompt whose per-position norms figures 2 and 4 show. padded: indices of
    prompts run first, all right-padded to `extra` positions beyond the longest of them, as
    measures.padding_norms pads them (in as many batches as max_positions needs); their
    measures.padding_means go to stats.padding, and their ordinary positions count like any other (the
    padding after a prompt cannot change it: attention is causal). on_batch(n), if given, is called after
    each batch with the number of prompts it held.

    only: the indices of the plan's batches (`plan_batches`) to run, the others being run by other processes
    (distributed.py), whose sums are added to these (`NormStats.merge`); default, all of them. Figure 12's
    sample is drawn from every batch all the same, so that each shard counts its part of the one sample.
    """
    L = model.cfg.n_layers
    stats = NormStats(L, measures.quantities(model), reservoir=reservoir, seed=seed)
    plan = plan_batches([len(p) for p in prompts], batch_size, padded, extra, max_positions, model.cfg.n_ctx)
    padding_rows, padding_lengths = [], []  # resid_post norms [L, rows, width] of the padded prompts
    early_kept = stats.choose_early([[len(prompts[i]) for i in chosen] for chosen, _ in plan])
    # Figure 12's controls as each layer's MLP input (resid_mid, or resid_pre in a parallel block) goes past: the
    # sample's vectors through that layer's MLP and through the MLP of each layer that reads this one as its
    # "other layer", so no vector outlives its batch.
    readers = {k: [k, *(l for l in range(L) if l != k and stats.other_layer[l] == k)] for k in range(L)}
    early_names = [measures.hook_name(l, measures.mlp_input(model)) for l in range(L)]
    runs = range(len(plan)) if only is None else set(only)
    for b, ((chosen, width), kept) in enumerate(zip(plan, early_kept)):
        if b not in runs:
            continue
        tokens, lengths = measures.pad_batch([prompts[i] for i in chosen], pad, width)
        rows, positions = [row for row, _ in kept], [position for _, position in kept]

        def early_controls(resid_mid: torch.Tensor, name: str, rows=rows, positions=positions) -> None:
            source = int(name.split(".")[1])
            sample = resid_mid[rows, positions]  # [n_kept, d_model]
            for reader in readers[source]:
                active = measures.active_count(model, reader, sample)
                stats.add_early(reader, source, active, sample.shape[0] * model.cfg.d_mlp)

        with instrument.hooks(model, dict.fromkeys(early_names, early_controls) if kept else {}):
            values = per_position_norms(model, tokens.to(model.W_E.device))  # [L, batch, pos] each
        values = {quantity: v.cpu() for quantity, v in values.items()}
        row = chosen.index(example) if example in chosen else None
        stats.add(values, lengths, example_row=row)
        if width is not None:
            padding_rows.append(values["resid_post"].numpy())
            padding_lengths += lengths
        if on_batch:
            on_batch(len(chosen))
    if padding_rows:
        stats.padding = measures.padding_means(np.concatenate(padding_rows, axis=1), padding_lengths)
    return stats
