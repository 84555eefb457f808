"""GPT-2's forward pass, written out so that every tensor can be printed and named.

    tokens ──► embed + pos_embed ──► blocks: x += attn(ln1(x)); x += mlp(ln2(x)) ──► ln_final ──► unembed

Shapes are named batch, pos, d_model, n_heads, d_head, d_mlp, d_vocab. Parameters use the
interpretability names (W_E, W_Q, W_O, W_in, ...) with one matrix per attention head, so that
W_OV = W_V @ W_O is a one-liner. Every intermediate tensor passes through a `HookPoint`, an identity
module whose module path (e.g. "blocks.3.attn.hook_pattern") is its name; `instrument` attaches to them.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import Config


class HookPoint(nn.Module):
    """Does nothing: a named place in the forward pass where `instrument` may read or replace a tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def gelu_new(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's GELU, the tanh approximation 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).

    OpenAI's model.py uses this form (Hugging Face calls it "gelu_new"); the exact erf GELU that
    nanoGPT uses shifts logits by ~1e-3. torch's approximate="tanh" is the same formula in one kernel.
    """
    return F.gelu(x, approximate="tanh")


def linear(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x @ W + b over the last axis of x, with the bias added inside the matrix product (addmm):
    one output tensor written once, rather than a product and then a second tensor for the sum."""
    return torch.addmm(b, x.reshape(-1, x.shape[-1]), W).view(*x.shape[:-1], W.shape[-1])


def per_head(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x @ W[h] + b[h] for every head h: [batch, pos, d_model] → [batch, pos, n_heads, d_head].

    W [n_heads, d_model, d_head] read as the heads' matrices side by side, [d_model, n_heads·d_head],
    so all heads are one matrix product. (weights.load lays W out in memory in that order, as it is
    in the checkpoint's c_attn, so this reshape is a view and copies nothing.)
    """
    n_heads, d_model, d_head = W.shape
    out = linear(x, W.transpose(0, 1).reshape(d_model, n_heads * d_head), b.reshape(-1))
    return out.view(*x.shape[:-1], n_heads, d_head)


class LayerNorm(nn.Module):
    """Centre, scale to unit variance, then apply the gain `w` and bias `b`.

    Statistics are taken in float32 whatever the model's dtype: GPT-2-XL's residual at the first
    position reaches norms in the thousands, whose squares overflow float16.
    After `weights.fold_layer_norm`, `w` and `b` are None: the next weights carry them.
    """

    def __init__(self, cfg: Config):
        super().__init__()
        self.eps = cfg.ln_eps
        self.w = nn.Parameter(torch.ones(cfg.d_model))
        self.b = nn.Parameter(torch.zeros(cfg.d_model))
        self.hook_scale = HookPoint()  # [batch, pos, 1]
        self.hook_normalized = HookPoint()  # [batch, pos, d_model], the layer's output (as in TransformerLens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 - x32.mean(-1, keepdim=True)
        scale = self.hook_scale((x32.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        out = (x32 / scale).to(x.dtype)
        if self.w is not None:
            out = out * self.w + self.b
        return self.hook_normalized(out)


class Attention(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        h, d, e = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_Q = nn.Parameter(torch.empty(h, d, e))
        self.W_K = nn.Parameter(torch.empty(h, d, e))
        self.W_V = nn.Parameter(torch.empty(h, d, e))
        self.W_O = nn.Parameter(torch.empty(h, e, d))
        self.b_Q = nn.Parameter(torch.zeros(h, e))
        self.b_K = nn.Parameter(torch.zeros(h, e))
        self.b_V = nn.Parameter(torch.zeros(h, e))
        self.b_O = nn.Parameter(torch.zeros(d))
        self.hook_q = HookPoint()  # [batch, pos, n_heads, d_head]
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        self.hook_attn_scores = HookPoint()  # [batch, n_heads, query_pos, key_pos], -inf above the diagonal
        self.hook_pattern = HookPoint()  # the same after softmax: each row sums to 1
        self.hook_z = HookPoint()  # [batch, pos, n_heads, d_head], the pattern-weighted values

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.hook_q(per_head(x, self.W_Q, self.b_Q))
        k = self.hook_k(per_head(x, self.W_K, self.b_K))
        v = self.hook_v(per_head(x, self.W_V, self.b_V))

        n_pos = x.shape[1]
        # Causal mask: a query may read keys at its own position and before, never after.
        future = torch.ones(n_pos, n_pos, dtype=torch.bool, device=x.device).triu(diagonal=1)
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k)
        # Scaled by 1/√d_head and masked in place: the tensor is new and no hook has seen it yet,
        # and [batch, n_heads, pos, pos] is the largest activation, so this saves two copies of it.
        scores = self.hook_attn_scores(scores.div_(math.sqrt(q.shape[-1])).masked_fill_(future, float("-inf")))
        # Softmax in float32 so that half-precision models normalise their rows exactly.
        pattern = self.hook_pattern(scores.float().softmax(dim=-1).to(v.dtype))

        z = self.hook_z(torch.einsum("bhqk,bkhe->bqhe", pattern, v))
        # Σ_h z[h] @ W_O[h] + b_O: the heads' outputs side by side times W_O stacked, [n_heads·d_head, d_model].
        return linear(z.flatten(-2), self.W_O.flatten(0, 1), self.b_O)


class MLP(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model))
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp], before the GELU
        self.hook_post = HookPoint()  # [batch, pos, d_mlp], after it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.hook_pre(linear(x, self.W_in, self.b_in))
        post = self.hook_post(gelu_new(pre))
        return linear(post, self.W_out, self.b_out)


class Block(nn.Module):
    """One pre-LayerNorm transformer block: each sublayer reads a normalised copy and adds to the residual."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.hook_resid_pre = HookPoint()  # [batch, pos, d_model]
        self.ln1 = LayerNorm(cfg)
        self.attn = Attention(cfg)
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.ln2 = LayerNorm(cfg)
        self.mlp = MLP(cfg)
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, resid_pre: torch.Tensor) -> torch.Tensor:
        resid_pre = self.hook_resid_pre(resid_pre)
        attn_out = self.hook_attn_out(self.attn(self.ln1(resid_pre)))
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(resid_mid)))
        return self.hook_resid_post(resid_mid + mlp_out)


class GPT2(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model))
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model))
        self.hook_embed = HookPoint()  # [batch, pos, d_model]
        self.hook_pos_embed = HookPoint()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_final = LayerNorm(cfg)
        # GPT-2 ties the unembedding to the embedding: W_U is W_E transposed, and there is no b_U.
        # Folding ln_final into the unembedding must leave W_E alone, so the rewrites in `weights`
        # give the model its own W_U [d_model, d_vocab] and b_U [d_vocab]; until then both are None.
        self.W_U: nn.Parameter | None = None
        self.b_U: nn.Parameter | None = None
        # Where the model's weights came from (repository, revision, directory), set by weights.load.
        self.source: dict = {}

    def forward(self, tokens: torch.Tensor, *, unembed: bool = True) -> torch.Tensor:
        """Logits [batch, pos, d_vocab] for every position of tokens [batch, pos].

        With unembed=False, return the last block's residual stream [batch, pos, d_model] and skip
        ln_final and the 50257-wide unembedding (the residual-stream study never reads logits).
        """
        tokens = self.check_tokens(tokens)
        batch, n_pos = tokens.shape
        positions = torch.arange(n_pos, device=tokens.device)
        # Every prompt of the batch gets the same position embeddings: expand is a view, nothing is copied.
        pos_embed = self.W_pos[positions].expand(batch, n_pos, self.cfg.d_model)
        residual = self.hook_embed(self.W_E[tokens]) + self.hook_pos_embed(pos_embed)
        for block in self.blocks:
            residual = block(residual)
        if not unembed:
            return residual
        normalized = self.ln_final(residual)
        if self.W_U is None:  # tied, as released
            return normalized @ self.W_E.T
        return linear(normalized, self.W_U, self.b_U)  # [batch, pos, d_vocab], written once

    def check_tokens(self, tokens) -> torch.Tensor:
        """Token ids as a [batch, pos] tensor on the model's device, or a clear error saying what is wrong."""
        tokens = torch.as_tensor(tokens, device=self.W_E.device)
        if tokens.ndim == 1:
            tokens = tokens[None]
        if tokens.ndim != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"tokens must be integer ids shaped [batch, pos] or [pos], found dtype {tokens.dtype} shape {tuple(tokens.shape)}"
            )
        n_pos = tokens.shape[1]
        if n_pos == 0:
            raise ValueError("tokens are empty: give at least one token")
        if n_pos > self.cfg.n_ctx:
            raise ValueError(f"{n_pos} tokens is longer than the model's context of {self.cfg.n_ctx} tokens")
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= self.cfg.d_vocab:
            bad = low if low < 0 else high
            raise ValueError(f"token id {bad} is outside the vocabulary [0, {self.cfg.d_vocab})")
        return tokens.long()
