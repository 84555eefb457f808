# %% [markdown]
# # Lesson 1: GPT-2 from scratch
#
# You will write GPT-2's forward pass one piece at a time: embeddings, LayerNorm, causal attention,
# the GELU MLP, and then the whole model. After each piece a checker runs your function against
# minigpt's own code (which the project's tests prove equal to Hugging Face's GPT-2) and, if it is
# wrong, tells you what the mistake looks like. At the end, the weights of minigpt's small bundled
# GPT-2 run through *your* code, and it writes text.
#
# Everything runs offline on a laptop CPU in a minute or two. The reference for every exercise is
# `minigpt/model.py`: try first, then compare.
#
# Shapes are named as in the code: `batch, pos, d_model, n_heads, d_head, d_mlp, d_vocab`.

# %%
import math

import matplotlib.pyplot as plt
import torch

import weights
from lessons import check
from minigpt import generate

torch.set_grad_enabled(False)
model, tokenizer = weights.load("bundled", process=False)  # the official layout's weights, unrewritten
cfg = model.cfg
print(cfg)

# %% [markdown]
# ## 1. Embeddings
#
# A token id selects a row of the embedding matrix `W_E [d_vocab, d_model]`. GPT-2 has no notion of
# order apart from a second, learned table `W_pos [n_ctx, d_model]`: position `p` adds row `p`. The
# residual stream starts as the sum of the two.


# %% [exercise]
def embed(tokens, W_E, W_pos):
    """tokens [batch, pos] → the residual stream before block 0, [batch, pos, d_model]."""
    # BEGIN SOLUTION: look up W_E[tokens], then add W_pos[p] for each position p = 0, 1, …, pos − 1
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
    # BEGIN SOLUTION: centre x over the last axis, divide by √(mean of squares + eps), then · w + b
    centred = x - x.mean(-1, keepdim=True)
    scale = (centred.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    return centred / scale * w + b
    # END SOLUTION


# %%
check.layer_norm(layer_norm)

# %% [markdown]
# ## 3. The attention pattern
#
# Each head compares every query with every key: `scores[b, h, q, k] = q_q · k_k / √d_head`. The
# division keeps the scores' spread from growing with `d_head`. GPT-2 predicts the next token, so
# position `q` may only look at positions `k ≤ q`: the scores above the diagonal are set to −∞ before
# the softmax, which gives them weight exactly 0. The softmax runs over the keys, so each query's
# weights sum to 1.


# %% [exercise]
def attention_pattern(q, k):
    """q, k [batch, pos, n_heads, d_head] → pattern [batch, n_heads, query_pos, key_pos]."""
    # BEGIN SOLUTION: einsum the scores, divide by √d_head, mask the future with -inf, softmax over keys
    scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(q.shape[-1])
    n_pos = q.shape[1]
    future = torch.ones(n_pos, n_pos, dtype=torch.bool).triu(diagonal=1)
    return scores.masked_fill(future, float("-inf")).softmax(dim=-1)
    # END SOLUTION


# %%
check.attention_pattern(attention_pattern)

# %% [markdown]
# The pattern is a tensor you can look at. Here is every head of block 0 on a short sentence: each
# row is a query, each column a key; nothing lies above the diagonal.

# %%
tokens = torch.tensor([[tokenizer.eot, *tokenizer.encode("The cat sat on the mat because it was warm.")]])
x = layer_norm(embed(tokens, model.W_E, model.W_pos), model.blocks[0].ln1.w, model.blocks[0].ln1.b)
attn = model.blocks[0].attn
q = torch.einsum("bpd,hde->bphe", x, attn.W_Q) + attn.b_Q
k = torch.einsum("bpd,hde->bphe", x, attn.W_K) + attn.b_K
pattern = attention_pattern(q, k)[0]  # [n_heads, query_pos, key_pos]
labels = [tokenizer.decode([t]) for t in tokens[0]]
fig, axes = plt.subplots(1, cfg.n_heads, figsize=(3.6 * cfg.n_heads, 4.6), layout="compressed")
for head, ax in enumerate(axes):
    image = ax.imshow(pattern[head], cmap="Blues", vmin=0, vmax=1)
    ax.set_title(f"block 0, head {head}")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels if head == 0 else [], fontsize=7)
    ax.set_xlabel("key (read from)")
axes[0].set_ylabel("query (reading)")
fig.colorbar(image, ax=axes, shrink=0.8, label="attention weight")
fig.suptitle("Attention patterns of block 0: each row sums to 1, nothing above the diagonal")
plt.show()

# %% [markdown]
# ## 4. Attention
#
# With the pattern in hand, each head reads a weighted sum of the values `v = x @ W_V[h] + b_V[h]`,
# giving `z [batch, pos, n_heads, d_head]`; each head writes back through its own `W_O[h]`, and the
# heads' outputs add up, plus one bias `b_O`. The weights are per head: `attn.W_Q` is
# `[n_heads, d_model, d_head]`. Use your `attention_pattern`.


# %% [exercise]
def attention(x, attn):
    """x [batch, pos, d_model] (ln1's output); attn holds W_Q, b_Q, W_K, b_K, W_V, b_V, W_O, b_O."""
    # BEGIN SOLUTION: q, k, v by einsum with W_Q/W_K/W_V (+ biases); z = pattern · v; Σ_h z_h @ W_O[h] + b_O
    q = torch.einsum("bpd,hde->bphe", x, attn.W_Q) + attn.b_Q
    k = torch.einsum("bpd,hde->bphe", x, attn.W_K) + attn.b_K
    v = torch.einsum("bpd,hde->bphe", x, attn.W_V) + attn.b_V
    z = torch.einsum("bhqk,bkhe->bqhe", attention_pattern(q, k), v)
    return torch.einsum("bphe,hed->bpd", z, attn.W_O) + attn.b_O
    # END SOLUTION


# %%
check.attention(attention)

# %% [markdown]
# ## 5. GELU
#
# GPT-2's MLP uses the GELU in OpenAI's tanh form,
# `0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³)))`. The "exact" GELU, `x · Φ(x)` with the normal
# distribution's CDF, is close but not equal: using it changes GPT-2's logits by about 1e-3.


# %% [exercise]
def gelu(x):
    """GPT-2's GELU (the tanh approximation), elementwise."""
    # BEGIN SOLUTION: 0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³)))
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    # END SOLUTION


# %%
check.gelu(gelu)

# %% [markdown]
# ## 6. The MLP
#
# Each position on its own: up to `d_mlp = 4 · d_model` neurons, the GELU, and back down.


# %% [exercise]
def mlp(x, layer):
    """x [batch, pos, d_model] (ln2's output); layer holds W_in [d_model, d_mlp], b_in, W_out [d_mlp, d_model], b_out."""
    # BEGIN SOLUTION: gelu(x @ W_in + b_in) @ W_out + b_out
    return gelu(x @ layer.W_in + layer.b_in) @ layer.W_out + layer.b_out
    # END SOLUTION


# %%
check.mlp(mlp)

# %% [markdown]
# ## 7. The whole forward pass
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
    # BEGIN SOLUTION: embed; for each block add attention(ln1(x)) then mlp(ln2(x)); ln_final; @ W_E.T
    x = embed(tokens, model.W_E, model.W_pos)
    for block in model.blocks:
        x = x + attention(layer_norm(x, block.ln1.w, block.ln1.b), block.attn)
        x = x + mlp(layer_norm(x, block.ln2.w, block.ln2.b), block.mlp)
    return layer_norm(x, model.ln_final.w, model.ln_final.b) @ model.W_E.T
    # END SOLUTION


# %%
check.forward(forward)

# %% [markdown]
# ## 8. Your GPT-2 writes
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
# With `weights.load("gpt2", process=False)` instead of `"bundled"` (where the hub or its cache can be
# reached) the same functions run the real GPT-2 small. Next: lesson 2 rewrites these weights without
# changing a single prediction.
