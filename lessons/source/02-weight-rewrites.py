# %% [markdown]
# # Lesson 2: rewriting the weights without changing a prediction
#
# Interpretability work (TransformerLens, and the residual-stream study of lesson 3) does not read
# GPT-2's weights as released. It applies four rewrites that make the weights easier to read while
# leaving what the model *predicts* as it was:
#
# 1. **fold LayerNorm**: move each LayerNorm's gain and bias into the weights that read its output;
# 2. **centre the writing weights**: make every vector written into the residual stream mean-free;
# 3. **centre the unembedding**: remove each unembedding row's mean over the vocabulary;
# 4. **fold the value biases**: move `b_V` into the output bias `b_O`.
#
# Only the second changes the residual stream itself (it removes the stream's mean, which every
# LayerNorm throws away anyway); the others move numbers from one weight to another. For each you
# will write the rewrite as a small function on tensors, apply it to the whole bundled model, and
# assert its invariant: the logits (or the log-probabilities) before and after, within a stated
# tolerance. minigpt's versions, with the identity each relies on in its docstring, are in
# `weights/rewrites.py`; `check.hint("fold_layer_norm_into")` gives a nudge when you are stuck.

# %%
import copy

import matplotlib.pyplot as plt
import torch

import weights
from lessons import figures
from lessons.check import lesson2 as check

torch.set_grad_enabled(False)
original, tokenizer = weights.load("bundled", processed=False)
tokens = torch.tensor([[tokenizer.eot, *tokenizer.encode("Rewrites change the weights, not the predictions.")]])
logits_before = original(tokens)
print(f"the logits' largest magnitude: {float(logits_before.abs().max()):.1f}")


def largest_change(model, log_probs=False):
    """How far the rewritten model's output is from the original's (logits, or log-probabilities)."""
    after, before = model(tokens), logits_before
    if log_probs:
        after, before = after.log_softmax(-1), before.log_softmax(-1)
    return float((after - before).abs().max())


# %% [markdown]
# The invariants below hold exactly in real numbers; in float32 each is asserted to **1e-4**. Why
# that much: the logits here reach about 11 in magnitude, float32 keeps about 7 significant digits (a
# logit of 11 is rounded to ~1e-6), and a rewritten model sums its products in another order through
# 10 blocks: the changes measured below are about 1e-5, so 1e-4 leaves tenfold room. A real mistake
# moves the logits by 1e-2 or more (a fold that edits `W_E` in place: by about 7).

# %%
TOLERANCE = 1e-4

# %% [markdown]
# ## 1. Folding LayerNorm into the next weights
#
# A LayerNorm's output is `x̂ · w + b`, with `x̂` the centred, normalised input. A reader with weights
# `W [d_model, d_out]` and bias `bias [d_out]` computes
#
#     (x̂ · w + b) @ W + bias  =  x̂ @ (w[:, None] · W)  +  (b @ W + bias)
#
# so the gain can move into `W`'s rows and the bias into the reader's bias. After folding, LayerNorm
# only centres and normalises.


# %% [exercise]
def fold_layer_norm_into(w, b, W, bias):
    """w, b [d_model]: a LayerNorm's gain and bias. W [d_model, d_out], bias [d_out]: the reader. → (W', bias')."""
    # BEGIN SOLUTION
    return w[:, None] * W, b @ W + bias
    # END SOLUTION


# %%
check.fold_layer_norm_into(fold_layer_norm_into)

# %% [markdown]
# ## 2. Centring the reading weights
#
# Because `x̂` has zero mean (`x̂ · 1 = 0`), adding the same number to every entry of a column of `W`
# changes nothing the reader computes. So each column's mean over `d_model` can go: TransformerLens
# calls this centring the reading weights, and `weights.fold_layer_norm` does it after folding.


# %% [exercise]
def center_reading(W):
    """W [d_model, d_out], a weight that reads LayerNorm's output → W minus each column's mean over d_model."""
    # BEGIN SOLUTION
    return W - W.mean(0, keepdim=True)
    # END SOLUTION


# %%
check.center_reading(center_reading)


# %% [markdown]
# Now fold every LayerNorm of the bundled model with your two functions: ln1 into W_Q, W_K and W_V
# (one head at a time), ln2 into W_in, and ln_final into the unembedding, which gets its own `W_U`
# (until now it was `W_E` transposed: `folded.W_E.T` is a view of the embedding, so a fold that
# changed its input in place would change `W_E` too) and a bias `b_U`.


# %%
def fold(w, b, W, bias):
    folded_W, folded_bias = fold_layer_norm_into(w, b, W, bias)
    return center_reading(folded_W), folded_bias


folded = copy.deepcopy(original)
for block in folded.blocks:
    for name in "QKV":
        W, b = getattr(block.attn, f"W_{name}"), getattr(block.attn, f"b_{name}")  # [n_heads, d_model, d_head], [n_heads, d_head]
        for head in range(W.shape[0]):
            W[head], b[head] = fold(block.ln1.w, block.ln1.b, W[head], b[head])
    block.mlp.W_in.data, block.mlp.b_in.data = fold(block.ln2.w, block.ln2.b, block.mlp.W_in, block.mlp.b_in)
    block.ln1.w = block.ln1.b = block.ln2.w = block.ln2.b = None
W_U, b_U = fold(folded.ln_final.w, folded.ln_final.b, folded.W_E.T, torch.zeros(folded.cfg.d_vocab))
folded.W_U, folded.b_U = torch.nn.Parameter(W_U), torch.nn.Parameter(b_U)
folded.ln_final.w = folded.ln_final.b = None
change = largest_change(folded)
print(f"largest change in the logits: {change:.2e}")
assert change < TOLERANCE, f"folding changed the logits by {change:.2e}: more than float32 rounding ({TOLERANCE:.0e})"
assert torch.equal(folded.W_E, original.W_E), "W_E changed: did a fold edit folded.W_E.T in place?"

# %% [markdown]
# ## 3. Centring the writing weights
#
# Every reader of the residual stream is a LayerNorm, and LayerNorm starts by subtracting the mean. So
# whatever mean a written vector has is thrown away by every reader, and we may remove it at the
# source: from `W_E` and `W_pos` (rows), and from `W_O`, `b_O`, `W_out`, `b_out` (their `d_model`
# axis, the last). Afterwards every residual vector has zero mean, so its norm is its standard
# deviation times √d_model: the quantity lesson 3 follows through the layers.


# %% [exercise]
def center_writing(W):
    """W [..., d_model], a weight that writes into the residual stream → W minus its mean over d_model."""
    # BEGIN SOLUTION
    return W - W.mean(-1, keepdim=True)
    # END SOLUTION


# %%
check.center_writing(center_writing)


# %% [markdown]
# To see the residual's mean go, run the blocks one at a time, as your `forward` of lesson 1 did,
# and record the mean over `d_model` after each.


# %%
def residual_means(model):
    """|mean over d_model| of the residual after each block, averaged over positions: [n_layers]."""
    x = model.W_E[tokens] + model.W_pos[: tokens.shape[1]]
    means = []
    for block in model.blocks:
        x = block(x)
        means.append(float(x.mean(-1).abs().mean()))
    return means


centred = copy.deepcopy(folded)
for name, param in centred.named_parameters():
    if name in ("W_E", "W_pos") or name.endswith(("attn.W_O", "attn.b_O", "mlp.W_out", "mlp.b_out")):
        param.data = center_writing(param)
change = largest_change(centred)
print(f"largest change in the logits: {change:.2e}")
assert change < TOLERANCE, f"centring changed the logits by {change:.2e}: more than float32 rounding ({TOLERANCE:.0e})"
means = residual_means(centred)
print(f"largest |mean| of the residual after centring: {max(means):.1e}")
# Residual vectors have norms of 10 to 100 here; the float32 rounding of a mean of their 160 entries is ~1e-7.
assert max(means) < 1e-5, "the residual still has a mean: was every writing weight centred over its last axis?"
figures.residual_means(residual_means(folded), means)
plt.show()

# %% [markdown]
# ## 4. Centring the unembedding
#
# The softmax ignores a constant added to every logit of a position. Subtracting from `W_U` each row's
# mean over the vocabulary (and from `b_U` its mean) shifts all of a position's logits by the same
# amount. So the logits change, but the log-probabilities do not.


# %% [exercise]
def center_unembed(W_U, b_U):
    """W_U [d_model, d_vocab], b_U [d_vocab] → both with their mean over the vocabulary removed."""
    # BEGIN SOLUTION
    return W_U - W_U.mean(-1, keepdim=True), b_U - b_U.mean()
    # END SOLUTION


# %%
check.center_unembed(center_unembed)
unembedded = copy.deepcopy(centred)
W_U, b_U = center_unembed(unembedded.W_U, unembedded.b_U)
unembedded.W_U.data, unembedded.b_U.data = W_U, b_U
print(f"largest change in the logits: {largest_change(unembedded):.2e} (they shift by a constant per position)")
change = largest_change(unembedded, log_probs=True)
print(f"largest change in the log-probabilities: {change:.2e}")
assert change < TOLERANCE, f"the log-probabilities changed by {change:.2e}: more than float32 rounding ({TOLERANCE:.0e})"

# %% [markdown]
# ## 5. Folding the value biases
#
# A head's output at query `q` is `Σ_k pattern[q, k] · (v_k + b_V)`, and each row of the pattern sums
# to 1, so `b_V` arrives unchanged: `z_q = Σ_k pattern[q, k] · v_k + b_V`. Through `W_O` it becomes
# the constant `b_V[h] @ W_O[h]`, which can join `b_O`; then `b_V` is zero.


# %% [exercise]
def fold_value_bias(b_V, W_O, b_O):
    """b_V [n_heads, d_head], W_O [n_heads, d_head, d_model], b_O [d_model] → (b_V', b_O')."""
    # BEGIN SOLUTION
    return torch.zeros_like(b_V), b_O + torch.einsum("he,hed->d", b_V, W_O)
    # END SOLUTION


# %%
check.fold_value_bias(fold_value_bias)
processed = copy.deepcopy(unembedded)
for block in processed.blocks:
    block.attn.b_V.data, block.attn.b_O.data = fold_value_bias(block.attn.b_V, block.attn.W_O, block.attn.b_O)
change = largest_change(processed, log_probs=True)
print(f"largest change in the log-probabilities: {change:.2e}")
assert change < TOLERANCE, f"the log-probabilities changed by {change:.2e}: more than float32 rounding ({TOLERANCE:.0e})"

# %% [markdown]
# ## 6. The same as minigpt's
#
# `weights.load("bundled")` (processed, the default) applies minigpt's four rewrites in this order.
# Your processed model should agree with it to float32 rounding.

# %%
reference, _ = weights.load("bundled")
difference = float((processed(tokens).log_softmax(-1) - reference(tokens).log_softmax(-1)).abs().max())
print(f"largest difference in the log-probabilities from weights.load's: {difference:.2e}")
assert difference < TOLERANCE, f"your processed model differs from weights.load's by {difference:.2e}"
