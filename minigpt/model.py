"""GPT-2's forward pass, written out so that every tensor can be printed and named.

    tokens ──► embed + pos_embed ──► blocks: x += attn(ln1(x)); x += mlp(ln2(x)) ──► ln_final ──► unembed

Shapes are named batch, pos, d_model, n_heads, d_head, d_mlp, d_vocab. Parameters use the
interpretability names (W_E, W_Q, W_O, W_in, ...) with one matrix per attention head, so that
W_OV = W_V @ W_O is a one-liner, and each executed line is the algebra itself: einsum with the axes named.
Every intermediate tensor passes through a `HookPoint`, an identity module whose module path
(e.g. "blocks.3.attn.hook_pattern") is its name; `instrument` attaches to them.

The other families (gpt_neo.py, opt.py, gpt_neox.py, llama.py and the files built on it) subclass these pieces
and override only what differs: Attention's `rotate`, `scores`, `hidden` and `mix`, GPT2's `block` (which builds
each layer's Block, with the MLP's `activation` given there) and `embed` (and GPT-NeoX's rotation its
`frequencies`). Where a family's difference is the block's or the MLP's wiring itself (Pythia's parallel block,
the norms after OLMo 2's and Gemma's sublayers, Llama's gated MLP), its forward is that difference, written out;
Gemma's model calls GPT2's forward and then caps the logits. In a family with grouped-query attention (llama.py)
k and v are [batch, pos, n_kv_heads, d_head].
"""

import math

import torch
from torch import nn

from .config import Config


class HookPoint(nn.Module):
    """Does nothing: a named place in the forward pass where `instrument` may read or replace a tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def gelu_new(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's GELU, the tanh approximation of x·Φ(x).

    OpenAI's model.py uses this form (Hugging Face calls it "gelu_new" and computes it as written here); the
    exact erf GELU that nanoGPT uses shifts logits by ~1e-3.
    """
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


class LayerNorm(nn.Module):
    """Centre, scale to unit variance, then apply the gain `w` and bias `b`.

    Statistics are taken in float32 whatever the model's dtype: GPT-2-XL's residual at the first
    position reaches norms in the thousands, whose squares overflow float16.
    After `weights.fold_layer_norm`, `w` and `b` are None: the next weights carry them. (TransformerLens
    swaps in a second class, LayerNormPre, for that; here one class, so that a folded model keeps the
    module a student has read, and the rewrite only sets two attributes.)

    hook_normalized is the layer's output, after w and b, as in TransformerLens's HookedTransformer
    (components/layer_norm.py). TransformerLens 4's TransformerBridge hooks x / scale before w and b
    instead; on a processed model (w and b folded, so None) the two are the same tensor.
    """

    def __init__(self, cfg: Config):
        super().__init__()
        self.eps = cfg.ln_eps
        self.w = nn.Parameter(torch.ones(cfg.d_model))
        self.b = nn.Parameter(torch.zeros(cfg.d_model))
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()  # [batch, pos, d_model]
        centred = x32 - x32.mean(-1, keepdim=True)  # [batch, pos, d_model]
        scale = self.hook_scale((centred.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())  # [batch, pos, 1]: √(var + ε)
        out = (centred / scale).to(x.dtype)  # [batch, pos, d_model]: mean 0, variance var/(var + ε) ≈ 1
        if self.w is not None:  # None once folded into the weights that read this layer
            out = out * self.w + self.b  # [batch, pos, d_model]
        return self.hook_normalized(out)


class Attention(nn.Module):
    """Causal multi-head self-attention. Four small methods are what families change: `rotate` (positions
    applied to q and k), `scores` (q · k and its scale), `hidden` (the mask) and `mix` (the values weighted by the
    pattern); the forward pass is shared."""

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
        self.hook_attn_scores = HookPoint()  # -inf where the mask hides a key
        self.hook_pattern = HookPoint()  # each row sums to 1
        self.hook_z = HookPoint()  # the pattern-weighted values

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [batch, pos, d_model], LayerNorm's output
        q = self.hook_q(torch.einsum("bpd,hde->bphe", x, self.W_Q) + self.b_Q)  # [batch, pos, n_heads, d_head]
        k = self.hook_k(torch.einsum("bpd,hde->bphe", x, self.W_K) + self.b_K)  # [batch, pos, n_heads, d_head]
        v = self.hook_v(torch.einsum("bpd,hde->bphe", x, self.W_V) + self.b_V)  # [batch, pos, n_heads, d_head]
        q, k = self.rotate(q, k)  # [batch, pos, n_heads, d_head] each: positions applied (GPT-2: none)
        scores = self.scores(q, k)  # [batch, n_heads, query_pos, key_pos]
        hidden = self.hidden(x.shape[1], x.device)  # [query_pos, key_pos]: True where a key is masked
        scores = self.hook_attn_scores(scores.masked_fill(hidden, float("-inf")))  # softmax gives -inf weight 0
        # Softmax over keys in float32: each row sums to 1 within float32 rounding, then is rounded to the
        # model's dtype, after which a half-precision row sums to 1 only within that dtype's rounding
        # (measured at 16 to 1024 keys: 4e-4 in float16, 3e-3 in bfloat16).
        pattern = self.hook_pattern(scores.float().softmax(dim=-1).to(v.dtype))  # [batch, n_heads, query_pos, key_pos]
        z = self.hook_z(self.mix(pattern, v))  # [batch, pos, n_heads, d_head]
        return torch.einsum("bphe,hed->bpd", z, self.W_O) + self.b_O  # [batch, pos, d_model]: Σ_h z[h] @ W_O[h] + b_O

    def rotate(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions applied to q and k. GPT-2's are already in the residual stream (W_pos): nothing to do."""
        return q, k

    def scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """q · k for every pair of positions, divided by √d_head so that their variance does not grow with d_head."""
        return torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(q.shape[-1])  # [batch, n_heads, query_pos, key_pos]

    def hidden(self, n_pos: int, device) -> torch.Tensor:
        """[query_pos, key_pos], True where the query may not read the key: causal, so the keys after it."""
        return torch.ones(n_pos, n_pos, dtype=torch.bool, device=device).triu(diagonal=1)

    def mix(self, pattern: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """z: each query's values averaged with its row of the pattern as the weights, head by head."""
        return torch.einsum("bhqk,bkhe->bqhe", pattern, v)  # [batch, pos, n_heads, d_head]


class MLP(nn.Module):
    def __init__(self, cfg: Config, activation=gelu_new):
        super().__init__()
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model))
        self.activation = activation  # GPT-2's gelu_new; a family may give its own
        self.hook_pre = HookPoint()  # before the activation
        self.hook_post = HookPoint()  # after it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.hook_pre(x @ self.W_in + self.b_in)  # [batch, pos, d_mlp]
        post = self.hook_post(self.activation(pre))  # [batch, pos, d_mlp]
        return post @ self.W_out + self.b_out  # [batch, pos, d_model]


class Block(nn.Module):
    """One pre-LayerNorm transformer block: each sublayer reads a normalised copy and adds to the residual."""

    def __init__(self, cfg: Config, attn: Attention | None = None, mlp: MLP | None = None):
        super().__init__()
        self.hook_resid_pre = HookPoint()
        self.ln1 = LayerNorm(cfg)
        self.attn = attn or Attention(cfg)
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.ln2 = LayerNorm(cfg)
        self.mlp = mlp or MLP(cfg)
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
        self.blocks = nn.ModuleList(self.block(cfg, layer) for layer in range(cfg.n_layers))
        self.ln_final: LayerNorm | None = LayerNorm(cfg)  # None once `weights.drop_unembed` has removed it
        # GPT-2 ties the unembedding to the embedding: W_U is W_E transposed, and there is no b_U.
        # Folding ln_final into the unembedding must leave W_E alone, so the rewrites in `weights`
        # give the model its own W_U [d_model, d_vocab] and b_U [d_vocab]; until then both are None.
        self.W_U: nn.Parameter | None = None
        self.b_U: nn.Parameter | None = None
        # Where the model's weights came from (repository, revision, directory), set by weights.load.
        self.source: dict = {}

    def block(self, cfg: Config, layer: int) -> Block:
        """Block number `layer`, as this family builds it (GPT-2's: the Block above, the same at every layer)."""
        return Block(cfg)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """The residual stream's start: each token's row of W_E plus its position's row of W_pos."""
        embed = self.hook_embed(self.W_E[tokens])  # [batch, pos, d_model]: row tokens[b, p] of W_E
        pos_embed = self.hook_pos_embed(self.W_pos[: tokens.shape[1]].expand_as(embed))  # [batch, pos, d_model], a view
        return embed + pos_embed  # [batch, pos, d_model]

    def forward(self, tokens: torch.Tensor, *, unembed: bool = True) -> torch.Tensor:
        """Logits [batch, pos, d_vocab] for every position of tokens [batch, pos].

        With unembed=False, return the last block's residual stream [batch, pos, d_model] and skip
        ln_final and the 50257-wide unembedding (the residual-stream study never reads logits).
        """
        residual = self.embed(self.check_tokens(tokens))  # [batch, pos, d_model]
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
        if self.b_U is None:  # an unembedding of its own without a bias (GPT-NeoX's embed_out)
            return normalized @ self.W_U  # [batch, pos, d_vocab]
        return normalized @ self.W_U + self.b_U  # [batch, pos, d_vocab]

    def check_tokens(self, tokens) -> torch.Tensor:
        """Token ids as a [batch, pos] tensor on the model's device, or a clear error saying what is wrong."""
        expected = "integer ids shaped [batch, pos] or [pos] (a tensor, or a list of ints or of lists of ints)"
        if isinstance(tokens, str) or (isinstance(tokens, (list, tuple)) and any(isinstance(t, str) for t in tokens)):
            raise TypeError(f"tokens must be {expected}; found text: encode it first with tokenizer.to_tokens(text)")
        try:
            tokens = torch.as_tensor(tokens, device=self.W_E.device)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(f"tokens must be {expected}; found {type(tokens).__name__} ({error})") from None
        if tokens.ndim == 1:
            tokens = tokens[None]
        if tokens.ndim != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"tokens must be {expected}; found dtype {tokens.dtype} shape {tuple(tokens.shape)} "
                "(text is turned into ids by tokenizer.to_tokens)"
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
