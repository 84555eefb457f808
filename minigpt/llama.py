"""Llama, Mistral, Qwen 2 and Qwen 3 (meta-llama/Llama-3.2-1B, TinyLlama, SmolLM2, mistralai/Mistral-7B-v0.1,
Qwen/Qwen2.5-0.5B, Qwen/Qwen3-0.6B …): GPT-2, except…

1. RMSNorm in place of LayerNorm: x / √(mean(x²) + ε) · w, with no centring and no bias (HF's LlamaRMSNorm,
   ε rms_norm_eps). No norm subtracts the mean, so centring the writing weights is no longer an identity
   (weights/rewrites.py): the residual keeps its mean, ‖x‖ includes it, and the study gives ‖x − mean(x)‖ too.
2. No learned position embedding: GPT-NeoX's rotary embedding (gpt_neox.py, difference 1) on the whole head,
   every pair of dimensions turned (HF's LlamaRotaryEmbedding, rope_theta). The pairs are (i, i + d_head/2), HF's
   rotate_half, where Meta's own code pairs (2i, 2i + 1): HF's conversion permuted the rows of q_proj and k_proj
   to match, so for files from the hub this pairing is the right one. Llama 3 stretches the slow pairs
   for long contexts (rope_type "llama3", HF's _compute_llama3_parameters); "linear" divides every frequency by
   its factor. `LlamaAttention.frequencies`.
3. Grouped-query attention: n_kv_heads key and value heads (num_key_value_heads), each read by n_heads / n_kv_heads
   query heads side by side (HF's repeat_kv: query head h reads key-value head h // group). W_K and W_V are
   [n_kv_heads, d_model, d_head], and hook_k, hook_v are per key-value head, as in TransformerLens.
4. A gated MLP, SwiGLU: post = silu(x @ W_gate) · (x @ W_in), out = post @ W_out (HF's LlamaMLP: down_proj(act(gate_proj(x))
   · up_proj(x))). hook_pre is the gate's pre-activation, hook_pre_linear x @ W_in, hook_post their product, as
   TransformerLens's GatedMLP names them. So W_in changes role: in GPT-2 it makes hook_pre; here W_gate does, and
   W_in makes the linear factor the gate multiplies.
5. No biases, except where config.json asks: attention_bias (q, k, v and o; read by Llama and Qwen 3, ignored by
   Mistral as HF's class ignores it; Qwen 2 always has q, k and v biases, never o's). The others are zeros, as
   GPT-Neo's q, k, v biases are, so that what reads GPT-2's biases reads these too (the norms have no b).
6. Qwen 3 normalises each head's query and key with an RMSNorm of its own (q_norm, k_norm, gains [d_head]) before
   the rotation (HF's Qwen3Attention).
7. A sliding window where config.json sets one (Mistral's sliding_window, HF's 4096 where the field is absent;
   Qwen's use_sliding_window and layer_types): on those layers a
   query reads only the `window_size` latest positions, itself included, as on GPT-Neo's local layers.
8. The scores are multiplied by d_head^−0.5, GPT-NeoX's order; d_head is config.json's head_dim, which need not be
   d_model / n_heads (Qwen3-0.6B: 16 heads of 128 read a d_model of 1024).
9. The unembedding W_U is lm_head, its own matrix, unless tie_word_embeddings (Llama-3.2-1B, Qwen3-0.6B: W_E
   transposed, as GPT-2's); no bias either way.

As in GPT-2: pre-norm blocks, attention then MLP writing to one residual stream, a final norm before the unembedding.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import Config, check_positive
from .gpt_neo import window_mask
from .gpt_neox import RotaryAttention, inverse_frequencies
from .model import GPT2, MLP, Block, HookPoint

ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True)
class LlamaConfig(Config):
    n_kv_heads: int = 4  # key and value heads; each serves n_heads / n_kv_heads query heads (difference 3)
    rope_base: float = 10000.0  # rope_theta: pair i turns by base^(−2i/d_head) per position
    rope_type: str = "default"  # "linear" or "llama3" stretch the rotation for long contexts (difference 2)
    rope_factor: float = 1.0  # how much slower pairs turn: every pair with linear, the slow ones with llama3
    rope_low_freq_factor: float = 1.0  # llama3: pairs with wavelengths past original_context / this turn `factor` slower
    rope_high_freq_factor: float = 4.0  # llama3: pairs with wavelengths under original_context / this are unchanged
    rope_original_context: int = 8192  # llama3: original_max_position_embeddings
    qk_norm: bool = False  # Qwen 3's RMSNorm on each head's q and k (difference 6)
    window_size: int | None = None  # the sliding window of `local_layers` (difference 7)
    local_layers: tuple[int, ...] = ()
    # Where the weights come from, not how they compute (weights/llama.py's key map reads them; difference 5, 9):
    qkv_bias: bool = False  # the files hold q, k and v biases (Qwen 2; attention_bias); otherwise b_Q, b_K, b_V are zeros
    o_bias: bool = False  # the files hold the output projection's bias (attention_bias in Llama, Qwen 3); otherwise b_O is zero
    tied: bool = False  # tie_word_embeddings: no lm_head of its own, W_U is None and the forward uses W_E.T

    def __post_init__(self):
        check_positive(self)  # not GPT-2's n_heads · d_head = d_model (difference 8)
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        if self.d_head % 2:
            raise ValueError(f"d_head must be even for the rotary embedding's pairs, found {self.d_head}")
        if self.rope_type not in ROPE_TYPES:
            raise ValueError(f"rope_type {self.rope_type!r} is not implemented; minigpt reads {', '.join(ROPE_TYPES)}")
        if self.local_layers and not self.window_size:
            raise ValueError("local_layers need a window_size")


class RMSNorm(nn.Module):
    """Scale to unit root mean square, then apply the gain w (difference 1): LayerNorm without its centring and bias.

    As LayerNorm, the statistic is taken in float32 whatever the model's dtype. `weights.process` folds the gain of
    a norm that reads the residual stream (ln1, ln2 before a sublayer, ln_final before W_U) into the weights that
    read its output, and sets its w to None; a norm whose gain no weight can take in keeps it (difference 6's, and
    those of olmo2.py and gemma.py).
    hook_scale is √(mean(x²) + ε), hook_normalized the output.
    `width` is d_model, or that of the q or k it normalises (Qwen 3: d_head; OLMo 2: n_heads·d_head).
    """

    def __init__(self, cfg: Config, width: int | None = None):
        super().__init__()
        self.eps = cfg.ln_eps
        self.w = nn.Parameter(torch.ones(width or cfg.d_model))
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()  # [..., width]
        scale = self.hook_scale((x32.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())  # [..., 1]
        out = (x32 / scale).to(x.dtype)  # [..., width]: root mean square ≈ 1, mean not 0
        if self.w is not None:  # None once folded into the weights that read this norm
            out = out * self.w
        return self.hook_normalized(out)


def llama3_frequencies(inv_freq: torch.Tensor, cfg: LlamaConfig) -> torch.Tensor:
    """Llama 3's long-context rotation: pairs whose wavelength (2π / frequency) is longer than original_context /
    low_freq_factor turn `factor` times slower, those shorter than original_context / high_freq_factor as before,
    and those between by a blend, linear in original_context / wavelength."""
    wavelength = 2 * math.pi / inv_freq  # [d_head / 2], in positions
    slow = inv_freq / cfg.rope_factor
    blend = (cfg.rope_original_context / wavelength - cfg.rope_low_freq_factor) / (
        cfg.rope_high_freq_factor - cfg.rope_low_freq_factor
    )  # 0 at the long end of the middle band, 1 at its short end
    middle = (1 - blend) * slow + blend * inv_freq
    long = wavelength > cfg.rope_original_context / cfg.rope_low_freq_factor
    short = wavelength < cfg.rope_original_context / cfg.rope_high_freq_factor
    return torch.where(long, slow, torch.where(short, inv_freq, middle))


class LlamaAttention(RotaryAttention):
    """GPT-NeoX's rotary attention on the whole head, with key-value heads shared by groups of query heads.

    GPT-2's W_K and W_V (one per query head) are replaced by one per key-value head (a checkpoint is read into a model
    on torch's "meta" device: shapes without memory). GPT-NeoX's `frequencies` reads its config's rotary_dims, which
    LlamaConfig has not: it is overridden below, on the whole head."""

    def __init__(self, cfg: LlamaConfig, local: bool = False):
        super().__init__(cfg)
        kv_heads, d_model, d_head = cfg.n_kv_heads, cfg.d_model, cfg.d_head
        self.W_K = nn.Parameter(torch.empty(kv_heads, d_model, d_head))  # difference 3: one per key-value head
        self.W_V = nn.Parameter(torch.empty(kv_heads, d_model, d_head))
        self.b_K = nn.Parameter(torch.zeros(kv_heads, d_head))
        self.b_V = nn.Parameter(torch.zeros(kv_heads, d_head))
        self.group = cfg.n_heads // kv_heads  # query heads per key-value head
        self.window = cfg.window_size if local else None  # None: every earlier position is read
        if cfg.qk_norm:
            self.q_norm, self.k_norm = RMSNorm(cfg, d_head), RMSNorm(cfg, d_head)

    def rotate(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Qwen 3 normalises each head's q and k first (difference 6); then GPT-NeoX's rotation, on every dimension."""
        if self.cfg.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        return super().rotate(q, k)

    def frequencies(self, device) -> torch.Tensor:
        """Difference 2: every pair turns, by rope_theta^(−2i/d_head) per position, stretched for long contexts."""
        cfg = self.cfg
        inv_freq = inverse_frequencies(cfg.d_head, cfg.rope_base, device)  # [d_head / 2]
        if cfg.rope_type == "linear":
            return inv_freq / cfg.rope_factor
        if cfg.rope_type == "llama3":
            return llama3_frequencies(inv_freq, cfg)
        return inv_freq

    def scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Each key head repeated for the query heads of its group (difference 3), then GPT-NeoX's d_head^−0.5."""
        return super().scores(q, k.repeat_interleave(self.group, dim=2))  # [batch, n_heads, query_pos, key_pos]

    def mix(self, pattern: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Each value head repeated for the query heads of its group (difference 3)."""
        return super().mix(pattern, v.repeat_interleave(self.group, dim=2))  # [batch, pos, n_heads, d_head]

    def hidden(self, n_pos: int, device) -> torch.Tensor:
        """Difference 7: on a sliding-window layer, GPT-Neo's window (gpt_neo.py); on the others, GPT-2's causal mask."""
        return window_mask(n_pos, self.window, device)


class GatedMLP(MLP):
    """Difference 4: two matrices read the input, one through the activation (the gate); their product is written
    out. b_in and b_out stay zeros (difference 5), kept so that what reads GPT-2's MLP biases reads these; the gate
    has no bias (HF's gate_proj has none, and no norm bias is ever folded into it: RMSNorm has none)."""

    def __init__(self, cfg: Config, activation=F.silu):
        super().__init__(cfg, activation=activation)
        self.W_gate = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))
        self.hook_pre_linear = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.hook_pre(x @ self.W_gate)  # [batch, pos, d_mlp]: the gate, before its activation
        pre_linear = self.hook_pre_linear(x @ self.W_in + self.b_in)  # [batch, pos, d_mlp]
        post = self.hook_post(self.activation(pre) * pre_linear)  # [batch, pos, d_mlp]
        return post @ self.W_out + self.b_out  # [batch, pos, d_model]


class Llama(GPT2):
    """GPT-2 with RMSNorm, rotary grouped-query attention and a SwiGLU MLP, and no W_pos."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__(cfg)
        del self.W_pos, self.hook_pos_embed  # positions are rotations of q and k (difference 2)
        self.W_pos = None  # None, not absent: the rewrites and measures ask `model.W_pos is not None`
        self.ln_final = RMSNorm(cfg)
        # W_U: lm_head, set by weights.load; None while tied to W_E (difference 9), as GPT-2's.

    def block(self, cfg: LlamaConfig, layer: int) -> Block:
        block = Block(cfg, attn=LlamaAttention(cfg, local=layer in cfg.local_layers), mlp=GatedMLP(cfg))
        block.ln1, block.ln2 = RMSNorm(cfg), RMSNorm(cfg)  # difference 1
        return block

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.hook_embed(self.W_E[tokens])  # [batch, pos, d_model]: no position embedding is added
