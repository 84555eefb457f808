# %% [markdown]
# # Lesson 3: do residual-stream norms grow exponentially?
#
# Heimersheim & Turner (2023), "Residual stream norms grow exponentially over the forward pass",
# measured GPT-2-XL: the mean norm of a residual vector grows by about ×1.045 per layer over layers
# 5–41 of 48, the first position (BOS) behaves differently, attention and MLP outputs grow at the same
# rate, and the growth is visible in the weights themselves. Here you repeat the study, step by step,
# on minigpt's small bundled GPT-2 (10 layers, trained on a laptop), with the tools the
# `python -m analysis.growth` command uses. Whether the small model shows the same thing is part of
# the question: report what you measure.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import torch

import instrument
import weights
from analysis import engine, measures, plots, rates, weight_measures
from analysis.inputs import DEFAULT_PROMPTS, read_prompts
from lessons import check

torch.set_grad_enabled(False)
model, tokenizer = weights.load("bundled")  # processed, as the study: LayerNorm folded, writing weights centred
L = model.cfg.n_layers
texts = read_prompts(DEFAULT_PROMPTS).texts
prompts = [[tokenizer.eot, *tokenizer.encode(text)] for text in texts]  # BOS (<|endoftext|>) first, as in the study
print(f"{len(prompts)} prompts, {sum(map(len, prompts))} tokens; {L} layers, d_model {model.cfg.d_model}")

# %% [markdown]
# ## 1. Hooks: reading any tensor of the forward pass
#
# Every intermediate tensor passes a named hook point. `run_with_cache` keeps the ones you select;
# with `reduce`, it keeps only a reduction of each (here the norm of every vector), which is how the
# study runs over many prompts without holding whole activations.

# %%
_, cache = instrument.run_with_cache(model, torch.tensor([prompts[0]]))
print(len(cache), "hook points, e.g.", list(cache)[:6])
print("blocks.3.hook_resid_post:", tuple(cache["blocks.3.hook_resid_post"].shape), "= [batch, pos, d_model]")
_, norm_cache = instrument.run_with_cache(
    model, torch.tensor([prompts[0]]), names=lambda n: n.endswith("resid_post"), reduce=lambda t, name: t.norm(dim=-1)
)
print("kept as norms:", tuple(norm_cache["blocks.3.hook_resid_post"].shape), "= [batch, pos]")
print("mean over d_model after processing (zero, to rounding):", float(cache["blocks.3.hook_resid_post"].mean(-1).abs().max()))

# %% [markdown]
# `measures.norms_per_prompt` runs a few prompts this way, in one padded batch, and returns the norm of
# one stream at every position of every prompt: one array `[n_layers, n_pos]` per prompt.

# %%
norms = measures.norms_per_prompt(model, prompts, tokenizer.eot, stream="resid_post")
print(len(norms), "prompts; prompt 0:", norms[0].shape, "= [n_layers, n_pos]")

# %% [markdown]
# ## 2. The mean norm at each layer, BOS excluded
#
# The study averages over every (prompt, position) pair except position 0: the BOS token's residual
# is far larger than the others' (section 4) and would dominate a mean.


# %% [exercise]
def mean_norm_without_bos(norms):
    """norms: one array [n_layers, n_pos] per prompt, BOS at position 0 → mean over all non-BOS vectors, [n_layers]."""
    # BEGIN SOLUTION: concatenate the prompts' positions 1: along the position axis, then mean over it
    return np.concatenate([n[:, 1:] for n in norms], axis=1).mean(axis=1)
    # END SOLUTION


# %%
check.mean_norm_without_bos(mean_norm_without_bos)
mean_post = mean_norm_without_bos(norms)
fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
ax.plot(mean_post, "o-")
plots.log_scale(ax)
ax.set(title="bundled: mean ‖resid_post‖ by layer (BOS excluded)", xlabel="layer l", ylabel="mean L2 norm (log scale)")
plt.show()

# %% [markdown]
# ## 3. The growth rate, two ways
#
# Exponential growth is a straight line on a log scale. The study reports the **end-point rate**
# `(n[last] / n[first]) ** (1 / (last − first))`: it uses two layers only. A **least-squares fit** of a
# line through `log n` over all the layers between uses every layer, and its R² says how straight the
# line is. When the growth is steady the two agree; when the rate changes with depth they can differ
# a lot, and only the fit (with R²) shows it.


# %% [exercise]
def endpoint_rate(n, first, last):
    """The study's per-layer growth rate of mean norms n from layer first to layer last."""
    # BEGIN SOLUTION: (n[last] / n[first]) ** (1 / (last - first))
    return (n[last] / n[first]) ** (1 / (last - first))
    # END SOLUTION


# %%
check.endpoint_rate(endpoint_rate)


# %% [exercise]
def fitted_rate(n, first, last):
    """exp(slope) of the least-squares line through log n[first..last] against the layer index."""
    # BEGIN SOLUTION: np.polyfit(layers, np.log(n[first:last + 1]), 1)[0], then exp
    layers = np.arange(first, last + 1)
    slope, _ = np.polyfit(layers, np.log(n[first : last + 1]), 1)
    return math.exp(slope)
    # END SOLUTION


# %%
check.fitted_rate(fitted_rate)
first, last = rates.default_fit_layers(L)  # the study's 5..41 of 48, scaled to 10 layers
g = rates.growth_rate(mean_post, first, last)
print(
    f"layers {first}–{last}: end-point ×{endpoint_rate(mean_post, first, last):.4f}, "
    f"least squares ×{fitted_rate(mean_post, first, last):.4f} (R² {g['r2']:.2f})"
)
print(
    f"by halves: ×{g['rate_first_half']:.4f} (layers {first}–{(first + last) // 2}), "
    f"×{g['rate_second_half']:.4f} (layers {(first + last) // 2}–{last})"
)
print("GPT-2-XL in the post: ×1.045 per layer over layers 5–41, steady")

# %% [markdown]
# Compare honestly. On GPT-2-XL the rate is steady over 36 layers. If your halves differ a lot and R²
# is low, the small model does not show steady exponential growth: its norms grow quickly in the
# first layers and then level off. That is a finding, not a failure of the method.
#
# ## 4. BOS and padding
#
# The first position is special: every later position attends to it, and its residual grows
# differently. Padding positions (more `<|endoftext|>` tokens after a prompt, as in a right-padded
# batch) behave differently again. `measures.padding_norms` pads a few prompts of different lengths
# and separates the three kinds of position.

# %%
by_length = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
picks = [prompts[by_length[k]] for k in np.linspace(0, len(prompts) - 1, 8).round().astype(int)]
p = measures.padding_norms(model, picks, tokenizer.eot)
fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
for label, colour in (("bos", "tab:red"), ("padding", "tab:orange"), ("ordinary", "tab:blue")):
    ax.plot(p[label], "o-", color=colour, label=label)
plots.log_scale(ax)
ax.set(title="bundled: BOS, padding and ordinary positions", xlabel="layer l", ylabel="mean ‖resid_post‖ (log scale)")
ax.legend()
plt.show()

# %% [markdown]
# ## 5. Attention and MLP outputs
#
# If the residual grows by a constant factor per layer, what the sublayers add must grow at that rate
# too, or their contribution would shrink relative to the stream.
#
# For thousands of prompts, keeping every position's norm would fill the memory. `engine.collect`,
# which the `analysis.growth` command uses, keeps only running sums (and a few samples) instead: the same
# means, in memory that does not grow with the number of prompts.

# %%
act = engine.collect(model, prompts, batch_size=8, pad=tokenizer.eot)
print(f"{act.count} vectors averaged, {act.nbytes() / 1e6:.1f} MB kept")
mean = {s: act.mean(s) for s in measures.STREAMS}
print("the same mean as yours:", np.allclose(mean["resid_post"], mean_post, rtol=1e-5))
for stream in ("attn_out", "mlp_out", "resid_post"):
    print(f"{stream:10s} fitted ×{rates.growth_rate(mean[stream], first, last)['fit_rate']:.3f} per layer")
fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
for stream in ("attn_out", "mlp_out", "resid_post"):
    ax.plot(mean[stream], "o-", label=stream)
plots.log_scale(ax)
ax.set(title="bundled: what the sublayers add", xlabel="layer l", ylabel="mean L2 norm, BOS excluded (log scale)")
ax.legend()
plt.show()

# %% [markdown]
# ## 6. Growth written in the weights: ‖W_OV‖_F
#
# A head reads values through `W_V[h]` and writes through `W_O[h]`; together they are
# `W_OV[h] = W_V[h] @ W_O[h]`, a `d_model × d_model` matrix of rank `d_head`. Its Frobenius norm need
# not be computed from the big product: `‖AB‖_F² = trace(Bᵀ Aᵀ A B) = Σ (AᵀA) ∘ (BBᵀ)`, with two
# small `d_head × d_head` Gram matrices.


# %% [exercise]
def W_OV_frobenius(W_V, W_O):
    """W_V [n_heads, d_model, d_head], W_O [n_heads, d_head, d_model] → ‖W_V[h] @ W_O[h]‖_F for each head, [n_heads]."""
    # BEGIN SOLUTION: gram_V = W_Vᵀ W_V, gram_O = W_O W_Oᵀ (per head); sqrt of the sum of their elementwise product
    gram_V = W_V.transpose(1, 2) @ W_V
    gram_O = W_O @ W_O.transpose(1, 2)
    return (gram_V * gram_O).sum((1, 2)).sqrt()
    # END SOLUTION


# %%
check.W_OV_frobenius(W_OV_frobenius)
ov = torch.stack([W_OV_frobenius(b.attn.W_V, b.attn.W_O) for b in model.blocks])  # [n_layers, n_heads]
print("mean ‖W_OV‖_F by layer:", np.round(ov.mean(1).numpy(), 2))

# %% [markdown]
# The post's footnote 5 uses ‖W‖_F as "how much W amplifies a typical input". The identity behind it:
# for x with identity covariance, `E‖W x‖² = ‖W‖_F²`, so the mean of ‖W x‖ is close to ‖W‖_F (a little
# below, since E‖·‖ ≤ √E‖·‖²). Check it on random inputs:

# %%
x = torch.randn(4096, model.cfg.d_model, generator=torch.Generator().manual_seed(0))
outputs = weight_measures.W_OV_apply(model.blocks[5].attn.W_V, model.blocks[5].attn.W_O, x)  # [n_heads, n, d_model]
print("√ mean ‖W_OV x‖²:", np.round(outputs.pow(2).sum(-1).mean(1).sqrt().numpy(), 3))
print("‖W_OV‖_F:        ", np.round(ov[5].numpy(), 3))
print("mean ‖W_OV x‖:   ", np.round(outputs.norm(dim=-1).mean(1).numpy(), 3))

# %% [markdown]
# ## 7. The MLP on random inputs, and how many neurons fire
#
# Fed the same random normalised inputs at every layer, does each MLP output more at deeper layers?
# And what fraction of its neurons have a positive pre-activation (the GELU's "on" side)?

# %%
w = weight_measures.weight_measures(model)
actual = act.active_fraction()
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
left.plot(w["mlp_random_norm"], "o-", label="MLP(x), x random, normalised")
left.plot(mean["mlp_out"], "s-", label="actual mlp_out")
plots.log_scale(left)
left.set(title="MLP output", xlabel="layer l", ylabel="mean L2 norm (log scale)")
left.legend()
right.plot(actual, "o-", label="actual run")
right.plot(w["active_random"], "s-", label="random normalised inputs")
right.set(title="fraction of pre-activations > 0", xlabel="layer l", ylabel="fraction")
right.legend()
plt.show()

# %% [markdown]
# ## 8. Appendix 1: growth is bounded by what the sublayers add
#
# Each block adds two vectors: `x_post = x_pre + attn_out + mlp_out`. By the triangle inequality,
# `‖x_post‖ ≤ ‖x_pre‖ + ‖attn_out‖ + ‖mlp_out‖`; dividing by `‖x_pre‖`,
#
#     g − 1 = ‖x_post‖ / ‖x_pre‖ − 1  ≤  (‖attn_out‖ + ‖mlp_out‖) / ‖x_pre‖.
#
# So a layer can multiply a vector's norm by `g` only if its sublayers write outputs at least
# `(g − 1)` times as large as the vector. This must hold for every single vector; a violation would
# mean the measurements are wrong.

# %%
bound = act.appendix1()
print(f"violations: {bound['violations']} of {act.count * L} vectors")
print("layer   mean g − 1   mean bound")
for layer, (growth, limit) in enumerate(zip(bound["growth_minus_1"], bound["bound"])):
    print(f"{layer:5d}   {growth:10.3f}   {limit:10.3f}")

# %% [markdown]
# ## What you found
#
# Fill in from your numbers above, beside the post's: rate per layer (end-point and fit, with R²),
# whether the halves agree, how BOS and padding compare with ordinary positions, and whether attn_out,
# mlp_out and ‖W_OV‖_F grow with the residual. The full study, with all 15 figures, is one command:
# `python -m analysis.growth --model bundled`.
