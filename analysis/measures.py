"""The study's numbers: residual norms gathered while the model runs, and measurements of its weights.

Conventions (the study's): every prompt starts with <|endoftext|> (BOS) at position 0;
averages exclude position 0 and padding and pool all remaining (prompt, position) pairs; norms are L2
norms of the processed model's vectors (zero-mean residual stream, so norm = std·√d_model).
"""

import numpy as np
import torch

import instrument
from minigpt import GPT2
from minigpt.model import linear

# The five vectors the study follows through each block, by their hook names.
STREAMS = ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post")


def hook_name(layer: int, stream: str) -> str:
    return f"blocks.{layer}.hook_{stream}"


# ---------------------------------------------------------------------------------------------
# Growth rates


def default_fit_layers(n_layers: int) -> tuple[int, int]:
    """The study fits GPT-2-XL's layers 5..41 of 48; other depths get the same fractions of their depth."""
    if n_layers < 2:
        raise ValueError(f"a growth rate needs at least 2 layers; this model has {n_layers}")
    last = min(round(41 / 48 * n_layers), n_layers - 1)
    return min(round(5 / 48 * n_layers), last - 1), last


def growth_rate(mean_norms, first: int, last: int) -> dict:
    """Per-layer growth of mean norms n over layers first..last.

    rate = (n[last] / n[first]) ** (1 / (last - first)), as in the study; fit_rate = exp(slope) of the
    least-squares line through log n over the same layers, with the fit's R². rate_first_half and
    rate_second_half are `rate` over each half of the range: equal for exponential growth, while a sum
    of independent updates (norm ∝ √l, as with random weights) slows towards 1.
    """
    n = np.asarray(mean_norms, dtype=np.float64)
    if not 0 <= first < last < len(n):
        raise ValueError(f"fit layers {first}:{last} must satisfy 0 <= first < last <= {len(n) - 1}")
    layers = np.arange(first, last + 1)
    log_n = np.log(n[first : last + 1])
    slope, intercept = np.polyfit(layers, log_n, 1)
    residual = log_n - (slope * layers + intercept)
    total = ((log_n - log_n.mean()) ** 2).sum()
    r2 = 1.0 - (residual**2).sum() / total if total > 0 else 1.0
    middle = (first + last) // 2 if last - first >= 2 else None

    def rate(a: int, b: int) -> float:
        return float((n[b] / n[a]) ** (1 / (b - a)))

    return {
        "first_layer": first,
        "last_layer": last,
        "rate": rate(first, last),
        "rate_first_half": rate(first, middle) if middle else None,
        "rate_second_half": rate(middle, last) if middle else None,
        "fit_rate": float(np.exp(slope)),
        "fit_intercept": float(np.exp(intercept)),
        "r2": float(r2),
    }


STEADY = {"r2": 0.95, "rate": 1.02, "span": 2 / 3, "halves": 0.25}


def steady_growth(g: dict, n_layers: int) -> dict:
    """Is growth_rate's result g steady exponential growth? The bar a bundled model must clear: the
    least-squares fit has R² >= 0.95 and rate >= 1.02 per layer over at least two thirds of the layers,
    and the two halves' log-rates are within 25% of the larger. Returns each check and "steady" (all)."""
    span = (g["last_layer"] - g["first_layer"] + 1) / n_layers
    halves = [np.log(g[key]) if g[key] else float("nan") for key in ("rate_first_half", "rate_second_half")]
    checks = {
        "r2": g["r2"] >= STEADY["r2"],
        "rate": g["fit_rate"] >= STEADY["rate"],
        "span": span >= STEADY["span"] - 1e-9,
        "halves": bool(min(halves) > 0 and max(halves) - min(halves) <= STEADY["halves"] * max(halves)),
    }
    return checks | {"steady": all(checks.values())}


# ---------------------------------------------------------------------------------------------
# What the forward pass gives: per-position norms, reduced as the model runs


# What the forward passes leave behind: statistics of a fixed size, however many prompts run

HISTOGRAM_EDGES = np.linspace(-2.0, 5.0, 1401)  # log10 ‖resid_post‖ from 0.01 to 100,000, bins of 0.005 decade (1.2%)
EARLY_POSITIONS = 6  # figure 12's controls read resid_mid at positions 1..6
RESERVOIR = 1024  # at most this many of those (prompt, position) pairs are counted: a uniform, seeded sample
APPENDIX1_TOLERANCE = 1e-4  # relative slack for float rounding in the Appendix 1 check


class NormStats:
    """What the study keeps from the forward passes: a size fixed by the model, not by the number of prompts.

    Sums over the vectors the study averages (every prompt's positions 1 onwards: not BOS, not padding),
    per layer l, and per stream s of STREAMS where named so:
        count                       how many such vectors
        norm_sum[s], norm_sq_sum[s] Σ ‖x‖ and Σ ‖x‖²   (mean_norm, rms_norm)
        active_sum                  Σ fraction of the MLP's pre-activations > 0
        growth_sum, bound_sum       Σ (‖resid_post‖/‖resid_pre‖ − 1) and Σ (‖attn_out‖ + ‖mlp_out‖)/‖resid_pre‖
        violations                  vectors breaking Appendix 1's bound beyond float rounding
        histogram                   counts of log10 ‖resid_post‖ on the fixed bins HISTOGRAM_EDGES (figure 1)
    and at position 0: n_prompts, bos_sum[s]. Each of these merges across shards by addition, and
    worst_excess (the largest growth − bound) by maximum: a study sharded over prompts on many machines
    is a map and a sum (`merge`).

    Two things of fixed size come from samples, and do not merge by addition:
        example   every stream's per-position norms of one chosen prompt (figures 2 and 4)
        early     figure 12's controls, counted as the batches run (`choose_early`, `add_early`): the
                  (prompt, position) pairs at positions 1..6, at most `reservoir` of them (a uniform,
                  seeded sample), the same pairs at every layer l; early_active[l] counts the pre-activations
                  > 0 when layer l's MLP reads layer l's resid_mid at those pairs, other_active[l] when it
                  reads layer other_layer[l]'s. Pooling two such samples would mean weighting them by what
                  each saw, not by what each kept.
    and `padding`, set by collect(padded=…): mean norms at BOS, padding and ordinary positions of those prompts.
    """

    def __init__(self, n_layers: int, *, reservoir: int = RESERVOIR, seed: int = 0):
        self.padding: dict[str, np.ndarray] | None = None  # collect(padded=…): padding_norms of those prompts
        zeros = lambda: np.zeros(n_layers)  # noqa: E731
        self.n_layers, self.reservoir = n_layers, reservoir
        self.count = self.n_prompts = self.violations = 0
        self.norm_sum = {s: zeros() for s in STREAMS}
        self.norm_sq_sum = {s: zeros() for s in STREAMS}
        self.bos_sum = {s: zeros() for s in STREAMS}
        self.active_sum, self.growth_sum, self.bound_sum = zeros(), zeros(), zeros()
        self.worst_excess = -np.inf
        self.histogram = np.zeros((n_layers, len(HISTOGRAM_EDGES) - 1), dtype=np.int64)
        self.example: dict[str, np.ndarray] | None = None  # {stream: [n_layers, n_pos]}
        self.early_seen = self.early_kept = 0  # early (prompt, position) pairs gone past, and in the sample
        self.other_layer = other_layers(n_layers, seed)  # figure 12's control (b): layer l reads other_layer[l]'s
        self.early_active = np.zeros(n_layers, dtype=np.int64)
        self.other_active = np.zeros(n_layers, dtype=np.int64)
        self.early_units = np.zeros(n_layers, dtype=np.int64)  # pre-activations counted per layer, for each control
        self._rng = np.random.default_rng(seed)

    # -- reading --

    def mean_norm(self, stream: str) -> np.ndarray:
        return self.norm_sum[stream] / self.count

    def rms_norm(self, stream: str) -> np.ndarray:
        """sqrt(mean ‖x‖²) per layer; divided by √d_model, the standard deviation of all components."""
        return np.sqrt(self.norm_sq_sum[stream] / self.count)

    def bos_norm(self, stream: str) -> np.ndarray:
        return self.bos_sum[stream] / self.n_prompts

    def active_fraction(self) -> np.ndarray:
        return self.active_sum / self.count

    def appendix1(self) -> dict:
        """Appendix 1's bound: per vector, ‖x_post‖/‖x_pre‖ − 1 ≤ (‖attn_out‖ + ‖mlp_out‖)/‖x_pre‖, by the
        triangle inequality, since x_post = x_pre + attn_out + mlp_out. The means per layer of both sides,
        and the vectors that break it beyond float rounding, which would mean the measurements are wrong."""
        return {
            "growth_minus_1": self.growth_sum / self.count,
            "bound": self.bound_sum / self.count,
            "violations": self.violations,
            "worst_excess": float(self.worst_excess),
        }

    def median_norm(self, layer: int) -> float:
        """The median ‖resid_post‖ at layer, read from the histogram (interpolated within a 1.2%-wide bin)."""
        counts = self.histogram[layer]
        cumulative = np.cumsum(counts)
        half = cumulative[-1] / 2
        i = int(np.searchsorted(cumulative, half))
        below = cumulative[i - 1] if i else 0
        fraction = (half - below) / counts[i]
        return float(10 ** (HISTOGRAM_EDGES[i] + fraction * (HISTOGRAM_EDGES[i + 1] - HISTOGRAM_EDGES[i])))

    def early_controls(self) -> dict[str, np.ndarray]:
        """Figure 12's controls, [n_layers] each: the fraction of each layer's MLP pre-activations > 0 when
        it reads (a) its own resid_mid at positions 1..6 only, (b) those of a random other layer."""
        return {
            "active_early_positions": self.early_active / self.early_units,
            "active_other_layer": self.other_active / self.early_units if self.n_layers > 1 else np.array([np.nan]),
            "other_layer": np.array(self.other_layer),
        }

    def nbytes(self) -> int:
        """Bytes held: what a memory test counts (the example prompt is one prompt's worth)."""
        arrays = [self.histogram, self.active_sum, self.growth_sum, self.bound_sum]
        arrays += [*self.norm_sum.values(), *self.norm_sq_sum.values(), *self.bos_sum.values()]
        arrays += [self.early_active, self.other_active, self.early_units]
        arrays += list(self.example.values()) if self.example else []
        return sum(a.nbytes for a in arrays)

    # -- adding --

    def add(
        self,
        norms: dict[str, torch.Tensor],
        active: torch.Tensor,
        lengths: list[int],
        example_row: int | None = None,
    ) -> None:
        """One batch: norms[s] and active are [n_layers, batch, pos] (right-padded to pos), lengths the true
        lengths with BOS. (Figure 12's controls are counted while the batch runs: `add_early`.)"""
        width = active.shape[-1]
        lengths_t = torch.tensor(lengths)
        positions = torch.arange(width)
        averaged = (positions[None, :] >= 1) & (positions[None, :] < lengths_t[:, None])  # [batch, pos]
        self.count += int(averaged.sum())
        self.n_prompts += len(lengths)
        for s in STREAMS:
            x = norms[s].float()
            self.norm_sum[s] += _masked_sum(x, averaged)
            self.norm_sq_sum[s] += _masked_sum(x * x, averaged)
            self.bos_sum[s] += x[:, :, 0].double().sum(1).numpy()
        self.active_sum += _masked_sum(active.float(), averaged)
        # Appendix 1, per vector, in float32 as the norms are
        pre, post = norms["resid_pre"].float(), norms["resid_post"].float()
        growth = post / pre - 1
        bound = (norms["attn_out"].float() + norms["mlp_out"].float()) / pre
        self.growth_sum += _masked_sum(growth, averaged)
        self.bound_sum += _masked_sum(bound, averaged)
        broken = (growth > bound + APPENDIX1_TOLERANCE * (1 + bound.abs())) & averaged
        self.violations += int(broken.sum())
        if averaged.any():
            self.worst_excess = max(self.worst_excess, float((growth - bound)[:, averaged].max()))
        # Figure 1's histogram of log10 ‖resid_post‖, on fixed bins (values outside go to the end bins)
        n_bins = len(HISTOGRAM_EDGES) - 1
        bins = torch.bucketize(post.log10(), torch.as_tensor(HISTOGRAM_EDGES, dtype=torch.float32)).sub_(1).clamp_(0, n_bins - 1)
        layer_offset = torch.arange(self.n_layers)[:, None, None] * n_bins
        self.histogram += (
            torch.bincount((bins + layer_offset)[:, averaged].flatten(), minlength=self.n_layers * n_bins)
            .view(self.n_layers, n_bins)
            .numpy()
        )
        if example_row is not None:
            n = lengths[example_row]
            self.example = {s: norms[s][:, example_row, :n].float().numpy().copy() for s in STREAMS}

    def choose_early(self, batches: list[list[int]]) -> list[list[tuple[int, int]]]:
        """The sample for figure 12's controls, drawn before any batch runs from the lengths alone (batches:
        each batch's prompt lengths with BOS, in the order they will run): reservoir sampling (Vitter's
        algorithm R) over every (prompt, position 1..6) pair in that order. The pairs kept, per batch, as
        (row, position)."""
        slots = {}  # slot → (batch, row, position); a later pair may take an earlier one's slot
        for batch, lengths in enumerate(batches):
            for row, n in enumerate(lengths):
                for position in range(1, min(EARLY_POSITIONS, n - 1) + 1):
                    if self.early_seen < self.reservoir:
                        slot = self.early_seen
                    else:
                        slot = int(self._rng.integers(0, self.early_seen + 1))  # kept with probability reservoir/seen
                    self.early_seen += 1
                    if slot < self.reservoir:
                        slots[slot] = (batch, row, position)
        kept = [[] for _ in batches]
        for batch, row, position in sorted(slots.values()):
            kept[batch].append((row, position))
        self.early_kept += len(slots)
        return kept

    def add_early(self, reader: int, source: int, active: int, units: int) -> None:
        """Layer reader's MLP read the sample's resid_mid vectors of one batch at layer source (itself, or
        other_layer[reader]): active of its units pre-activations were > 0."""
        if source == reader:
            self.early_active[reader] += active
            self.early_units[reader] += units
        else:
            self.other_active[reader] += active

    def merge(self, other: "NormStats") -> "NormStats":
        """Add another shard's sums (its prompts distinct from ours); the samples stay ours."""
        self.count += other.count
        self.n_prompts += other.n_prompts
        self.violations += other.violations
        for mine, theirs in (
            (self.norm_sum, other.norm_sum),
            (self.norm_sq_sum, other.norm_sq_sum),
            (self.bos_sum, other.bos_sum),
        ):
            for s in STREAMS:
                mine[s] += theirs[s]
        self.active_sum += other.active_sum
        self.growth_sum += other.growth_sum
        self.bound_sum += other.bound_sum
        self.histogram += other.histogram
        self.worst_excess = max(self.worst_excess, other.worst_excess)
        return self


def _masked_sum(x: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """[n_layers] float64: Σ of x [n_layers, batch, pos] over the positions where mask [batch, pos] holds."""
    return x[:, mask].double().sum(1).numpy()


def pooled_mean(norms: list[np.ndarray]) -> np.ndarray:
    """[n_layers]: the mean over every (prompt, position ≥ 1) pair of per-prompt norms [n_layers, n_pos] (BOS excluded)."""
    return np.concatenate([n[:, 1:] for n in norms], axis=1).mean(axis=1)


def pad_batch(prompts: list[list[int]], pad: int, width: int | None = None) -> tuple[torch.Tensor, list[int]]:
    """Right-pad token lists with `pad` to `width` (default: the longest); return [batch, pos] tokens and the true lengths."""
    lengths = [len(p) for p in prompts]
    tokens = torch.full((len(prompts), width or max(lengths)), pad, dtype=torch.long)
    for i, p in enumerate(prompts):
        tokens[i, : len(p)] = torch.tensor(p)
    return tokens, lengths


def per_position_norms(model: GPT2, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """{stream: [n_layers, batch, pos]}: every position's norm in each of the five streams at every layer,
    and "active": the fraction of the MLP's pre-activations > 0 at every position.

    Nothing of size d_model is kept: each tensor is reduced as it is produced, so memory holds the
    weights and one batch's activations. The unembedding is skipped (the study reads no logits).
    The reductions are written into one tensor made before the pass: small tensors made during it and
    kept to its end would sit between its large freed blocks in malloc's heap and keep them from being
    reused (15 batches at gpt2-medium shape, malloc reusing its heap: peak +688 MiB so, +98 MiB thus).
    """
    L = model.cfg.n_layers
    kept = torch.empty(len(STREAMS) + 1, L, *tokens.shape, device=model.W_E.device)  # [stream, layer, batch, pos]
    into = {hook_name(l, s): kept[i, l] for i, s in enumerate(STREAMS) for l in range(L)}
    into |= {f"blocks.{l}.mlp.hook_pre": kept[-1, l] for l in range(L)}

    def reduce(tensor: torch.Tensor, name: str) -> None:
        if name.endswith("mlp.hook_pre"):  # counted, not averaged: no float copy of the widest tensor
            torch.sum(tensor > 0, dim=-1, dtype=torch.float32, out=into[name]).div_(tensor.shape[-1])
        else:
            torch.linalg.vector_norm(tensor.float(), dim=-1, out=into[name])

    with torch.no_grad(), instrument.hooks(model, dict.fromkeys(into, reduce)):
        model(tokens, unembed=False)
    return dict(zip((*STREAMS, "active"), kept))


PADDING_EXTRA = 4  # the padding figure's prompts are padded this many positions beyond the longest of them
BATCH_POSITIONS = 512  # positions per forward pass: matrix products of 512 rows run at this CPU's peak, 100 at ~80%


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
    extra: int = PADDING_EXTRA,
    max_positions: int = BATCH_POSITIONS,
    reservoir: int = RESERVOIR,
    seed: int = 0,
    on_batch=None,
) -> NormStats:
    """Run every prompt (token ids, BOS first) in batches of similar length and keep NormStats.

    A batch holds at most batch_size prompts and, padding included, max_positions positions (unless one
    prompt alone is longer): sorted by length, neighbours pad little.

    example: the index of the prompt whose per-position norms figures 2 and 4 show. padded: indices of
    prompts run first, all right-padded to `extra` positions beyond the longest of them, as
    `padding_norms` pads them (in as many batches as max_positions needs); their padding figures go to
    stats.padding, and their ordinary positions count like any other (the padding after a prompt cannot
    change it: attention is causal). on_batch(n), if given, is called after each batch with the number
    of prompts it held.
    """
    L = model.cfg.n_layers
    stats = NormStats(L, reservoir=reservoir, seed=seed)
    plan = plan_batches([len(p) for p in prompts], batch_size, padded, extra, max_positions, model.cfg.n_ctx)
    padding_rows, padding_lengths = [], []  # resid_post norms [L, rows, width] of the padded prompts
    early_kept = stats.choose_early([[len(prompts[i]) for i in chosen] for chosen, _ in plan])
    # Figure 12's controls as each layer's resid_mid goes past: the sample's vectors through that layer's
    # MLP and through the MLP of each layer that reads this one as its "other layer", so no vector outlives its batch.
    readers = {k: [k, *(l for l in range(L) if l != k and stats.other_layer[l] == k)] for k in range(L)}
    early_names = [hook_name(l, "resid_mid") for l in range(L)]
    for (chosen, width), kept in zip(plan, early_kept):
        is_padded = width is not None
        tokens, lengths = pad_batch([prompts[i] for i in chosen], pad, width)
        rows, positions = [row for row, _ in kept], [position for _, position in kept]

        def early_controls(resid_mid: torch.Tensor, name: str, rows=rows, positions=positions) -> None:
            source = int(name.split(".")[1])
            sample = resid_mid[rows, positions]  # [n_kept, d_model]
            for reader in readers[source]:
                stats.add_early(reader, source, active_count(model, reader, sample), sample.shape[0] * model.cfg.d_mlp)

        with instrument.hooks(model, dict.fromkeys(early_names, early_controls) if kept else {}):
            norms = per_position_norms(model, tokens)  # [L, batch, pos] each
        norms = {name: values.cpu() for name, values in norms.items()}
        active = norms.pop("active")
        row = chosen.index(example) if example in chosen else None
        stats.add(norms, active, lengths, example_row=row)
        if is_padded:
            padding_rows.append(norms["resid_post"].numpy())
            padding_lengths += lengths
        if on_batch:
            on_batch(len(chosen))
    if padding_rows:
        stats.padding = _padding_means(np.concatenate(padding_rows, axis=1), padding_lengths)
    return stats


def norms_per_prompt(model: GPT2, prompts: list[list[int]], pad: int, stream: str = "resid_post") -> list[np.ndarray]:
    """[n_layers, n_pos] per prompt: every position's norm (for a few prompts; `collect` for many)."""
    tokens, lengths = pad_batch(prompts, pad)
    norms = per_position_norms(model, tokens)[stream].cpu().numpy()  # [L, batch, pos]
    return [norms[:, row, :n] for row, n in enumerate(lengths)]


def padding_norms(
    model: GPT2, prompts: list[list[int]], pad: int, extra: int = PADDING_EXTRA, stream: str = "resid_post"
) -> dict[str, np.ndarray]:
    """Prompts of different lengths batched and right-padded with `pad`, `extra` positions beyond the
    longest (so that there is padding even if all lengths are equal): mean norm per layer at BOS, at
    padding positions, and at ordinary positions. [n_layers] each. (`collect(padded=…)` gives the same
    while it runs the study's other prompts.)"""
    longest = max(map(len, prompts))
    tokens, lengths = pad_batch(prompts, pad, width=min(longest + extra, model.cfg.n_ctx))
    return _padding_means(per_position_norms(model, tokens)[stream].cpu().numpy(), lengths)


def _padding_means(norms: np.ndarray, lengths: list[int]) -> dict[str, np.ndarray]:
    """norms [n_layers, batch, pos] of a right-padded batch: mean per layer at BOS, padding and ordinary positions."""
    positions = np.arange(norms.shape[-1])[None, :]
    is_pad = positions >= np.array(lengths)[:, None]
    ordinary = ~is_pad & (positions > 0)
    if not is_pad.any():
        raise ValueError(f"no room for padding: every prompt is {max(lengths)} tokens, the model's whole context")
    return {"bos": norms[:, :, 0].mean(1), "padding": norms[:, is_pad].mean(1), "ordinary": norms[:, ordinary].mean(1)}


# ---------------------------------------------------------------------------------------------
# Measurements of the weights


def random_normalised(n: int, d_model: int, seed: int = 0) -> torch.Tensor:
    """n Gaussian vectors, each shifted and scaled to mean 0 and variance 1 over its d_model entries:
    what a (folded) LayerNorm hands the next layer."""
    x = torch.randn(n, d_model, generator=torch.Generator().manual_seed(seed))
    x = x - x.mean(-1, keepdim=True)
    return x / x.pow(2).mean(-1, keepdim=True).sqrt()


def W_OV_frobenius(W_V: torch.Tensor, W_O: torch.Tensor) -> torch.Tensor:
    """‖W_V[h] @ W_O[h]‖_F for every head, without forming the d_model × d_model products.

    ‖AB‖_F² = trace(Bᵀ Aᵀ A B) = trace((AᵀA)(BBᵀ)) = Σ (AᵀA) ∘ (BBᵀ), with d_head × d_head factors.
    """
    W_V, W_O = W_V.double(), W_O.double()
    gram_V = W_V.transpose(1, 2) @ W_V  # [n_heads, d_head, d_head]
    gram_O = W_O @ W_O.transpose(1, 2)
    return (gram_V * gram_O).sum((1, 2)).clamp(min=0).sqrt().float()


def W_OV_apply(W_V: torch.Tensor, W_O: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[n_heads, n, d_model]: x @ W_V[h] @ W_O[h] for every head h, computed through the d_head bottleneck."""
    return torch.einsum("nd,hde->hne", x, W_V) @ W_O


def W_OV_sum_apply(W_V: torch.Tensor, W_O: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[n, d_model]: Σ_h x @ W_V[h] @ W_O[h], the heads side by side: x @ [W_V[0] … W_V[H-1]] then @ W_O stacked."""
    n_heads, d_model, d_head = W_V.shape
    return (x @ W_V.permute(1, 0, 2).reshape(d_model, n_heads * d_head)) @ W_O.reshape(n_heads * d_head, d_model)


def W_OV_norms(W_V: torch.Tensor, W_O: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[n_heads, n]: ‖x @ W_V[h] @ W_O[h]‖ without the [n_heads, n, d_model] products.

    With y = x @ W_V[h] [n, d_head]: ‖y W_O[h]‖² = y (W_O[h] W_O[h]ᵀ) yᵀ, a d_head × d_head Gram matrix.
    """
    y = torch.einsum("nd,hde->hne", x, W_V)  # [n_heads, n, d_head]
    gram = W_O @ W_O.transpose(1, 2)  # [n_heads, d_head, d_head]
    return ((y @ gram) * y).sum(-1).clamp(min=0).sqrt()


def mlp_on(model: GPT2, layer: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer's MLP applied to x, LayerNorm's output [n, d_model]: (pre-activations [n, d_mlp], output [n, d_model])."""
    seen = []
    with instrument.hooks(model, {f"blocks.{layer}.mlp.hook_pre": lambda pre, name: seen.append(pre)}):
        out = model.blocks[layer].mlp(x)
    return seen[0], out


N_RANDOM = 512  # random input vectors per layer for the weight measures


@torch.no_grad()
def weight_measures(model: GPT2, n_random: int = N_RANDOM, seed: int = 0, on_layer=None) -> dict[str, np.ndarray]:
    """Per-layer measurements of the weights alone (figures 8, 9, 11, 12-random, 13, 15); on_layer(1) after each layer."""
    cfg = model.cfg
    x_normalised = random_normalised(n_random, cfg.d_model, seed).to(model.W_E)
    x_gaussian = torch.randn(n_random, cfg.d_model, generator=torch.Generator().manual_seed(seed + 1)).to(model.W_E)
    rows = []
    for l, block in enumerate(model.blocks):
        attn, mlp = block.attn, block.mlp
        W_V, W_O = attn.W_V.float(), attn.W_O.float()
        pre_random, mlp_random_out = mlp_on(model, l, x_normalised)
        active_random = int(torch.count_nonzero(pre_random > 0)) / pre_random.numel()
        del pre_random  # [n_random, d_mlp]: the widest tensor here, not kept while the next ones are made
        rows.append(
            {
                "W_OV_frobenius": W_OV_frobenius(W_V, W_O).cpu().numpy(),  # [n_heads]
                "b_O_norm": float(attn.b_O.float().norm()),
                "ov_random_norm": float(W_OV_sum_apply(W_V, W_O, x_normalised.float()).norm(dim=-1).mean()),
                "mlp_random_norm": float(mlp_random_out.float().norm(dim=-1).mean()),
                "active_random": active_random,
                "W_in_norm": float(mlp.W_in.float().norm()),
                "b_in_norm": float(mlp.b_in.float().norm()),
                "W_out_norm": float(mlp.W_out.float().norm()),
                "b_out_norm": float(mlp.b_out.float().norm()),
                "W_Q_norm": float(attn.W_Q.float().norm()),
                "W_K_norm": float(attn.W_K.float().norm()),
                "W_V_norm": float(W_V.norm()),
                "W_O_norm": float(W_O.norm()),
                # Footnote 5: E‖W x‖² = ‖W‖_F² for x with identity covariance, so mean ‖W x‖ ≈ ‖W‖_F.
                "W_OV_mean_Wx": W_OV_norms(W_V, W_O, x_gaussian.float()).mean(1).cpu().numpy(),  # [n_heads]
                "W_in_mean_Wx": float((x_gaussian @ mlp.W_in).float().norm(dim=-1).mean()),
            }
        )
        if on_layer:
            on_layer(1)
    return {key: np.array([row[key] for row in rows]) for key in rows[0]}


def other_layers(n_layers: int, seed: int = 0) -> list[int]:
    """For each layer l, a random other layer (seeded): figure 12's control (b) feeds layer l's MLP its
    resid_mid. A model of one layer has none: [-1]."""
    if n_layers == 1:
        return [-1]
    rng = np.random.default_rng(seed)
    return [int(rng.choice([k for k in range(n_layers) if k != l])) for l in range(n_layers)]


@torch.no_grad()
def active_count(model: GPT2, layer: int, resid: torch.Tensor) -> int:
    """How many of layer's MLP pre-activations are > 0 when its ln2 reads the residual vectors resid
    [n, d_model] (the pre-activations alone: the MLP's second matrix is not needed for them)."""
    block = model.blocks[layer]
    pre = linear(block.ln2(resid.to(model.W_E.dtype)), block.mlp.W_in, block.mlp.b_in)  # [n, d_mlp], as MLP.forward computes it
    return int(torch.count_nonzero(pre > 0))
