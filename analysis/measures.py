"""The study's measures of the residual stream, defined plainly, in the order of the post's figures.

This file says what every number about activations in the report is. Each function takes what a forward
pass gives (the norms of a few prompts' vectors) and computes one measure as the post states it. The
study runs these same definitions over thousands of prompts through analysis/engine/ (batches of similar
length, running sums, buffers written in place), which a first reading can skip: tests/test_engine.py
checks that it gives what these functions give. The rates and fits are in analysis/rates.py, the
measures of the weights alone in analysis/weight_measures.py.

Conventions, the post's:
- every prompt starts with BOS at position 0 (GPT-2's <|endoftext|>; each family's own, as its tokenizer
  files name it: OPT's </s>); prompts batched together are right-padded;
- "the mean over positions" pools every (prompt, position) pair with 1 <= position < the prompt's length:
  BOS and padding are excluded, and a long prompt weighs more than a short one;
- norms are L2 norms of the processed model's vectors. With LayerNorm (GPT-2, GPT-Neo, OPT, Pythia): LayerNorm
  folded, writing weights centred, so every residual vector has mean 0 over d_model and ‖x‖ = std(x)·√d_model.
  With RMSNorm (Llama, Qwen, OLMo 2, Gemma) only the gains are folded and nothing is centred: RMSNorm does not
  subtract the mean, so centring is not an identity there. The residual keeps its mean over d_model, ‖x‖ includes
  it, and the study also gives ‖x − mean(x)‖ (CENTRED) for these models. The report says which, per model
  (analysis/architecture.py reads it from the processed model; analysis/differences.py says it).
"""

import numpy as np
import torch

import instrument
from minigpt import GPT2
from weights.rewrites import uses_rms_norm

# The five vectors the study follows through each block, by their hook names (blocks.{l}.hook_{stream}).
STREAMS = ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post")


def hook_name(layer: int, stream: str) -> str:
    return f"blocks.{layer}.hook_{stream}"


# ---------------------------------------------------------------------------------------------
# What the forward pass gives: one number per position, per layer


def vector_norm(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """‖x‖ over the last axis, in float32: [..., d] → [...]."""
    return torch.linalg.vector_norm(x.float(), dim=-1, out=out)


def centred_norm(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """‖x − mean(x)‖ over the last axis, in float32: [..., d] → [...]. The norm without the component along
    (1, …, 1), which RMSNorm keeps and LayerNorm removes (with LayerNorm's processing it is ‖x‖ itself)."""
    x = x.float()
    return torch.linalg.vector_norm(x - x.mean(-1, keepdim=True), dim=-1, out=out)


def positive_fraction(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """The fraction of x's entries > 0 over the last axis: [..., d_mlp] → [...] (figure 12's activation rate; the
    gate > 0 fraction in a gated MLP, whose hook_pre is the gate).
    Counted, then divided: no float copy of the MLP's widest tensor."""
    return torch.sum(x > 0, dim=-1, dtype=torch.float32, out=out).div_(x.shape[-1])


# Each per-position quantity the study reads: the hook it reads at every layer, and how that hook's vector
# at one position becomes one number. A new per-position measure is one line here; the engine keeps its
# sum, its sum of squares and its value at BOS for every layer, and NormStats.mean(name) reads it.
PER_POSITION = {stream: (f"hook_{stream}", vector_norm) for stream in STREAMS} | {"active": ("mlp.hook_pre", positive_fraction)}
# With RMSNorm the residual is not mean-zero, so ‖x‖ includes its mean: each stream's ‖x − mean(x)‖ too, summed by
# the engine like PER_POSITION's, for those models only (`quantities`). With LayerNorm it would repeat ‖x‖.
CENTRED = {f"centred_{stream}": (f"hook_{stream}", centred_norm) for stream in STREAMS}


def streams(model: GPT2) -> tuple[str, ...]:
    """The STREAMS this model's blocks have. A parallel block (Pythia's) adds attention and the MLP to
    resid_pre at once, so it has no resid_mid."""
    return tuple(s for s in STREAMS if hasattr(model.blocks[0], f"hook_{s}"))


def mlp_input(model: GPT2) -> str:
    """The stream each block's MLP reads (through ln2): resid_mid, or resid_pre in a parallel block."""
    return "resid_mid" if "resid_mid" in streams(model) else "resid_pre"


# One class reads several model types (minigpt.llama.Llama: llama, mistral, qwen2, qwen3): config.json's model_type,
# which weights.load records in model.source, names them apart.
MODEL_TYPES = {"mistral": "Mistral", "qwen2": "Qwen 2", "qwen3": "Qwen 3", "gemma2": "Gemma 2", "gemma3_text": "Gemma 3"}


def family(model: GPT2) -> str:
    """Which of minigpt's families the model is: its class's name, Pythia's said as such; a model type that shares
    a class (Qwen and Mistral are minigpt.llama.Llama) by config.json's model_type, which weights.load records in model.source."""
    model_type = getattr(model, "source", {}).get("model_type")
    if model_type in MODEL_TYPES:
        return MODEL_TYPES[model_type]
    names = {"GPT2": "GPT-2", "GPTNeo": "GPT-Neo", "OPT": "OPT", "GPTNeoX": "GPT-NeoX (Pythia)", "OLMo2": "OLMo 2"}
    return names.get(type(model).__name__, type(model).__name__)  # a class minigpt does not name: as it is called


def gated(model: GPT2) -> bool:
    """A gated MLP (minigpt.llama.GatedMLP: Llama, Qwen, OLMo 2, Gemma): silu or GELU of x @ W_gate times x @ W_in."""
    return hasattr(model.blocks[0].mlp, "W_gate")


GATED = {"SwiGLU": "silu", "GeGLU": "gelu"}  # nonlinearity's names for a gated MLP → its gate's activation


def nonlinearity(model: GPT2) -> str:
    """The MLP's nonlinearity. It decides what figure 12 counts: with ReLU, the neurons whose output is not
    exactly 0; with GELU, which passes small negative values too, the neurons on its near-linear side; with a
    gated MLP (SwiGLU: silu, GeGLU: GELU), the gates g = x @ W_gate > 0 (hook_pre is the gate; silu(g) > 0 iff
    g > 0), whose output silu(g)·(x @ W_in) the linear factor may still make small or negative. The fractions
    are different quantities and are not compared as one."""
    activation = model.blocks[0].mlp.activation
    if gated(model):
        return "SwiGLU" if activation is torch.nn.functional.silu else "GeGLU"
    return "ReLU" if activation is torch.relu else "GELU"


def norm_kind(model: GPT2) -> str:
    """What normalises this model's residual stream, "RMSNorm" or "LayerNorm" (as the rewrites tell them apart)."""
    return "RMSNorm" if uses_rms_norm(model) else "LayerNorm"


def quantities(model: GPT2) -> dict:
    """PER_POSITION's quantities that this model has, and CENTRED's where the residual is not mean-zero (RMSNorm)."""
    have = streams(model)
    found = {q: read for q, read in PER_POSITION.items() if q not in STREAMS or q in have}
    if norm_kind(model) == "RMSNorm":
        found |= {q: read for q, read in CENTRED.items() if q.removeprefix("centred_") in have}
    return found


def pad_batch(prompts: list, pad: int, width: int | None = None) -> tuple[torch.Tensor, list[int]]:
    """Right-pad token lists with `pad` to `width` (default: the longest); return [batch, pos] tokens and the true lengths."""
    lengths = [len(p) for p in prompts]
    tokens = torch.full((len(prompts), width or max(lengths)), pad, dtype=torch.long)
    for i, p in enumerate(prompts):
        tokens[i, : len(p)] = torch.as_tensor(p)
    return tokens, lengths


@torch.no_grad()
def per_position(model: GPT2, prompts: list, pad: int, width: int | None = None) -> tuple[dict[str, np.ndarray], list[int]]:
    """({quantity: [n_layers, batch, pos]}, lengths): every PER_POSITION quantity at every position of
    every layer, for prompts (token ids, BOS first) right-padded with pad to width.

    Plainly: run the model keeping every hook's tensor, then reduce each. (engine.per_position_norms
    computes the same while the model runs, keeping nothing of size d_model.)"""
    tokens, lengths = pad_batch(prompts, pad, width)
    names = {f"blocks.{l}.{hook}" for hook, _ in quantities(model).values() for l in range(model.cfg.n_layers)}
    _, cache = instrument.run_with_cache(model, tokens.to(model.W_E.device), names=lambda name: name in names, unembed=False)
    values = {
        quantity: torch.stack([reduce(cache[f"blocks.{l}.{hook}"]) for l in range(model.cfg.n_layers)]).cpu().numpy()
        for quantity, (hook, reduce) in quantities(model).items()
    }
    return values, lengths


def averaged_positions(lengths: list[int], width: int) -> np.ndarray:
    """[batch, pos] bool: the positions the study averages over, 1 <= position < length (not BOS, not padding)."""
    positions = np.arange(width)[None, :]
    return (positions >= 1) & (positions < np.array(lengths)[:, None])


def values_per_prompt(model: GPT2, prompts: list, pad: int) -> dict[str, list[np.ndarray]]:
    """{quantity: [n_layers, n_pos] per prompt}: per_position's values with each prompt's padding cut off."""
    values, lengths = per_position(model, prompts, pad)
    return {quantity: [v[:, row, :n] for row, n in enumerate(lengths)] for quantity, v in values.items()}


def norms_per_prompt(model: GPT2, prompts: list, pad: int, stream: str = "resid_post") -> list[np.ndarray]:
    """[n_layers, n_pos] per prompt: every position's ‖x‖ in one stream (figures 2 and 4)."""
    return values_per_prompt(model, prompts, pad)[stream]


# ---------------------------------------------------------------------------------------------
# The measures, figure by figure. per_prompt: one quantity's [n_layers, n_pos] for each prompt.


def mean_over_positions(per_prompt: list[np.ndarray]) -> np.ndarray:
    """[n_layers]: the mean over every (prompt, position >= 1) pair, BOS excluded (figures 3, 6, 7 and 12):
    mean_l = Σ_prompts Σ_{1 <= p < n} v[l, p] / Σ_prompts (n − 1)."""
    return np.concatenate([n[:, 1:] for n in per_prompt], axis=1).astype(np.float64).mean(axis=1)


def log10_norms(per_prompt: list[np.ndarray], layer: int) -> np.ndarray:
    """Figure 1: log10 ‖resid_post‖ at one layer of every (prompt, position >= 1) pair, for its histogram."""
    return np.log10(np.concatenate([n[layer, 1:] for n in per_prompt]))


def growth_ratios(norms: dict[str, np.ndarray]) -> np.ndarray:
    """Figure 4: ‖resid_post‖ / ‖resid_pre‖ at every position of every layer: what block l multiplies the norm by."""
    return norms["resid_post"] / norms["resid_pre"]


def bos_norm(per_prompt: list[np.ndarray]) -> np.ndarray:
    """[n_layers]: the mean at position 0 over the prompts (the BOS position, which the post sets apart)."""
    return np.mean([n[:, 0] for n in per_prompt], axis=0)


def bos_ratio(per_prompt: list[np.ndarray]) -> np.ndarray:
    """[n_layers]: the BOS position's norm over the median norm of the ordinary positions (prompt, position >= 1),
    per layer: how much larger the first position's "massive activation" is than a typical vector."""
    ordinary = np.concatenate([n[:, 1:] for n in per_prompt], axis=1)
    return bos_norm(per_prompt) / np.median(ordinary, axis=1)


PADDING_EXTRA = 4  # the padding figure's prompts are padded this many positions beyond the longest of them


def padding_means(values: np.ndarray, lengths: list[int]) -> dict[str, np.ndarray]:
    """Figure 5, from values [n_layers, batch, pos] of a right-padded batch: the mean per layer at BOS, at
    padding positions (position >= length), and at ordinary positions."""
    positions = np.arange(values.shape[-1])[None, :]
    is_pad = positions >= np.array(lengths)[:, None]
    if not is_pad.any():
        raise ValueError(f"no room for padding: every prompt is {max(lengths)} tokens, the model's whole context")
    ordinary = ~is_pad & (positions > 0)
    return {"bos": values[:, :, 0].mean(1), "padding": values[:, is_pad].mean(1), "ordinary": values[:, ordinary].mean(1)}


def padding_norms(
    model: GPT2, prompts: list, pad: int, extra: int = PADDING_EXTRA, stream: str = "resid_post"
) -> dict[str, np.ndarray]:
    """Figure 5: prompts of different lengths batched and right-padded with `pad`, `extra` positions beyond the
    longest (so there is padding even if all lengths are equal); the means of `padding_means`. [n_layers] each."""
    width = min(max(map(len, prompts)) + extra, model.cfg.n_ctx)
    values, lengths = per_position(model, prompts, pad, width)
    return padding_means(values[stream], lengths)


def rms_over_positions(per_prompt: list[np.ndarray]) -> np.ndarray:
    """Figure 10: sqrt(mean ‖x‖²) per layer over the (prompt, position >= 1) pairs; ÷ √d_model, the standard
    deviation of all of x's components where the residual has mean 0 (LayerNorm processed), their root mean square,
    the mean included, with RMSNorm."""
    return np.sqrt(mean_over_positions([n.astype(np.float64) ** 2 for n in per_prompt]))


APPENDIX1_TOLERANCE = 1e-4  # relative slack for float32 rounding when checking the bound
# Appendix 1's two sides as per-position quantities of the norms (the engine sums them like PER_POSITION's).
APPENDIX1_STREAMS = ("resid_pre", "attn_out", "mlp_out", "resid_post")  # x_post = x_pre + attn_out + mlp_out, parallel or not
APPENDIX1 = {
    "growth_minus_1": lambda v: v["resid_post"] / v["resid_pre"] - 1,
    "bound": lambda v: (v["attn_out"] + v["mlp_out"]) / v["resid_pre"],
}


def appendix1(per_prompt: dict[str, list[np.ndarray]]) -> dict:
    """Appendix 1's bound, per vector: ‖x_post‖/‖x_pre‖ − 1 <= (‖attn_out‖ + ‖mlp_out‖)/‖x_pre‖, by the triangle
    inequality, since x_post = x_pre + attn_out + mlp_out. per_prompt: the streams' norms, as values_per_prompt gives
    them. The means per layer of both sides over positions >= 1, and the vectors that break it beyond float
    rounding (which would mean the measurements are wrong)."""
    sides = {
        q: [side({s: per_prompt[s][i] for s in APPENDIX1_STREAMS}) for i in range(len(per_prompt["resid_pre"]))]
        for q, side in APPENDIX1.items()
    }
    growth = np.concatenate([g[:, 1:] for g in sides["growth_minus_1"]], axis=1)
    bound = np.concatenate([b[:, 1:] for b in sides["bound"]], axis=1)
    return {
        "growth_minus_1": mean_over_positions(sides["growth_minus_1"]),
        "bound": mean_over_positions(sides["bound"]),
        "violations": int((growth > bound + APPENDIX1_TOLERANCE * (1 + np.abs(bound))).sum()),
        "worst_excess": float((growth - bound).max()),
    }


# ---------------------------------------------------------------------------------------------
# Figure 12's controls: the MLPs fed other inputs than their own


EARLY_POSITIONS = 6  # control (a) feeds each MLP resid_mid vectors from positions 1..6 only


def other_layers(n_layers: int, seed: int = 0) -> list[int]:
    """For each layer l, a random other layer (seeded): control (b) feeds layer l's MLP that layer's
    resid_mid. A model of one layer has none: [-1]."""
    if n_layers == 1:
        return [-1]
    rng = np.random.default_rng(seed)
    return [int(rng.choice([k for k in range(n_layers) if k != l])) for l in range(n_layers)]


def mlp_pre(block, resid: torch.Tensor) -> torch.Tensor:
    """What block's MLP writes to its hook_pre when it reads the residual vectors resid [n, d_model] (its MLP
    input, through ln2 where the block has one: OLMo 2's MLP reads resid_mid raw): the pre-activations
    x @ W_in + b_in, or a gated MLP's gate x @ W_gate, as MLP.forward and GatedMLP.forward compute them."""
    mlp, ln2 = block.mlp, getattr(block, "ln2", None)
    x = ln2(resid) if ln2 is not None else resid
    gate = getattr(mlp, "W_gate", None)
    return x @ gate if gate is not None else x @ mlp.W_in + mlp.b_in  # [n, d_mlp]


@torch.no_grad()
def active_count(model: GPT2, layer: int, resid: torch.Tensor) -> int:
    """How many of layer's MLP pre-activations (a gated MLP's gates) are > 0 when it reads the residual vectors
    resid [n, d_model] (the pre-activations alone: the MLP's other matrices are not needed for them)."""
    return int(torch.count_nonzero(mlp_pre(model.blocks[layer], resid.to(model.W_E.dtype)) > 0))


def early_controls(model: GPT2, resid_mid: list[torch.Tensor], seed: int = 0) -> dict[str, np.ndarray]:
    """Figure 12's controls, [n_layers] each, from resid_mid[l] [n, d_model]: layer l's resid_mid vectors (what
    its MLP reads: `mlp_input`) at some (prompt, position 1..6) pairs, the same pairs at every layer. The fraction
    of layer l's MLP pre-activations (gates) > 0 when it reads (a) its own resid_mid[l], (b) resid_mid[other_layers[l]]."""
    L, d_mlp = model.cfg.n_layers, model.cfg.d_mlp
    other = other_layers(L, seed)
    own = [active_count(model, l, resid_mid[l]) / (len(resid_mid[l]) * d_mlp) for l in range(L)]
    swapped = [active_count(model, l, resid_mid[other[l]]) / (len(resid_mid[l]) * d_mlp) for l in range(L)] if L > 1 else [np.nan]
    return {"active_early_positions": np.array(own), "active_other_layer": np.array(swapped), "other_layer": np.array(other)}
