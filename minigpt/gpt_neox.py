"""Pythia and GPT-NeoX (EleutherAI/pythia-70m … -12b and their -deduped twins): GPT-2, except…

1. No learned position embedding: rotary embeddings (RoPE) inside attention. After the projections, the
   first `rotary_dims` of each head's query and key dimensions (config.json's rotary_pct, 0.25 for Pythia,
   times d_head) are rotated by an angle proportional to the position: dimension i and i + rotary_dims/2
   form a pair, turned by position · base^(−2i/rotary_dims) (rotary_emb_base, 10000). The rest pass
   unchanged. q · k then depends on how far apart two positions are. Hugging Face's modeling_gpt_neox.py:
   GPTNeoXRotaryEmbedding, rotate_half, apply_rotary_pos_emb; here `RotaryAttention.rotate`. hook_q and
   hook_k are before the rotation, hook_rot_q and hook_rot_k after it, as in TransformerLens (HookedTransformer's
   attention, and the attention of TransformerLens 4's TransformerBridge for a rotary model, which has the same
   two hooks).
2. A parallel residual (use_parallel_residual, true for every Pythia): attention and MLP both read the
   LayerNorm of resid_pre, and resid_post = resid_pre + attn_out + mlp_out (GPTNeoXLayer.forward). So a
   block has no resid_mid: `ParallelBlock` below. With use_parallel_residual false the block is GPT-2's.
3. The unembedding is its own matrix (embed_out, tie_word_embeddings false), with no bias.
4. The MLP's GELU is the exact one, x·Φ(x) with the erf (hidden_act "gelu"), not GPT-2's tanh form. (gpt-neox-20b
   is therefore refused: its hidden_act is "gelu_fast", HF's name for a tanh form, which this file does not read.)
5. The scores are multiplied by d_head^−0.5 (HF's eager_attention_forward), where GPT-2 divides by √d_head:
   the same up to float rounding, in HF's order so that the rounding matches too.
6. In the files: q, k and v come fused in one query_key_value layer whose output rows are ordered per head
   (head 0's q, k, v, then head 1's…, not GPT-2's all-q, all-k, all-v); layers are nn.Linear, stored
   [out, in]; the released weights are float16; and the embedding is padded beyond the tokenizer's
   vocabulary (50304 rows for pythia-70m). weights/families.py reads all of that.

As in GPT-2: pre-LayerNorm, biases on every projection, LayerNorm's ε from config.json, a final LayerNorm.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import Config
from .model import GPT2, MLP, Attention, Block, HookPoint


@dataclass(frozen=True)
class NeoXConfig(Config):
    rotary_dims: int = 16  # how many of each head's d_head dimensions are rotated (rotary_pct · d_head)
    rotary_base: float = 10000.0  # rotary_emb_base: pair i turns by base^(−2i/rotary_dims) per position
    parallel_residual: bool = True

    def __post_init__(self):
        super().__post_init__()
        if self.rotary_dims % 2 or not 0 < self.rotary_dims <= self.d_head:
            raise ValueError(f"rotary_dims must be even and in (0, d_head = {self.d_head}], found {self.rotary_dims}")


def gelu_erf(x: torch.Tensor) -> torch.Tensor:
    """The exact GELU, x·Φ(x) = 0.5·x·(1 + erf(x/√2)): Pythia was trained with it (difference 4)."""
    return F.gelu(x)


def inverse_frequencies(rotary_dims: int, base: float, device=None) -> torch.Tensor:
    """[rotary_dims / 2]: how far pair i turns per position, base^(−2i/rotary_dims) radians, in float32 as HF computes it."""
    return 1.0 / (base ** (torch.arange(0, rotary_dims, 2, dtype=torch.float, device=device) / rotary_dims))


def rotary_cos_sin(n_pos: int, inv_freq: torch.Tensor, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every position's angles, [pos, 1, rotary_dims] (the 1 broadcasts over heads): pair i turns by
    position · inv_freq[i], computed in float32 as HF computes it, then cast to the model's dtype."""
    angles = torch.arange(n_pos, device=inv_freq.device).float()[:, None] * inv_freq  # [pos, r/2]
    angles = torch.cat([angles, angles], dim=-1)[:, None, :]  # [pos, 1, r]: each angle serves both dims of its pair
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """[batch, pos, n_heads, d_head] with its first rotary_dims dims turned pair by pair: for the pair (a, b) =
    (x_i, x_{i+r/2}), (a·cos − b·sin, b·cos + a·sin). The other d_head − rotary_dims dims are unchanged."""
    r = cos.shape[-1]
    x_rot, x_pass = x[..., :r], x[..., r:]
    first, second = x_rot[..., : r // 2], x_rot[..., r // 2 :]
    partner = torch.cat([-second, first], dim=-1)  # HF's rotate_half: the other dim of each pair, signed
    return torch.cat([x_rot * cos + partner * sin, x_pass], dim=-1)


class RotaryAttention(Attention):
    """GPT-2's attention (same parameters, hooks and forward pass) with q and k rotated by position."""

    def __init__(self, cfg: NeoXConfig):
        super().__init__(cfg)
        self.cfg = cfg
        self.hook_rot_q = HookPoint()
        self.hook_rot_k = HookPoint()

    def rotate(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Difference 1: positions enter here, as rotations of q and k [batch, pos, n_heads, d_head]."""
        cos, sin = rotary_cos_sin(q.shape[1], self.frequencies(q.device), q.dtype)  # [pos, 1, rotary_dims]
        return self.hook_rot_q(rotate_pairs(q, cos, sin)), self.hook_rot_k(rotate_pairs(k, cos, sin))

    def frequencies(self, device) -> torch.Tensor:
        """[rotary_dims / 2] radians per position of each pair: rotary_emb_base^(−2i/rotary_dims)."""
        return inverse_frequencies(self.cfg.rotary_dims, self.cfg.rotary_base, device)

    def scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Difference 5: multiplied by d_head^−0.5, as HF does, rather than divided by √d_head."""
        return torch.einsum("bqhe,bkhe->bhqk", q, k) * q.shape[-1] ** -0.5  # [batch, n_heads, query_pos, key_pos]


class ParallelBlock(Block):
    """Difference 2, GPT-NeoX's (and GPT-J's) parallel residual: the MLP reads resid_pre through ln2, as attention
    does through ln1, and both outputs are added to resid_pre at once. So there is no resid_mid."""

    def __init__(self, cfg: NeoXConfig, attn: Attention, mlp: MLP):
        super().__init__(cfg, attn=attn, mlp=mlp)
        del self.hook_resid_mid

    def forward(self, resid_pre: torch.Tensor) -> torch.Tensor:
        resid_pre = self.hook_resid_pre(resid_pre)  # [batch, pos, d_model]
        attn_out = self.hook_attn_out(self.attn(self.ln1(resid_pre)))  # [batch, pos, d_model]
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(resid_pre)))  # [batch, pos, d_model]: reads resid_pre too
        return self.hook_resid_post(resid_pre + attn_out + mlp_out)  # [batch, pos, d_model]


class GPTNeoX(GPT2):
    """GPT-2 without W_pos, with GPT-NeoX's blocks and its own unembedding W_U [d_model, d_vocab]."""

    def __init__(self, cfg: NeoXConfig):
        super().__init__(cfg)
        # Positions enter through the rotation of q and k (difference 1): no W_pos, and no hook_pos_embed.
        del self.W_pos, self.hook_pos_embed
        self.W_pos = None  # None, not absent: the rewrites and measures ask `model.W_pos is not None`
        # W_U is set by weights.load from embed_out (difference 3); b_U stays None (there is none) until the
        # rewrites give the model one, as they do GPT-2.

    def block(self, cfg: NeoXConfig, layer: int) -> Block:
        attn, mlp = RotaryAttention(cfg), MLP(cfg, activation=gelu_erf)
        return (ParallelBlock if cfg.parallel_residual else Block)(cfg, attn=attn, mlp=mlp)  # difference 2

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.hook_embed(self.W_E[tokens])  # [batch, pos, d_model]: no position embedding is added
