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
    """x @ W + b over the last axis of x: [..., d_in] @ [d_in, d_out] + [d_out] → [..., d_out].

    The fast form of that algebra: the leading axes are flattened into one (a view), and addmm adds
    the bias inside the matrix product, so the output is written once instead of a product and then
    a second tensor for the sum.
    """
    rows = x.reshape(-1, x.shape[-1])  # [batch·pos, d_in]
    out = torch.addmm(b, rows, W)  # [batch·pos, d_out] = rows @ W + b
    return out.view(*x.shape[:-1], W.shape[-1])  # [..., d_out]


def per_head(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x @ W[h] + b[h] for every head h: einsum("bpd,hde->bphe", x, W) + b, i.e.
    [batch, pos, d_model] × [n_heads, d_model, d_head] → [batch, pos, n_heads, d_head].

    The fast form of that algebra: the heads' matrices side by side are one [d_model, n_heads·d_head]
    matrix, so all heads are one `linear`. weights.load keeps W in memory in exactly that order (as
    the checkpoint's c_attn has it), so for a loaded model the transpose and reshape below are views:
    nothing is copied. A freshly built GPT2(cfg), as in training, holds W head by head instead, and
    there reshape copies it into side-by-side order on every forward pass (d_model² numbers, small
    beside the product itself).
    """
    n_heads, d_model, d_head = W.shape
    W_side_by_side = W.transpose(0, 1).reshape(d_model, n_heads * d_head)  # [d_model, n_heads·d_head]
    out = linear(x, W_side_by_side, b.reshape(-1))  # [batch, pos, n_heads·d_head]
    return out.view(*x.shape[:-1], n_heads, d_head)  # [batch, pos, n_heads, d_head]


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
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()  # the layer's output, as in TransformerLens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()  # [batch, pos, d_model]
        centred = x32 - x32.mean(-1, keepdim=True)  # [batch, pos, d_model]
        scale = (centred.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()  # [batch, pos, 1]: √(variance + ε)
        scale = self.hook_scale(scale)
        out = (centred / scale).to(x.dtype)  # [batch, pos, d_model]: mean 0, variance 1
        if self.w is not None:
            out = out * self.w + self.b  # [batch, pos, d_model]
        return self.hook_normalized(out)


class Attention(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        n_heads, d_model, d_head = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_Q = nn.Parameter(torch.empty(n_heads, d_model, d_head))
        self.W_K = nn.Parameter(torch.empty(n_heads, d_model, d_head))
        self.W_V = nn.Parameter(torch.empty(n_heads, d_model, d_head))
        self.W_O = nn.Parameter(torch.empty(n_heads, d_head, d_model))
        self.b_Q = nn.Parameter(torch.zeros(n_heads, d_head))
        self.b_K = nn.Parameter(torch.zeros(n_heads, d_head))
        self.b_V = nn.Parameter(torch.zeros(n_heads, d_head))
        self.b_O = nn.Parameter(torch.zeros(d_model))
        self.hook_q = HookPoint()
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        self.hook_attn_scores = HookPoint()  # -inf above the diagonal
        self.hook_pattern = HookPoint()  # each row sums to 1
        self.hook_z = HookPoint()  # the pattern-weighted values

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [batch, pos, d_model], LayerNorm's output
        q = self.hook_q(per_head(x, self.W_Q, self.b_Q))  # [batch, pos, n_heads, d_head] = einsum("bpd,hde->bphe", x, W_Q) + b_Q
        k = self.hook_k(per_head(x, self.W_K, self.b_K))  # [batch, pos, n_heads, d_head] = einsum("bpd,hde->bphe", x, W_K) + b_K
        v = self.hook_v(per_head(x, self.W_V, self.b_V))  # [batch, pos, n_heads, d_head] = einsum("bpd,hde->bphe", x, W_V) + b_V

        d_head, n_pos = q.shape[-1], x.shape[1]
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k)  # [batch, n_heads, query_pos, key_pos]: q · k for every pair
        # Causal mask: a query may read keys at its own position and before, never after.
        future = torch.ones(n_pos, n_pos, dtype=torch.bool, device=x.device).triu(diagonal=1)  # [query_pos, key_pos]
        # Scaled and masked in place: the tensor is new and no hook has seen it yet, and a
        # [batch, n_heads, pos, pos] tensor grows with the square of the prompt, so this saves two copies.
        scores.div_(math.sqrt(d_head))  # so that the scores' variance does not grow with d_head
        scores.masked_fill_(future, float("-inf"))  # softmax gives -inf a weight of exactly 0
        scores = self.hook_attn_scores(scores)
        # Softmax over keys in float32: each row sums to 1 within float32 rounding, then is rounded to the
        # model's dtype, after which a half-precision row sums to 1 only within that dtype's rounding
        # (measured at 16 to 1024 keys: 4e-4 in float16, 3e-3 in bfloat16).
        pattern = scores.float().softmax(dim=-1).to(v.dtype)  # [batch, n_heads, query_pos, key_pos], rows sum to 1
        pattern = self.hook_pattern(pattern)

        z = self.hook_z(torch.einsum("bhqk,bkhe->bqhe", pattern, v))  # [batch, pos, n_heads, d_head]
        # Σ_h z[h] @ W_O[h] + b_O = einsum("bphe,hed->bpd", z, W_O) + b_O, as one product: the heads' z side by
        # side [batch, pos, n_heads·d_head] times W_O stacked [n_heads·d_head, d_model]. W_O stacked is a
        # view; z side by side is a copy, since einsum leaves z in memory head by head.
        return linear(z.flatten(-2), self.W_O.flatten(0, 1), self.b_O)  # [batch, pos, d_model]


class MLP(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model))
        self.hook_pre = HookPoint()  # before the GELU
        self.hook_post = HookPoint()  # after it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.hook_pre(linear(x, self.W_in, self.b_in))  # [batch, pos, d_mlp] = x @ W_in + b_in
        post = self.hook_post(gelu_new(pre))  # [batch, pos, d_mlp]
        return linear(post, self.W_out, self.b_out)  # [batch, pos, d_model] = post @ W_out + b_out


class Block(nn.Module):
    """One pre-LayerNorm transformer block: each sublayer reads a normalised copy and adds to the residual."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.hook_resid_pre = HookPoint()
        self.ln1 = LayerNorm(cfg)
        self.attn = Attention(cfg)
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.ln2 = LayerNorm(cfg)
        self.mlp = MLP(cfg)
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, resid_pre: torch.Tensor) -> torch.Tensor:
        resid_pre = self.hook_resid_pre(resid_pre)  # [batch, pos, d_model]
        attn_out = self.hook_attn_out(self.attn(self.ln1(resid_pre)))  # [batch, pos, d_model]
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)  # [batch, pos, d_model]
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(resid_mid)))  # [batch, pos, d_model]
        return self.hook_resid_post(resid_mid + mlp_out)  # [batch, pos, d_model]


class GPT2(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model))
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model))
        self.hook_embed = HookPoint()
        self.hook_pos_embed = HookPoint()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_final: LayerNorm | None = LayerNorm(cfg)  # None once `weights.drop_unembed` has removed it
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
        positions = torch.arange(n_pos, device=tokens.device)  # [pos]
        embed = self.hook_embed(self.W_E[tokens])  # [batch, pos, d_model]: row tokens[b, p] of W_E
        # Every prompt of the batch gets the same position embeddings: expand is a view, nothing is copied.
        pos_embed = self.hook_pos_embed(self.W_pos[positions].expand(batch, n_pos, self.cfg.d_model))  # [batch, pos, d_model]
        residual = embed + pos_embed  # [batch, pos, d_model]
        for block in self.blocks:
            residual = block(residual)  # [batch, pos, d_model]
        if not unembed:
            return residual
        if self.ln_final is None:
            raise ValueError(
                "this model has no unembedding (loaded with unembed=False, for the residual stream only): "
                "call it with unembed=False, or load it again with unembed=True for logits"
            )
        normalized = self.ln_final(residual)  # [batch, pos, d_model]
        if self.W_U is None:  # tied, as released
            return normalized @ self.W_E.T  # [batch, pos, d_vocab]
        return linear(normalized, self.W_U, self.b_U)  # [batch, pos, d_vocab] = normalized @ W_U + b_U

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
