# %% [markdown]
# # Lesson 2: rewriting the weights without changing a prediction
#
# Interpretability work (TransformerLens, and the residual-stream study of lesson 3) does not read
# GPT-2's weights as released. It applies four rewrites that change what the residual stream *looks
# like* while leaving what the model *predicts* exactly as it was:
#
# 1. **fold LayerNorm**: move each LayerNorm's gain and bias into the weights that read its output;
# 2. **centre the writing weights**: make every vector written into the residual stream mean-free;
# 3. **centre the unembedding**: remove each unembedding row's mean over the vocabulary;
# 4. **fold the value biases**: move `b_V` into the output bias `b_O`.
#
# For each you will write the rewrite as a small function on tensors, apply it to the whole bundled
# model, and check the invariant: the logits (or the log-probabilities) before and after. minigpt's
# versions, with the identity each relies on in its docstring, are in `weights/rewrites.py`.

# %%
import copy

import matplotlib.pyplot as plt
import torch

import instrument
import weights
from lessons import check

torch.set_grad_enabled(False)
original, tokenizer = weights.load("bundled", process=False)
tokens = torch.tensor([[tokenizer.eot, *tokenizer.encode("Rewrites change the stream, not the predictions.")]])
logits_before = original(tokens)


def largest_change(model, log_probs=False):
    """How far the rewritten model's output is from the original's (logits, or log-probabilities)."""
    after, before = model(tokens), logits_before
    if log_probs:
        after, before = after.log_softmax(-1), before.log_softmax(-1)
    return float((after - before).abs().max())


# %% [markdown]
# ## 1. Folding LayerNorm into the next weights
#
# A LayerNorm's output is `x̂ · w + b`, with `x̂` the centred, normalised input. A reader with weights
# `W [d_model, d_out]` and bias `c` computes
#
#     (x̂ · w + b) @ W + c  =  x̂ @ (w[:, None] · W)  +  (b @ W + c)
#
# so the gain can move into `W`'s rows and the bias into `c`. Then, because `x̂` has zero mean
# (`x̂ · 1 = 0`), adding any constant to a column of `W` changes nothing: TransformerLens removes
# each column's mean over `d_model` too ("centring the reading weights"). After folding, LayerNorm
# only centres and normalises.


# %% [exercise]
def fold_layer_norm_into(w, b, W, bias):
    """w, b [d_model]: a LayerNorm's gain and bias. W [d_model, d_out], bias [d_out]: the reader. → (W', bias')."""
    # BEGIN SOLUTION: W' = w[:, None] * W, minus its mean over d_model (dim 0); bias' = b @ W + bias (the original W)
    folded = w[:, None] * W
    return folded - folded.mean(0, keepdim=True), b @ W + bias
    # END SOLUTION


# %%
check.fold_layer_norm_into(fold_layer_norm_into)

# %% [markdown]
# Now fold every LayerNorm of the bundled model with your function: ln1 into W_Q, W_K and W_V (one
# head at a time), ln2 into W_in, and ln_final into the unembedding, which gets its own `W_U` (until
# now it was `W_E` transposed) and a bias `b_U`. Then LayerNorm keeps only its centring and scaling.

# %%
folded = copy.deepcopy(original)
for block in folded.blocks:
    for name in "QKV":
        W, b = getattr(block.attn, f"W_{name}"), getattr(block.attn, f"b_{name}")  # [n_heads, d_model, d_head], [n_heads, d_head]
        for head in range(W.shape[0]):
            W[head], b[head] = fold_layer_norm_into(block.ln1.w, block.ln1.b, W[head], b[head])
    block.mlp.W_in.data, block.mlp.b_in.data = fold_layer_norm_into(block.ln2.w, block.ln2.b, block.mlp.W_in, block.mlp.b_in)
    block.ln1.w = block.ln1.b = block.ln2.w = block.ln2.b = None
W_U, b_U = fold_layer_norm_into(folded.ln_final.w, folded.ln_final.b, folded.W_E.T, torch.zeros(folded.cfg.d_vocab))
folded.W_U, folded.b_U = torch.nn.Parameter(W_U), torch.nn.Parameter(b_U)
folded.ln_final.w = folded.ln_final.b = None
print(f"largest change in the logits: {largest_change(folded):.2e}")

# %% [markdown]
# ## 2. Centring the writing weights
#
# Every reader of the residual stream is a LayerNorm, and LayerNorm starts by subtracting the mean. So
# whatever mean a written vector has is thrown away by every reader, and we may remove it at the
# source: from `W_E` and `W_pos` (rows), and from `W_O`, `b_O`, `W_out`, `b_out` (their `d_model`
# axis, the last). Afterwards every residual vector has zero mean, so its norm is its standard
# deviation times √d_model: the quantity lesson 3 follows through the layers.


# %% [exercise]
def center_writing(W):
    """W [..., d_model], a weight that writes into the residual stream → W minus its mean over d_model."""
    # BEGIN SOLUTION: subtract W.mean(-1, keepdim=True)
    return W - W.mean(-1, keepdim=True)
    # END SOLUTION


# %%
check.center_writing(center_writing)


# %%
def residual_means(model):
    """|mean over d_model| of resid_post at every layer, averaged over positions."""
    _, cache = instrument.run_with_cache(model, tokens, names=lambda n: n.endswith("hook_resid_post"))
    return [float(cache[f"blocks.{l}.hook_resid_post"].mean(-1).abs().mean()) for l in range(model.cfg.n_layers)]


centred = copy.deepcopy(folded)
for name, param in centred.named_parameters():
    if name in ("W_E", "W_pos") or name.endswith(("attn.W_O", "attn.b_O", "mlp.W_out", "mlp.b_out")):
        param.data = center_writing(param)
print(f"largest change in the logits: {largest_change(centred):.2e}")

fig, ax = plt.subplots(figsize=(7, 3.5), layout="constrained")
ax.semilogy(residual_means(folded), "o-", label="before centring")
ax.semilogy([max(m, 1e-12) for m in residual_means(centred)], "s-", label="after centring (float32 rounding)")
ax.set(
    title="The residual stream's mean goes to zero", xlabel="layer (resid_post)", ylabel="mean |mean over d_model| (log scale)"
)
ax.legend()
plt.show()

# %% [markdown]
# ## 3. Centring the unembedding
#
# The softmax ignores a constant added to every logit of a position. Subtracting from `W_U` each row's
# mean over the vocabulary (and from `b_U` its mean) shifts all of a position's logits by the same
# amount. So the logits change, but the log-probabilities do not.


# %% [exercise]
def center_unembed(W_U, b_U):
    """W_U [d_model, d_vocab], b_U [d_vocab] → both with their mean over the vocabulary removed."""
    # BEGIN SOLUTION: W_U - W_U.mean(-1, keepdim=True), b_U - b_U.mean()
    return W_U - W_U.mean(-1, keepdim=True), b_U - b_U.mean()
    # END SOLUTION


# %%
check.center_unembed(center_unembed)
unembedded = copy.deepcopy(centred)
W_U, b_U = center_unembed(unembedded.W_U, unembedded.b_U)
unembedded.W_U.data, unembedded.b_U.data = W_U, b_U
print(f"largest change in the logits: {largest_change(unembedded):.2e} (they shift by a constant per position)")
print(f"largest change in the log-probabilities: {largest_change(unembedded, log_probs=True):.2e}")

# %% [markdown]
# ## 4. Folding the value biases
#
# A head's output at query `q` is `Σ_k pattern[q, k] · (v_k + b_V)`, and each row of the pattern sums
# to 1, so `b_V` arrives unchanged: `z_q = Σ_k pattern[q, k] · v_k + b_V`. Through `W_O` it becomes
# the constant `b_V[h] @ W_O[h]`, which can join `b_O`; then `b_V` is zero.


# %% [exercise]
def fold_value_bias(b_V, W_O, b_O):
    """b_V [n_heads, d_head], W_O [n_heads, d_head, d_model], b_O [d_model] → (b_V', b_O')."""
    # BEGIN SOLUTION: b_O' = b_O + Σ_h b_V[h] @ W_O[h] (an einsum "he,hed->d"); b_V' = zeros
    return torch.zeros_like(b_V), b_O + torch.einsum("he,hed->d", b_V, W_O)
    # END SOLUTION


# %%
check.fold_value_bias(fold_value_bias)
processed = copy.deepcopy(unembedded)
for block in processed.blocks:
    block.attn.b_V.data, block.attn.b_O.data = fold_value_bias(block.attn.b_V, block.attn.W_O, block.attn.b_O)
print(f"largest change in the log-probabilities: {largest_change(processed, log_probs=True):.2e}")

# %% [markdown]
# ## 5. The same as minigpt's
#
# `weights.load("bundled")` (processed, the default) applies minigpt's four rewrites in this order.
# Your processed model should agree with it to float32 rounding.

# %%
reference, _ = weights.load("bundled")
print(
    f"largest difference in the log-probabilities from weights.load's: "
    f"{float((processed(tokens).log_softmax(-1) - reference(tokens).log_softmax(-1)).abs().max()):.2e}"
)
