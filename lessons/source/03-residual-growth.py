# %% [markdown]
# # Lesson 3: do residual-stream norms grow exponentially?
#
# Heimersheim & Turner (2023), "Residual stream norms grow exponentially over the forward pass",
# measured GPT-2-XL: the mean norm of a residual vector grows by about ×1.045 per layer over layers
# 5–41 of 48, steadily. They also looked at the first position (BOS), at what attention and the MLPs
# add, and at the weights themselves. Here you repeat the study, step by step, on two small GPT-2s
# trained by minigpt's own recipe, and decide for yourself whether they show the same thing:
#
# - the **bundled** model (10 layers, trained to the end of its 1,500 steps), and
# - a **checkpoint from early in training** of minigpt's small recipe (6 layers, d_model 128; step 4
#   of 300), shipped with the lessons.
#
# You write the measures (six short functions); minigpt's `analysis.measures` runs the model and
# keeps the norms. `check.hint("fitted_rate")` gives a nudge when you are stuck.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch

import instrument
import lessons
import weights
from analysis.measures import STREAMS, norms_per_prompt, pad_batch, padding_norms
from analysis.rates import default_fit_layers, growth_rate, steady_growth
from analysis.weight_measures import mlp_on, random_normalised, weight_measures
from lessons import figures
from lessons.check import lesson3 as check

torch.set_grad_enabled(False)
model, tokenizer = weights.load("bundled")  # processed, as the study: LayerNorm folded, writing weights centred
L = model.cfg.n_layers
prompts = [[tokenizer.eot, *tokenizer.encode(text)] for text in lessons.prompts()]  # BOS (<|endoftext|>) first
print(f"{len(prompts)} prompts, {sum(map(len, prompts))} tokens; {L} layers, d_model {model.cfg.d_model}")

# %% [markdown]
# ## 1. Norms at every layer and position
#
# Every tensor of the forward pass passes a named hook point, and `instrument.run_with_cache` keeps
# the ones you name (lesson 4 shows how hooks work). With `reduce` it keeps only a reduction of each,
# here the norm of every vector:

# %%
_, cache = instrument.run_with_cache(
    model,
    torch.tensor([prompts[0]]),
    names=lambda n: n.endswith("resid_post"),
    reduce=lambda t, name: t.norm(dim=-1),
    unembed=False,  # no logits: the unembedding is skipped
)
print("blocks.3.hook_resid_post kept as norms:", tuple(cache["blocks.3.hook_resid_post"].shape), "= [batch, pos]")

# %% [markdown]
# `norms_per_prompt` does this for many prompts in one padded batch, and returns one array
# `[n_layers, n_pos]` per prompt: the norm of one stream at every layer and position, padding cut
# off. The streams are the five vectors each block passes (`STREAMS`); this lesson reads four of them.

# %%
print("streams:", STREAMS)
norms = {stream: norms_per_prompt(model, prompts, tokenizer.eot, stream=stream) for stream in STREAMS if stream != "resid_mid"}
print(len(norms["resid_post"]), "prompts; prompt 0:", norms["resid_post"][0].shape, "= [n_layers, n_pos]")

# %% [markdown]
# ## 2. The mean norm at each layer, BOS excluded
#
# The study averages over every (prompt, position) pair except position 0, BOS: in GPT-2 its residual
# behaves unlike any other position's (in GPT-2-XL it is far larger), and section 5 looks at it
# apart. Every other vector counts once, whichever prompt it is in.


# %% [exercise]
def mean_norm_without_bos(norms):
    """norms: one array [n_layers, n_pos] per prompt, BOS at position 0 → mean over all non-BOS vectors, [n_layers]."""
    # BEGIN SOLUTION
    return np.concatenate([n[:, 1:] for n in norms], axis=1).mean(axis=1)
    # END SOLUTION


# %%
check.mean_norm_without_bos(mean_norm_without_bos)
mean_post = mean_norm_without_bos(norms["resid_post"])
figures.norms_by_layer({"bundled": mean_post}, "bundled: mean ‖resid_post‖ by layer")
plt.show()

# %% [markdown]
# Exponential growth is a straight line on this log scale. Before measuring: is it one? Where does
# it bend?
#
# ## 3. The growth rate, three numbers
#
# The study reports the **end-point rate** `(n[last] / n[first]) ** (1 / (last − first))`: it uses
# two layers only. A **least-squares fit** of a line through `log n` over all the layers between uses
# every layer, and its **R²** says how straight the line is. When the growth is steady the rates
# agree and R² is close to 1; when the rate changes with depth they can differ a lot, and only the
# fit with its R² shows it.


# %% [exercise]
def endpoint_rate(n, first, last):
    """The study's per-layer growth rate of mean norms n from layer first to layer last."""
    # BEGIN SOLUTION
    return (n[last] / n[first]) ** (1 / (last - first))
    # END SOLUTION


# %%
check.endpoint_rate(endpoint_rate)


# %% [exercise]
def fitted_rate(n, first, last):
    """exp(slope) of the least-squares line through log n[first..last] against the layer index."""
    # BEGIN SOLUTION
    layers = np.arange(first, last + 1)
    slope, _ = np.polyfit(layers, np.log(n[first : last + 1]), 1)
    return float(np.exp(slope))
    # END SOLUTION


# %%
check.fitted_rate(fitted_rate)


# %% [exercise]
def r_squared(n, first, last):
    """R² of fitted_rate's line: 1 − (sum of squared residuals) / (sum of squares of log n about its mean)."""
    # BEGIN SOLUTION
    layers, y = np.arange(first, last + 1), np.log(n[first : last + 1])
    slope, intercept = np.polyfit(layers, y, 1)
    return float(1 - ((y - (slope * layers + intercept)) ** 2).sum() / ((y - y.mean()) ** 2).sum())
    # END SOLUTION


# %%
check.r_squared(r_squared)

# %% [markdown]
# The study fits GPT-2-XL's layers 5–41 of 48; `default_fit_layers` scales that range to another
# depth. The project calls growth *steady* when the fit has R² ≥ 0.95 and a rate ≥ 1.02 per layer
# over at least two thirds of the layers, and the two halves of the range grow at log-rates within
# 25% of each other (`steady_growth`).

# %%
first, last = default_fit_layers(L)
middle = (first + last) // 2
print(
    f"bundled, layers {first}–{last}: end-point ×{endpoint_rate(mean_post, first, last):.4f}, "
    f"least squares ×{fitted_rate(mean_post, first, last):.4f}, R² {r_squared(mean_post, first, last):.2f}"
)
print(f"by halves: ×{endpoint_rate(mean_post, first, middle):.4f}, then ×{endpoint_rate(mean_post, middle, last):.4f}")
bar = steady_growth(growth_rate(mean_post, first, last), L)
print("steady growth:", bar)
print("GPT-2-XL in the post: ×1.045 per layer over layers 5–41, steady")

# %% [markdown]
# Before reading on, write your verdict in a sentence: does the bundled model grow steadily?
#
# ## 4. Early in training
#
# `lessons/checkpoints/small6-step004` comes from a training run of minigpt's own loop (6 layers,
# d_model 128, 300 steps), saved after its 4th step (its PROVENANCE.md says how it was made, and
# lessons/checkpoints/README.md why this step). Measure it exactly as the bundled model.

# %%
early, _ = weights.load(lessons.MID_TRAINING)  # processed too
mid_post = mean_norm_without_bos(norms_per_prompt(early, prompts, tokenizer.eot))
L_mid = early.cfg.n_layers
first_mid, last_mid = default_fit_layers(L_mid)
middle_mid = (first_mid + last_mid) // 2
print(
    f"step 4, layers {first_mid}–{last_mid}: least squares ×{fitted_rate(mid_post, first_mid, last_mid):.4f}, "
    f"R² {r_squared(mid_post, first_mid, last_mid):.3f}; by halves ×{endpoint_rate(mid_post, first_mid, middle_mid):.4f}, "
    f"then ×{endpoint_rate(mid_post, middle_mid, last_mid):.4f}"
)
print("steady growth:", steady_growth(growth_rate(mid_post, first_mid, last_mid), L_mid))
figures.norms_by_layer(
    {"6 layers, step 4 of 300": mid_post, "bundled: 10 layers, step 1,500 (the end)": mean_post},
    "mean ‖resid_post‖: steady growth early in training, gone by the end",
)
plt.show()

# %% [markdown]
# This checkpoint has seen 4,096 tokens, and its validation loss (10.22) is barely below a uniform
# guess over the vocabulary (ln 50257 = 10.82): the norms grow steadily before the model has learned
# much, because the first updates enlarge what every block writes while the embeddings stay tiny. So
# growth is not by itself a sign of learning. docs/training-dynamics.md follows whole runs: the rate
# climbs over the first ~40 steps, falls as the embeddings catch up, is steady again near step 450 in
# the 8- and 16-layer runs (×1.063 per layer, R² 0.986 at 8 layers, validation loss 4.5), and bends
# in the second half of training, as the learning rate decays and the last layers' norms fall back.
#
# ## 5. BOS and padding
#
# Every later position attends to the first, and in GPT-2 its residual grows unlike the others.
# Padding positions (more `<|endoftext|>` tokens after a prompt, as in a right-padded batch) behave
# differently again. `padding_norms` pads a few prompts of different lengths and averages the three
# kinds of position apart. Before you look: which do you expect to be largest?

# %%
by_length = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
picks = [prompts[by_length[k]] for k in np.linspace(0, len(prompts) - 1, 8).round().astype(int)]
p = padding_norms(model, picks, tokenizer.eot)
figures.norms_by_layer(
    {kind: p[kind] for kind in ("bos", "padding", "ordinary")}, "bundled: BOS, padding and ordinary", "mean ‖resid_post‖"
)
plt.show()
print("BOS / ordinary, by layer:", np.round(p["bos"] / p["ordinary"], 2))

# %% [markdown]
# In GPT-2-XL, BOS's norm is many times the others' (it would dominate a mean). Is it here?
#
# ## 6. What attention and the MLPs add
#
# If the residual grows by a constant factor per layer, what the sublayers add must grow at that rate
# too, or their contribution would shrink relative to the stream. Use your functions on the other
# streams' norms. Before you print: do attention and the MLPs grow at the residual's rate here?

# %%
mean = {stream: mean_norm_without_bos(n) for stream, n in norms.items()}
for stream in ("attn_out", "mlp_out", "resid_post"):
    print(f"{stream:10s} least squares ×{fitted_rate(mean[stream], first, last):.3f} per layer")
figures.norms_by_layer(
    {s: mean[s] for s in ("attn_out", "mlp_out", "resid_post")}, "bundled: what the sublayers add", "mean norm"
)
plt.show()

# %% [markdown]
# ## 7. Growth written in the weights: ‖W_OV‖_F
#
# A head reads values through `W_V[h]` and writes through `W_O[h]`; together they are
# `W_OV[h] = W_V[h] @ W_O[h]`, a `d_model × d_model` matrix of rank at most `d_head`. Its Frobenius
# norm `‖A‖_F = √(Σ A²)` is the post's measure of how much a head amplifies what it reads.


# %% [exercise]
def W_OV_frobenius(W_V, W_O):
    """W_V [n_heads, d_model, d_head], W_O [n_heads, d_head, d_model] → ‖W_V[h] @ W_O[h]‖_F for each head, [n_heads]."""
    # BEGIN SOLUTION
    return (W_V @ W_O).pow(2).sum((1, 2)).sqrt()
    # END SOLUTION


# %%
check.W_OV_frobenius(W_OV_frobenius)
ov = torch.stack([W_OV_frobenius(b.attn.W_V, b.attn.W_O) for b in model.blocks])  # [n_layers, n_heads]
print("mean ‖W_OV‖_F by layer:", np.round(ov.mean(1).numpy(), 2))

# %% [markdown]
# The post's footnote 5 reads ‖W‖_F as "how much W amplifies a typical input": for x with identity
# covariance, `E‖x W‖² = ‖W‖_F²`, so the mean of ‖x W‖ is close to ‖W‖_F (a little below, since
# E‖·‖ ≤ √E‖·‖²). The inputs here are **random normalised** vectors, `random_normalised`: Gaussian
# vectors each shifted and scaled to mean 0 and variance 1 over its `d_model` entries, which is what
# a folded LayerNorm hands the next layer. (Centring removes one direction, so their covariance is
# the identity less 1/d_model in every entry: close enough.)

# %%
x = random_normalised(4096, model.cfg.d_model)  # [n, d_model]
attn = model.blocks[5].attn
outputs = torch.einsum("nd,hde->hne", x, attn.W_V) @ attn.W_O  # [n_heads, n, d_model]: x @ W_OV[h] for every head
print("√ mean ‖x W_OV‖²:", np.round(outputs.pow(2).sum(-1).mean(1).sqrt().numpy(), 3))
print("‖W_OV‖_F:        ", np.round(ov[5].numpy(), 3))
print("mean ‖x W_OV‖:   ", np.round(outputs.norm(dim=-1).mean(1).numpy(), 3))

# %% [markdown]
# ## 8. The MLP on random inputs, and how many neurons fire
#
# Fed the same random normalised inputs at every layer, does each MLP output more at deeper layers?
# `mlp_on(model, layer, x)` runs one layer's MLP on inputs you choose; `weight_measures` does it for
# every layer (512 inputs each), among other measures of the weights alone. What fraction of the
# neurons have a positive pre-activation (the GELU's "on" side), on random inputs and in the real run?

# %%
pre, out = mlp_on(model, 5, x)
print(
    f"layer 5 on random normalised inputs: mean ‖MLP(x)‖ {float(out.norm(dim=-1).mean()):.2f}, "
    f"active {float((pre > 0).float().mean()):.3f}"
)
w = weight_measures(model)
tokens, lengths = pad_batch(prompts, tokenizer.eot)
_, active = instrument.run_with_cache(  # unembed=False: no logits needed, so skip the 50257-wide unembedding
    model, tokens, names=lambda n: n.endswith("mlp.hook_pre"), reduce=lambda t, name: (t > 0).float().mean(-1), unembed=False
)
real = torch.tensor([[0 < pos < n for pos in range(tokens.shape[1])] for n in lengths])  # [batch, pos]: not BOS, not padding
actual = [float(active[f"blocks.{l}.mlp.hook_pre"][real].mean()) for l in range(L)]
figures.norms_by_layer(
    {"MLP(x), x random normalised": w["mlp_random_norm"], "actual mlp_out": mean["mlp_out"]}, "bundled: MLP output", "mean norm"
)
plt.show()
print("fraction active, real run:   ", np.round(actual, 3))
print("fraction active, random x:   ", np.round(w["active_random"], 3))

# %% [markdown]
# ## 9. Appendix 1: growth is bounded by what the sublayers add
#
# Each block adds two vectors: `x_post = x_pre + attn_out + mlp_out`. By the triangle inequality,
# `‖x_post‖ ≤ ‖x_pre‖ + ‖attn_out‖ + ‖mlp_out‖`; dividing by `‖x_pre‖`,
#
#     g − 1 = ‖x_post‖ / ‖x_pre‖ − 1  ≤  (‖attn_out‖ + ‖mlp_out‖) / ‖x_pre‖.
#
# So a block can multiply a vector's norm by `g` only if its sublayers write at least `(g − 1)` times
# the vector's norm. This must hold for every single vector; a violation would mean the measurements
# are wrong.


# %% [exercise]
def appendix1(pre, attn_out, mlp_out, post):
    """Norms [n] of n vectors at one layer: resid_pre, attn_out, mlp_out, resid_post → (g − 1, bound), each [n]."""
    # BEGIN SOLUTION
    return post / pre - 1, (attn_out + mlp_out) / pre
    # END SOLUTION


# %%
check.appendix1(appendix1)


def vectors(stream, layer):
    """Every non-BOS vector's norm at one layer, all prompts together: [n]."""
    return np.concatenate([n[layer, 1:] for n in norms[stream]])


print("layer   mean ‖x_pre‖   mean g − 1   mean bound   violations")
for layer in range(L):
    growth, bound = appendix1(*(vectors(s, layer) for s in ("resid_pre", "attn_out", "mlp_out", "resid_post")))
    violations = int((growth > bound * (1 + 1e-5)).sum())  # 1e-5: float32 rounding of norms near equality
    print(
        f"{layer:5d}   {vectors('resid_pre', layer).mean():12.2f}   {growth.mean():10.3f}   "
        f"{bound.mean():10.3f}   {violations:10d}"
    )

# %% [markdown]
# Layer 0 stands out: its `x_pre` is only the embedding `W_E[token] + W_pos[p]`, whose norm is small
# beside what block 0 writes, so one block multiplies it many times over (the mean g − 1 above). From
# layer 1 on, `x_pre` already holds what earlier blocks wrote, and g − 1 is a fraction.
#
# ## What you found
#
# Write your answers in the cell below (double-click it), beside the post's numbers.

# %% [markdown]
# | question | GPT-2-XL (the post) | bundled (10 layers, the end) | 6 layers, step 4 |
# |---|---|---|---|
# | rate per layer, end points and least squares | ×1.045 | | |
# | R², and do the halves agree? | steady | | |
# | BOS against ordinary positions | far larger | | |
# | padding against ordinary positions | | | |
# | do attn_out and mlp_out grow with the residual? | yes | | |
# | does ‖W_OV‖_F grow with depth? | yes | | |
# | violations of Appendix 1's bound | none | | |
#
# The full study on any model, with all its figures, is one command:
# `python -m analysis.growth --model bundled`.
