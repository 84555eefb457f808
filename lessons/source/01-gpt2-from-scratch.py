# %% [markdown]
# # Lesson 1: GPT-2 from scratch
#
# You will write GPT-2's forward pass one piece at a time: embeddings, LayerNorm, causal attention,
# the GELU MLP, and then the whole model. After each piece a checker runs your function against
# minigpt's own code (which the project's tests check against Hugging Face's GPT-2, to 1e-4) and, if
# it is wrong, tells you what the mistake looks like. At the end, the weights of minigpt's small
# bundled GPT-2 run through *your* code, and it writes text.
#
# Everything runs offline on a laptop CPU; the computations take seconds. Stuck on an exercise?
# `check.hint("embed")` prints a nudge, and the next one each time you ask. The answers are in
# `lessons/solutions/` (and in `minigpt/model.py`): open them after your check passes, to compare.
#
# Shapes are named as in the code: `batch, pos, d_model, n_heads, d_head, d_mlp, d_vocab`.

# %%
import math

import matplotlib.pyplot as plt
import torch

import instrument
import weights
from lessons import figures
from lessons.check import lesson1 as check
from minigpt import generate

torch.set_grad_enabled(False)
model, tokenizer = weights.load("bundled", processed=False)  # the official layout's weights, unrewritten
cfg = model.cfg
print(cfg)

# %% [markdown]
# ## 1. Embeddings
#
# A token id selects a row of the embedding matrix `W_E [d_vocab, d_model]`. Attention on its own
# treats its inputs as a set; GPT-2 learns where each token is from a second table,
# `W_pos [n_ctx, d_model]`, in which position `p` adds row `p` (the causal mask of section 3 carries
# some order too: position `p` can count the `p + 1` positions it sees). The residual stream starts
# as the sum of the two embeddings.


# %% [exercise]
def embed(tokens, W_E, W_pos):
    """tokens [batch, pos] → the residual stream before block 0, [batch, pos, d_model]."""
    # BEGIN SOLUTION
    n_pos = tokens.shape[1]
    return W_E[tokens] + W_pos[:n_pos]  # [batch, pos, d_model] + [pos, d_model], broadcast over batch
    # END SOLUTION


# %%
check.embed(embed)

# %% [markdown]
# ## 2. LayerNorm
#
# Every sublayer reads a normalised copy of the residual stream: subtract each vector's mean over
# `d_model`, divide by its standard deviation (with a small ε inside the square root), then apply a
# learned gain `w` and bias `b`. The variance is the plain mean of squares, divided by N, not N − 1.


# %% [exercise]
def layer_norm(x, w, b, eps=1e-5):
    """x [..., d_model] → normalised over the last axis, then x̂ · w + b."""
    # BEGIN SOLUTION
    centred = x - x.mean(-1, keepdim=True)
    scale = (centred.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    return centred / scale * w + b
    # END SOLUTION


# %%
check.layer_norm(layer_norm)

# %% [markdown]
# ## 3. einsum: products with named axes
#
# From here on, tensors have four axes, and `torch.einsum` says which axes meet. Each input gets one
# letter per axis; a letter in both inputs but not in the output is summed over; the output keeps
# the letters after `->`, in that order:
#
#     torch.einsum("ij,jk->ik", A, B)        # A @ B: j is summed
#     torch.einsum("id,jd->ij", X, Y)        # every row of X dotted with every row of Y: X @ Y.T
#     torch.einsum("nd,hde->nhe", x, W)      # x [n, d] through each of h matrices W[h] [d, e] at once
#
# Letters are only names: pick ones that remind you of the axes (b for batch, p for position, h for
# head…).

# %%
A, B = torch.randn(3, 4), torch.randn(4, 5)
print(torch.allclose(torch.einsum("ij,jk->ik", A, B), A @ B))
x, W = torch.randn(6, 4), torch.randn(2, 4, 3)  # 6 vectors of size 4; 2 matrices [4, 3]
out = torch.einsum("nd,hde->nhe", x, W)  # [6, 2, 3]: out[n, h] = x[n] @ W[h]
print(out.shape, torch.allclose(out[:, 1], x @ W[1]))

# %% [markdown]
# ## 4. The attention pattern
#
# Each head compares every query with every key: `scores[b, h, q, k] = q_q · k_k / √d_head`. The
# division keeps the scores' spread from growing with `d_head`. GPT-2 predicts the next token, so
# position `q` may only look at positions `k ≤ q`: the scores above the diagonal are set to −∞ before
# the softmax, which gives them weight exactly 0. The softmax runs over the keys, so each query's
# weights sum to 1.


# %% [exercise]
def attention_pattern(q, k):
    """q, k [batch, pos, n_heads, d_head] → pattern [batch, n_heads, query_pos, key_pos]."""
    # BEGIN SOLUTION
    scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(q.shape[-1])
    n_pos = q.shape[1]
    future = torch.ones(n_pos, n_pos, dtype=torch.bool).triu(diagonal=1)
    return scores.masked_fill(future, float("-inf")).softmax(dim=-1)
    # END SOLUTION


# %%
check.attention_pattern(attention_pattern)

# %% [markdown]
# The pattern is a tensor you can look at. minigpt names every tensor of its forward pass, and
# `instrument.run_with_cache` keeps the ones you ask for by name (lesson 4 is about this). Here are
# block 0's queries and keys on a short sentence, put through your `attention_pattern`: each row is
# a query, each column a key; nothing lies above the diagonal.

# %%
tokens = torch.tensor([[tokenizer.eot, *tokenizer.encode("The cat sat on the mat because it was warm.")]])
_, cache = instrument.run_with_cache(model, tokens, names=["blocks.0.attn.hook_q", "blocks.0.attn.hook_k"])
pattern = attention_pattern(cache["blocks.0.attn.hook_q"], cache["blocks.0.attn.hook_k"])[0]  # [n_heads, query_pos, key_pos]
figures.attention_patterns(pattern, [tokenizer.decode([t]) for t in tokens[0]])
plt.show()

# %% [markdown]
# ## 5. Attention
#
# With the pattern in hand, each head reads a weighted sum of the values `v = x @ W_V[h] + b_V[h]`,
# giving `z [batch, pos, n_heads, d_head]`; each head writes back through its own `W_O[h]`, and the
# heads' outputs add up, plus one bias `b_O`. The weights are per head:
#
# | weight | shape | bias | shape |
# |---|---|---|---|
# | `attn.W_Q`, `attn.W_K`, `attn.W_V` | `[n_heads, d_model, d_head]` | `attn.b_Q`, `attn.b_K`, `attn.b_V` | `[n_heads, d_head]` |
# | `attn.W_O` | `[n_heads, d_head, d_model]` | `attn.b_O` | `[d_model]` |
#
# Use your `attention_pattern`.


# %% [exercise]
def attention(x, attn):
    """x [batch, pos, d_model] (ln1's output); attn holds W_Q, b_Q, W_K, b_K, W_V, b_V, W_O, b_O."""
    # BEGIN SOLUTION
    q = torch.einsum("bpd,hde->bphe", x, attn.W_Q) + attn.b_Q
    k = torch.einsum("bpd,hde->bphe", x, attn.W_K) + attn.b_K
    v = torch.einsum("bpd,hde->bphe", x, attn.W_V) + attn.b_V
    z = torch.einsum("bhqk,bkhe->bqhe", attention_pattern(q, k), v)
    return torch.einsum("bphe,hed->bpd", z, attn.W_O) + attn.b_O
    # END SOLUTION


# %%
check.attention(attention)

# %% [markdown]
# ## 6. GELU
#
# GPT-2's MLP uses the GELU in OpenAI's tanh form,
# `0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³)))`. The "exact" GELU, `x · Φ(x)` with the normal
# distribution's CDF, is close but not equal: the two differ by up to 4.7e-4, near x = ±2.7.


# %% [exercise]
def gelu(x):
    """GPT-2's GELU (the tanh approximation), elementwise."""
    # BEGIN SOLUTION
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    # END SOLUTION


# %%
check.gelu(gelu)

# %% [markdown]
# ## 7. The MLP
#
# Each position on its own: up to `d_mlp = 4 · d_model` neurons, the GELU, and back down.


# %% [exercise]
def mlp(x, layer):
    """x [batch, pos, d_model] (ln2's output); layer holds W_in [d_model, d_mlp], b_in, W_out [d_mlp, d_model], b_out."""
    # BEGIN SOLUTION
    return gelu(x @ layer.W_in + layer.b_in) @ layer.W_out + layer.b_out
    # END SOLUTION


# %%
check.mlp(mlp)

# %% [markdown]
# ## 8. The whole forward pass
#
# GPT-2 is "pre-LayerNorm": each block normalises a copy of the residual stream, lets a sublayer read
# it, and *adds* the sublayer's output to the stream:
#
#     x = embed(tokens)
#     for each block:  x = x + attention(ln1(x));  x = x + mlp(ln2(x))
#     logits = ln_final(x) @ W_E.T           (the unembedding is the embedding, transposed)
#
# `model.blocks[i]` holds block i's weights: `.ln1.w`, `.ln1.b`, `.attn`, `.ln2.w`, `.ln2.b`, `.mlp`;
# the final LayerNorm is `model.ln_final.w`, `.b`.


# %% [exercise]
def forward(tokens, model):
    """tokens [batch, pos] → logits [batch, pos, d_vocab], using your functions above."""
    # BEGIN SOLUTION
    x = embed(tokens, model.W_E, model.W_pos)
    for block in model.blocks:
        x = x + attention(layer_norm(x, block.ln1.w, block.ln1.b), block.attn)
        x = x + mlp(layer_norm(x, block.ln2.w, block.ln2.b), block.mlp)
    return layer_norm(x, model.ln_final.w, model.ln_final.b) @ model.W_E.T
    # END SOLUTION


# %%
check.forward(forward)

# %% [markdown]
# ## 9. Your GPT-2 writes
#
# Your forward pass now computes the bundled model's logits. Greedy decoding appends the most likely
# next token and runs again; minigpt's `generate` does the same with its own forward pass, so the two
# continuations must agree token for token.

# %%
prompt = [tokenizer.eot, *tokenizer.encode("The function returns")]
ours = list(prompt)
for _ in range(20):
    logits = forward(torch.tensor([ours]), model)
    ours.append(int(logits[0, -1].argmax()))
print(repr(tokenizer.decode(ours[1:])))
assert ours == generate(model, prompt, 20), "your continuation differs from minigpt's"
print("same 20 tokens as minigpt.generate")

# %% [markdown]
# With `weights.load("gpt2", processed=False)` instead of `"bundled"` (where the hub or its cache can be
# reached) the same functions run the real GPT-2 small. Next: lesson 2 rewrites these weights without
# changing a single prediction.
