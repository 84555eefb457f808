"""The study's numbers: residual norms gathered while the model runs, and measurements of its weights.

Conventions (the study's): every prompt starts with <|endoftext|> (BOS) at position 0;
averages exclude position 0 and padding and pool all remaining (prompt, position) pairs; norms are L2
norms of the processed model's vectors (zero-mean residual stream, so norm = std·√d_model).
"""

from dataclasses import dataclass, field

import numpy as np
import torch

import instrument
from minigpt import GPT2

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


# ---------------------------------------------------------------------------------------------
# What the forward pass gives: per-position norms, reduced as the model runs


@dataclass
class Activations:
    """Per-position numbers from running the model on prompts, with BOS at position 0 of each.

    norms[stream]: one array per prompt, [n_layers, n_pos], the L2 norm of that vector.
    active[i]: [n_layers, n_pos], the fraction of the d_mlp pre-activations that are > 0.
    early_resid_mid: [n_layers, n_samples, d_model], resid_mid vectors at positions 1–6 of the prompts.
    """

    norms: dict[str, list[np.ndarray]] = field(default_factory=lambda: {s: [] for s in STREAMS})
    active: list[np.ndarray] = field(default_factory=list)
    early_resid_mid: torch.Tensor | None = None

    def pooled(self, stream: str) -> np.ndarray:
        """[n_layers, n_vectors]: every (prompt, position >= 1) pair, BOS excluded."""
        return np.concatenate([norms[:, 1:] for norms in self.norms[stream]], axis=1)

    def mean_norm(self, stream: str) -> np.ndarray:
        return self.pooled(stream).mean(axis=1)

    def rms_norm(self, stream: str) -> np.ndarray:
        """sqrt(mean ‖x‖²) per layer; divided by √d_model, the standard deviation of all components."""
        return np.sqrt((self.pooled(stream) ** 2).mean(axis=1))

    def bos_norm(self, stream: str) -> np.ndarray:
        return np.mean([norms[:, 0] for norms in self.norms[stream]], axis=0)

    def active_fraction(self) -> np.ndarray:
        return np.concatenate([active[:, 1:] for active in self.active], axis=1).mean(axis=1)


def pad_batch(prompts: list[list[int]], pad: int, width: int | None = None) -> tuple[torch.Tensor, list[int]]:
    """Right-pad token lists with `pad` to `width` (default: the longest); return [batch, pos] tokens and the true lengths."""
    lengths = [len(p) for p in prompts]
    tokens = torch.full((len(prompts), width or max(lengths)), pad, dtype=torch.long)
    for i, p in enumerate(prompts):
        tokens[i, : len(p)] = torch.tensor(p)
    return tokens, lengths


def per_position_norms(model: GPT2, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """{hook name: [batch, pos] norms} for the five streams of every layer, plus the MLP's active fraction.

    Nothing of size d_model is kept: each tensor is reduced as it is produced, so memory holds the
    weights and one batch's activations. The unembedding is skipped (the study reads no logits).
    """
    wanted = {hook_name(l, s) for l in range(model.cfg.n_layers) for s in STREAMS}
    wanted |= {f"blocks.{l}.mlp.hook_pre" for l in range(model.cfg.n_layers)}

    def reduce(tensor: torch.Tensor, name: str) -> torch.Tensor:
        if name.endswith("mlp.hook_pre"):
            return (tensor > 0).float().mean(-1)
        return tensor.float().norm(dim=-1)

    _, cache = instrument.run_with_cache(model, tokens, names=wanted.__contains__, reduce=reduce, unembed=False)
    return cache


def collect(model: GPT2, prompts: list[list[int]], batch_size: int, pad: int, n_early: int = 6, on_batch=None) -> Activations:
    """Run every prompt (BOS already prepended) and gather per-position norms; batches group similar lengths.
    on_batch(n), if given, is called after each batch with the number of prompts it held."""
    L = model.cfg.n_layers
    result = Activations()
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    per_prompt: dict[int, dict] = {}
    early: list[torch.Tensor] = []
    early_names = [hook_name(l, "resid_mid") for l in range(L)]
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        tokens, lengths = pad_batch([prompts[i] for i in chosen], pad)

        def keep_early(resid_mid: torch.Tensor, name: str, lengths=lengths) -> None:
            early.append((name, resid_mid[:, 1 : n_early + 1].to(torch.float32, copy=True), lengths))

        with instrument.hooks(model, dict.fromkeys(early_names, keep_early)):
            cache = per_position_norms(model, tokens)
        for row, i in enumerate(chosen):
            n = lengths[row]
            per_prompt[i] = {
                "norms": {s: np.stack([cache[hook_name(l, s)][row, :n].cpu().numpy() for l in range(L)]) for s in STREAMS},
                "active": np.stack([cache[f"blocks.{l}.mlp.hook_pre"][row, :n].cpu().numpy() for l in range(L)]),
            }
        if on_batch:
            on_batch(len(chosen))
    for i in range(len(prompts)):
        for s in STREAMS:
            result.norms[s].append(per_prompt[i]["norms"][s])
        result.active.append(per_prompt[i]["active"])
    result.early_resid_mid = _early_vectors(early, L, n_early)
    return result


def _early_vectors(captured, n_layers: int, n_early: int) -> torch.Tensor:
    """[n_layers, n_samples, d_model]: resid_mid at positions 1..n_early of every prompt (not padding)."""
    by_layer: list[list[torch.Tensor]] = [[] for _ in range(n_layers)]
    for name, vectors, lengths in captured:
        layer = int(name.split(".")[1])
        for row, n in enumerate(lengths):
            by_layer[layer].append(vectors[row, : max(0, min(n_early, n - 1))])
    return torch.stack([torch.cat(vectors) for vectors in by_layer])


def padding_norms(
    model: GPT2, prompts: list[list[int]], pad: int, extra: int = 4, stream: str = "resid_post"
) -> dict[str, np.ndarray]:
    """Prompts of different lengths batched and right-padded with `pad`, `extra` positions beyond the
    longest (so that there is padding even if all lengths are equal): mean norm per layer at BOS, at
    padding positions, and at ordinary positions. [n_layers] each."""
    longest = max(map(len, prompts))
    extra = min(extra, model.cfg.n_ctx - longest)
    tokens, lengths = pad_batch(prompts, pad, width=longest + extra)
    cache = per_position_norms(model, tokens)
    norms = torch.stack([cache[hook_name(l, stream)] for l in range(model.cfg.n_layers)]).cpu().numpy()  # [L, b, p]
    positions = np.arange(tokens.shape[1])[None, :]
    is_pad = positions >= np.array(lengths)[:, None]
    ordinary = ~is_pad & (positions > 0)
    if not is_pad.any():
        raise ValueError(f"no room for padding: every prompt is {longest} tokens, the model's whole context")
    return {"bos": norms[:, :, 0].mean(1), "padding": norms[:, is_pad].mean(1), "ordinary": norms[:, ordinary].mean(1)}


# ---------------------------------------------------------------------------------------------
# The Appendix 1 bound


def appendix1_check(act: Activations, tolerance: float = 1e-4) -> dict:
    """Per vector: ‖x_post‖/‖x_pre‖ − 1 ≤ (‖attn_out‖ + ‖mlp_out‖)/‖x_pre‖, by the triangle inequality,
    since x_post = x_pre + attn_out + mlp_out. Averages per layer of both sides, and every violation
    beyond a relative `tolerance` (float rounding), which would mean the measurements are wrong."""
    pre, post = act.pooled("resid_pre"), act.pooled("resid_post")
    attn, mlp = act.pooled("attn_out"), act.pooled("mlp_out")
    growth = post / pre - 1
    bound = (attn + mlp) / pre
    violated = growth > bound + tolerance * (1 + np.abs(bound))
    return {
        "growth_minus_1": growth.mean(axis=1),
        "bound": bound.mean(axis=1),
        "violations": int(violated.sum()),
        "worst_excess": float((growth - bound).max()),
    }


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


def mlp_on(model: GPT2, layer: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer's MLP applied to x, LayerNorm's output [n, d_model]: (pre-activations [n, d_mlp], output [n, d_model])."""
    seen = []
    with instrument.hooks(model, {f"blocks.{layer}.mlp.hook_pre": lambda pre, name: seen.append(pre)}):
        out = model.blocks[layer].mlp(x)
    return seen[0], out


@torch.no_grad()
def weight_measures(model: GPT2, n_random: int = 512, seed: int = 0, on_layer=None) -> dict[str, np.ndarray]:
    """Per-layer measurements of the weights alone (figures 8, 9, 11, 12-random, 13, 15); on_layer(1) after each layer."""
    cfg = model.cfg
    x_normalised = random_normalised(n_random, cfg.d_model, seed).to(model.W_E)
    x_gaussian = torch.randn(n_random, cfg.d_model, generator=torch.Generator().manual_seed(seed + 1)).to(model.W_E)
    rows = []
    for l, block in enumerate(model.blocks):
        attn, mlp = block.attn, block.mlp
        W_V, W_O = attn.W_V.float(), attn.W_O.float()
        pre_random, mlp_random_out = mlp_on(model, l, x_normalised)
        rows.append(
            {
                "W_OV_frobenius": W_OV_frobenius(W_V, W_O).cpu().numpy(),  # [n_heads]
                "b_O_norm": float(attn.b_O.float().norm()),
                "ov_random_norm": float(W_OV_apply(W_V, W_O, x_normalised.float()).sum(0).norm(dim=-1).mean()),
                "mlp_random_norm": float(mlp_random_out.float().norm(dim=-1).mean()),
                "active_random": float((pre_random > 0).float().mean()),
                "W_in_norm": float(mlp.W_in.float().norm()),
                "b_in_norm": float(mlp.b_in.float().norm()),
                "W_out_norm": float(mlp.W_out.float().norm()),
                "b_out_norm": float(mlp.b_out.float().norm()),
                "W_Q_norm": float(attn.W_Q.float().norm()),
                "W_K_norm": float(attn.W_K.float().norm()),
                "W_V_norm": float(W_V.norm()),
                "W_O_norm": float(W_O.norm()),
                # Footnote 5: E‖W x‖² = ‖W‖_F² for x with identity covariance, so mean ‖W x‖ ≈ ‖W‖_F.
                "W_OV_mean_Wx": W_OV_apply(W_V, W_O, x_gaussian.float()).norm(dim=-1).mean(1).cpu().numpy(),  # [n_heads]
                "W_in_mean_Wx": float((x_gaussian @ mlp.W_in).float().norm(dim=-1).mean()),
            }
        )
        if on_layer:
            on_layer(1)
    return {key: np.array([row[key] for row in rows]) for key in rows[0]}


@torch.no_grad()
def active_fraction_of(model: GPT2, layer: int, resid: torch.Tensor) -> float:
    """The fraction of layer's MLP pre-activations > 0 when its ln2 reads the residual vectors `resid`."""
    pre, _ = mlp_on(model, layer, model.blocks[layer].ln2(resid.to(model.W_E.dtype)))
    return float((pre > 0).float().mean())


def resampled_active_fractions(model: GPT2, early_resid_mid: torch.Tensor, seed: int = 0) -> dict[str, np.ndarray]:
    """Figure 12's controls, [n_layers] each: every layer's MLP fed
    (a) only the resid_mid vectors of positions 1–6 of the prompts (at that layer), and
    (b) the same vectors taken from a random other layer."""
    L = model.cfg.n_layers
    rng = np.random.default_rng(seed)
    early = [active_fraction_of(model, l, early_resid_mid[l]) for l in range(L)]
    others = [int(rng.choice([k for k in range(L) if k != l])) for l in range(L)]
    other_layer = [active_fraction_of(model, l, early_resid_mid[k]) for l, k in enumerate(others)]
    return {
        "active_early_positions": np.array(early),
        "active_other_layer": np.array(other_layer),
        "other_layer": np.array(others),
    }
