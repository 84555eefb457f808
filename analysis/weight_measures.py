"""The study's measures of the weights alone, no prompts needed: figures 8, 9, 11, 13 and 15, figure 12's
random-input rate, and (`as_trained`) the norms' gains and matrix norms before the weights are processed.

What growth written into the weights would look like: attention's W_OV = W_V @ W_O and the MLP's matrices
growing in norm with depth, and the blocks' outputs on random inputs of a fixed size growing with them.
Inputs are "random normalised" vectors: Gaussian, then shifted and scaled to mean 0 and variance 1 over
d_model, which is what a folded LayerNorm hands its block's attention or MLP whatever the residual's size. A
model normalised by RMSNorm gets what a folded RMSNorm hands on instead: Gaussian vectors scaled to root mean
square 1, not centred (`random_inputs`).

Grouped-query attention (Llama, Qwen, OLMo 2, Gemma): query head h reads key-value head h // group, so its
W_OV is W_V[h // group] @ W_O[h] (`values_per_head`), and the heads of one group share their W_V.
"""

import numpy as np
import torch

import instrument
from analysis import measures
from minigpt import GPT2


def random_normalised(n: int, d_model: int, seed: int = 0) -> torch.Tensor:
    """n Gaussian vectors, each shifted and scaled to mean 0 and variance 1 over its d_model entries:
    what a (folded) LayerNorm hands its block's attention or MLP."""
    x = torch.randn(n, d_model, generator=torch.Generator().manual_seed(seed))
    x = x - x.mean(-1, keepdim=True)
    return x / x.pow(2).mean(-1, keepdim=True).sqrt()


def random_unit_rms(n: int, d_model: int, seed: int = 0) -> torch.Tensor:
    """n Gaussian vectors, each scaled to root mean square 1 over its d_model entries, not centred: what a
    (folded) RMSNorm hands its block's attention or MLP."""
    x = torch.randn(n, d_model, generator=torch.Generator().manual_seed(seed))
    return x / x.pow(2).mean(-1, keepdim=True).sqrt()


def random_inputs(model: GPT2, n: int, seed: int = 0) -> torch.Tensor:
    """[n, d_model] float32: what this model's folded norms hand its sublayers, for a random input: LayerNorm's
    output (`random_normalised`), or RMSNorm's (`random_unit_rms`)."""
    make = random_unit_rms if measures.norm_kind(model) == "RMSNorm" else random_normalised
    return make(n, model.cfg.d_model, seed)


def values_per_head(attn) -> torch.Tensor:
    """[n_heads, d_model, d_head] float32: the W_V each query head reads, W_V[h // group] with grouped-query
    attention (n_kv_heads key-value heads, each shared by group = n_heads / n_kv_heads query heads), W_V itself
    otherwise."""
    W_V = attn.W_V.float()
    return W_V.repeat_interleave(attn.W_O.shape[0] // W_V.shape[0], dim=0)


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


def post_norm(block, name: str, out: torch.Tensor) -> torch.Tensor:
    """out through the block's norm after a sublayer (`ln1_post` after attention, `ln2_post` after the MLP: OLMo 2
    and Gemma), as the block applies it before hook_attn_out / hook_mlp_out; out itself where there is none."""
    norm = getattr(block, name, None)
    if norm is None:
        return out
    return norm(out.to(norm.w.dtype) if norm.w is not None else out)  # in the model's dtype, as the block runs it


def mlp_on(model: GPT2, layer: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer's MLP applied to x, its norm's output [n, d_model]: (pre-activations [n, d_mlp], the gates in a gated
    MLP; what the block writes as mlp_out [n, d_model], through ln2_post where the block has one)."""
    seen = []
    with instrument.hooks(model, {f"blocks.{layer}.mlp.hook_pre": lambda pre, name: seen.append(pre)}):
        out = model.blocks[layer].mlp(x)
    return seen[0], post_norm(model.blocks[layer], "ln2_post", out)


N_RANDOM = 512  # random input vectors per layer for the weight measures


@torch.no_grad()
def weight_measures(model: GPT2, n_random: int = N_RANDOM, seed: int = 0, on_layer=None) -> dict[str, np.ndarray]:
    """Per-layer measurements of the weights alone (figures 8, 9, 11, 12-random, 13, 15); on_layer(1) after each layer.
    ov_random_norm is attention's output when every head reads its own position (x @ Σ_h W_OV[h]), and
    mlp_random_norm the MLP's, each through the block's post-sublayer norm where it has one (`post_norm`)."""
    cfg = model.cfg
    x_normalised = random_inputs(model, n_random, seed).to(model.W_E)
    x_gaussian = torch.randn(n_random, cfg.d_model, generator=torch.Generator().manual_seed(seed + 1)).to(model.W_E)
    rows = []
    for l, block in enumerate(model.blocks):
        attn, mlp = block.attn, block.mlp
        W_V, W_O = values_per_head(attn), attn.W_O.float()  # [n_heads, d_model, d_head], [n_heads, d_head, d_model]
        ov_random = post_norm(block, "ln1_post", W_OV_sum_apply(W_V, W_O, x_normalised.float()))
        pre_random, mlp_random_out = mlp_on(model, l, x_normalised)
        active_random = int(torch.count_nonzero(pre_random > 0)) / pre_random.numel()
        del pre_random  # [n_random, d_mlp]: the widest tensor here, not kept while the next ones are made
        rows.append(
            {
                "W_OV_frobenius": W_OV_frobenius(W_V, W_O).cpu().numpy(),  # [n_heads]
                "b_O_norm": float(attn.b_O.float().norm()),
                "ov_random_norm": float(ov_random.float().norm(dim=-1).mean()),
                "mlp_random_norm": float(mlp_random_out.float().norm(dim=-1).mean()),
                "active_random": active_random,
                "W_in_norm": float(mlp.W_in.float().norm()),
                "b_in_norm": float(mlp.b_in.float().norm()),
                "W_out_norm": float(mlp.W_out.float().norm()),
                "b_out_norm": float(mlp.b_out.float().norm()),
                "W_Q_norm": float(attn.W_Q.float().norm()),
                "W_K_norm": float(attn.W_K.float().norm()),
                "W_V_norm": float(attn.W_V.float().norm()),  # over the key-value heads, as stored
                "W_O_norm": float(W_O.norm()),
                # Footnote 5: E‖W x‖² = ‖W‖_F² for x with identity covariance, so mean ‖W x‖ ≈ ‖W‖_F.
                "W_OV_mean_Wx": W_OV_norms(W_V, W_O, x_gaussian.float()).mean(1).cpu().numpy(),  # [n_heads]
                "W_in_mean_Wx": float((x_gaussian @ mlp.W_in).float().norm(dim=-1).mean()),
            }
        )
        if on_layer:
            on_layer(1)
    return {key: np.array([row[key] for row in rows]) for key in rows[0]}


# The gains `as_trained` reads, by block attribute: the pre-norms (LayerNorm's or RMSNorm's, folded into the weights
# that read them) and the post-sublayer norms of OLMo 2 and Gemma (not foldable: they stay in the processed model).
GAINS = ("ln1", "ln2", "ln1_post", "ln2_post")


@torch.no_grad()
def as_trained(model: GPT2) -> dict[str, np.ndarray]:
    """Where growth can be stored, read before `weights.process` folds the gains in: per layer, the RMS of each
    norm's gain w that the block has ({ln}_gain_rms for GAINS: OLMo 2 has ln1_post and ln2_post instead of ln1
    and ln2), the mean over heads of ‖W_V[h // group] W_O[h]‖_F, ‖W_in‖_F and ‖W_out‖_F, as trained.
    A pre-norm gain that grows with depth multiplies what its own block's sublayer reads (ln1's the attention,
    ln2's the MLP), exactly as a growing matrix would:
    processed, it becomes part of W_OV and W_in (`weight_measures`' W_OV_frobenius and W_in_norm). A post-norm
    gain multiplies what the sublayer writes (attn_out, mlp_out), and stays a gain when processed."""
    rows = [
        {
            f"{ln}_gain_rms": float(getattr(b, ln).w.float().pow(2).mean().sqrt())
            for ln in GAINS
            if getattr(b, ln, None) is not None and getattr(b, ln).w is not None
        }
        | {
            "W_OV_as_trained": float(W_OV_frobenius(values_per_head(b.attn), b.attn.W_O.float()).mean()),
            "W_in_as_trained": float(b.mlp.W_in.float().norm()),
            "W_out_as_trained": float(b.mlp.W_out.float().norm()),
        }
        for b in model.blocks
    ]
    return {key: np.array([row[key] for row in rows]) for key in rows[0]}
