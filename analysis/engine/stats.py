"""NormStats: what the study keeps from its forward passes, of a size fixed by the model, not by the number of prompts."""

import numpy as np
import torch

from analysis import measures

HISTOGRAM_EDGES = np.linspace(-2.0, 5.0, 1401)  # log10 ‖resid_post‖ from 0.01 to 100,000, bins of 0.005 decade (1.2%)
RESERVOIR = 1024  # figure 12's controls count at most this many (prompt, position) pairs: a uniform, seeded sample


class NormStats:
    """Running sums of analysis.measures' per-position quantities over every averaged position (BOS and padding
    excluded), per layer:
        count                  how many (prompt, position) pairs were averaged
        sum[q], square_sum[q]  Σ q and Σ q² for q in summed          (mean, rms)
        bos_sum[q]             Σ q at position 0, over n_prompts prompts  (bos)
        violations             vectors breaking Appendix 1's bound beyond float rounding, and worst_excess
        histogram              counts of log10 ‖resid_post‖ on the fixed bins HISTOGRAM_EDGES (figure 1)
    Each of these merges across shards by addition (worst_excess by maximum): a study sharded over prompts
    is a map and a sum (`merge` here, `Team.add_up` across processes in distributed.py).

    Two things of fixed size come from samples:
        example   every stream's per-position norms of one chosen prompt (figures 2 and 4), kept whole
        early     figure 12's controls, counted as the batches run (`choose_early`, `add_early`): at most
                  `reservoir` (prompt, position 1..6) pairs, a uniform seeded sample, the same pairs at every
                  layer; early_active[l] counts the pre-activations > 0 when layer l's MLP reads layer l's
                  resid_mid at those pairs, other_active[l] when it reads layer other_layer[l]'s. The sample
                  is drawn from every batch's lengths before any runs, so shards of one plan count their
                  parts of the same sample, and those counts add too.
    and `padding`, set by collect(padded=…): measures.padding_means of those prompts, kept whole.
    """

    def __init__(self, n_layers: int, quantities=measures.PER_POSITION, *, reservoir: int = RESERVOIR, seed: int = 0):
        # Every per-position quantity is summed: the model's PER_POSITION ones (measures.quantities) and Appendix 1's sides.
        self.summed = (*quantities, *measures.APPENDIX1)
        self.n_layers, self.reservoir = n_layers, reservoir
        self.count = self.n_prompts = self.violations = 0
        self.sum = {q: np.zeros(n_layers) for q in self.summed}
        self.square_sum = {q: np.zeros(n_layers) for q in self.summed}
        self.bos_sum = {q: np.zeros(n_layers) for q in self.summed}
        self.worst_excess = -np.inf
        self.histogram = np.zeros((n_layers, len(HISTOGRAM_EDGES) - 1), dtype=np.int64)
        self.padding: dict[str, np.ndarray] | None = None
        self.example: dict[str, np.ndarray] | None = None  # {stream: [n_layers, n_pos]}
        self.early_seen = self.early_kept = 0  # early (prompt, position) pairs gone past, and in the sample
        self.other_layer = measures.other_layers(n_layers, seed)
        self.early_active = np.zeros(n_layers, dtype=np.int64)
        self.other_active = np.zeros(n_layers, dtype=np.int64)
        self.early_units = np.zeros(n_layers, dtype=np.int64)  # pre-activations counted per layer, for each control
        self._rng = np.random.default_rng(seed)

    # -- reading: the measures, as measures.py defines them over all the prompts --

    def mean(self, quantity: str) -> np.ndarray:
        """measures.mean_over_positions of the quantity, over every prompt."""
        return self.sum[quantity] / self.count

    def rms(self, quantity: str) -> np.ndarray:
        """measures.rms_over_positions: sqrt(mean q²) per layer."""
        return np.sqrt(self.square_sum[quantity] / self.count)

    def bos(self, quantity: str) -> np.ndarray:
        """measures.bos_norm: the mean at position 0."""
        return self.bos_sum[quantity] / self.n_prompts

    def appendix1(self) -> dict:
        """measures.appendix1 over every prompt."""
        return {
            "growth_minus_1": self.mean("growth_minus_1"),
            "bound": self.mean("bound"),
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

    def bos_ratio(self) -> np.ndarray:
        """measures.bos_ratio of ‖resid_post‖: the mean at BOS over the median of the averaged positions, the
        median read from the histogram (`median_norm`, within its 1.2%-wide bins)."""
        medians = [self.median_norm(layer) if self.histogram[layer].any() else np.nan for layer in range(self.n_layers)]
        return self.bos("resid_post") / np.array(medians)

    def early_controls(self) -> dict[str, np.ndarray]:
        """measures.early_controls on the sample: [n_layers] each."""
        return {
            "active_early_positions": self.early_active / self.early_units,
            "active_other_layer": self.other_active / self.early_units if self.n_layers > 1 else np.array([np.nan]),
            "other_layer": np.array(self.other_layer),
        }

    def nbytes(self) -> int:
        """Bytes held: what a memory test counts (the example prompt is one prompt's worth)."""
        arrays = [self.histogram, self.early_active, self.other_active, self.early_units]
        arrays += [a for sums in (self.sum, self.square_sum, self.bos_sum) for a in sums.values()]
        arrays += list(self.example.values()) if self.example else []
        return sum(a.nbytes for a in arrays)

    # -- adding --

    def add(self, values: dict[str, torch.Tensor], lengths: list[int], example_row: int | None = None) -> None:
        """One batch: values[q] [n_layers, batch, pos] for the model's measures.quantities (right-padded to pos),
        lengths the true lengths with BOS."""
        width = values["resid_pre"].shape[-1]
        averaged = torch.from_numpy(measures.averaged_positions(lengths, width))  # [batch, pos]
        self.count += int(averaged.sum())
        self.n_prompts += len(lengths)
        values = {q: v.float() for q, v in values.items()}
        values |= {q: side(values) for q, side in measures.APPENDIX1.items()}  # in float32, as the norms are
        for q in self.summed:
            x = values[q]
            self.sum[q] += _masked_sum(x, averaged)
            self.square_sum[q] += _masked_sum(x * x, averaged)
            self.bos_sum[q] += x[:, :, 0].double().sum(1).numpy()
        growth, bound = values["growth_minus_1"], values["bound"]
        broken = (growth > bound + measures.APPENDIX1_TOLERANCE * (1 + bound.abs())) & averaged
        self.violations += int(broken.sum())
        if averaged.any():
            self.worst_excess = max(self.worst_excess, float((growth - bound)[:, averaged].max()))
        # Figure 1's histogram of log10 ‖resid_post‖, on fixed bins (values outside go to the end bins)
        n_bins = len(HISTOGRAM_EDGES) - 1
        edges = torch.as_tensor(HISTOGRAM_EDGES, dtype=torch.float32)
        bins = torch.bucketize(values["resid_post"].log10(), edges).sub_(1).clamp_(0, n_bins - 1)
        layer_offset = torch.arange(self.n_layers)[:, None, None] * n_bins
        self.histogram += (
            torch.bincount((bins + layer_offset)[:, averaged].flatten(), minlength=self.n_layers * n_bins)
            .view(self.n_layers, n_bins)
            .numpy()
        )
        if example_row is not None:
            n = lengths[example_row]
            self.example = {s: values[s][:, example_row, :n].numpy().copy() for s in measures.STREAMS if s in values}

    def choose_early(self, batches: list[list[int]]) -> list[list[tuple[int, int]]]:
        """The sample for figure 12's controls, drawn before any batch runs from the lengths alone (batches:
        each batch's prompt lengths with BOS, in the order they will run): reservoir sampling (Vitter's
        algorithm R) over every (prompt, position 1..6) pair in that order. The pairs kept, per batch, as
        (row, position)."""
        slots = {}  # slot → (batch, row, position); a later pair may take an earlier one's slot
        for batch, lengths in enumerate(batches):
            for row, n in enumerate(lengths):
                for position in range(1, min(measures.EARLY_POSITIONS, n - 1) + 1):
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

    def sums(self) -> tuple[np.ndarray, np.ndarray]:
        """Everything that merges by addition, flattened in one order: (float64 sums, int64 counts).
        Figure 12's counts are among them: shards of one plan (collect(only=…)) each count their part
        of the one sample, drawn from every batch's lengths."""
        floats = [sums[q] for sums in (self.sum, self.square_sum, self.bos_sum) for q in self.summed]
        counts = [np.array([self.count, self.n_prompts, self.violations]), self.histogram.ravel()]
        counts += [self.early_active, self.other_active, self.early_units]
        return np.concatenate(floats), np.concatenate(counts).astype(np.int64)

    def set_sums(self, floats: np.ndarray, counts: np.ndarray) -> None:
        """Put back what `sums` gave (added up over shards, by `merge` or across processes)."""
        L = self.n_layers
        for k, (sums, q) in enumerate((sums, q) for sums in (self.sum, self.square_sum, self.bos_sum) for q in self.summed):
            sums[q] = floats[k * L : (k + 1) * L].copy()
        self.count, self.n_prompts, self.violations = (int(c) for c in counts[:3])
        rest = np.split(counts[3:], np.cumsum([self.histogram.size, L, L]))
        self.histogram = rest[0].reshape(self.histogram.shape).copy()
        self.early_active, self.other_active, self.early_units = (c.copy() for c in rest[1:])

    def merge(self, other: "NormStats") -> "NormStats":
        """Add another shard of the same plan (collect(only=…) with other batches): every sum and count adds,
        worst_excess by maximum; the example prompt, the padding batch and figure 12's sample size stay ours."""
        (floats, counts), (their_floats, their_counts) = self.sums(), other.sums()
        self.set_sums(floats + their_floats, counts + their_counts)
        self.worst_excess = max(self.worst_excess, other.worst_excess)
        return self


def _masked_sum(x: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """[n_layers] float64: Σ of x [n_layers, batch, pos] over the positions where mask [batch, pos] holds."""
    return x[:, mask].double().sum(1).numpy()
