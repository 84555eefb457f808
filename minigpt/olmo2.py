"""OLMo 2 (allenai/OLMo-2-0425-1B, OLMo-2-1124-7B …): GPT-2, except…

Everything llama.py lists (RMSNorm, whole-head rotary, grouped-query attention, SwiGLU, no biases, its own
unembedding), and, where OLMo 2 parts from Llama (HF's modeling_olmo2.py):

1. No norm before a sublayer: attention and the MLP read the residual stream itself, not a normalised copy. So a
   block has no ln1 and no ln2 (Olmo2DecoderLayer has no input_layernorm).
2. The norm is after each sublayer instead ("reordered" norms): attention's output goes through ln1_post
   (post_attention_layernorm), the MLP's through ln2_post (post_feedforward_layernorm), before it is added to the
   residual stream. hook_attn_out and hook_mlp_out are after those norms, as TransformerLens places them for
   Gemma, so that resid_mid = resid_pre + attn_out and resid_post = resid_mid + mlp_out still hold exactly.
   These gains scale what is written to the residual stream, after the sublayer's last matrix and through a
   normalisation, so no matrix can take them in: weights.process leaves them, and says so. (Nor can they be
   moved back into W_O or W_out: the normalisation in between would undo any scale put there.) The only norm that
   reads the residual stream is the final one, ln_final, which folds into W_U.
3. q_norm and k_norm: one RMSNorm over the whole query (n_heads·d_head wide) and one over the whole key
   (n_kv_heads·d_head), before they are split into heads and before the rotation (Olmo2Attention:
   q_norm(q_proj(x))). hook_q and hook_k are the projections, before these norms; Qwen 3's and Gemma 3's
   q/k norms are per head instead (llama.py, difference 6).

In half precision, HF's OLMo 2 multiplies its norms' gains and turns q and k in float32 before rounding; here
both are rounded as in Llama's file (float32 results are the same within 2.2e-5; bfloat16 logits differ from HF's
bfloat16 by about as much as either differs from float32).

As in GPT-2: one residual stream written by attention then the MLP, a final norm before the unembedding.
"""

from dataclasses import dataclass

import torch

from .llama import GatedMLP, Llama, LlamaAttention, LlamaConfig, RMSNorm
from .model import Block


@dataclass(frozen=True)
class OLMo2Config(LlamaConfig):
    """Llama's settings, a type of its own so that weights.load reads OLMo 2's key map; qk_norm (Qwen 3's per-head
    norms: OLMo 2's are whole-width, always) and local_layers (it has no sliding window) are refused."""

    def __post_init__(self):
        super().__post_init__()
        if self.qk_norm or self.local_layers:
            raise ValueError("OLMo 2 has whole-width q/k norms and no sliding window: qk_norm and local_layers must be unset")


class OLMo2Attention(LlamaAttention):
    """Llama's attention with q and k each normalised over their whole width before the rotation (difference 3)."""

    def __init__(self, cfg: OLMo2Config):
        super().__init__(cfg)
        self.q_norm = RMSNorm(cfg, cfg.n_heads * cfg.d_head)
        self.k_norm = RMSNorm(cfg, cfg.n_kv_heads * cfg.d_head)

    def rotate(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.q_norm(q.flatten(-2)).view_as(q)  # [batch, pos, n_heads, d_head], normalised as one vector
        k = self.k_norm(k.flatten(-2)).view_as(k)  # [batch, pos, n_kv_heads, d_head]
        return super().rotate(q, k)


class PostNormBlock(Block):
    """Differences 1 and 2: each sublayer reads the residual stream and its output is normalised before it is added."""

    def __init__(self, cfg: OLMo2Config):
        super().__init__(cfg, attn=OLMo2Attention(cfg), mlp=GatedMLP(cfg))
        del self.ln1, self.ln2
        self.ln1_post, self.ln2_post = RMSNorm(cfg), RMSNorm(cfg)

    def forward(self, resid_pre: torch.Tensor) -> torch.Tensor:
        resid_pre = self.hook_resid_pre(resid_pre)  # [batch, pos, d_model]
        attn_out = self.hook_attn_out(self.ln1_post(self.attn(resid_pre)))  # [batch, pos, d_model]: reads x, not ln1(x)
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)  # [batch, pos, d_model]
        mlp_out = self.hook_mlp_out(self.ln2_post(self.mlp(resid_mid)))  # [batch, pos, d_model]
        return self.hook_resid_post(resid_mid + mlp_out)  # [batch, pos, d_model]


class OLMo2(Llama):
    """Llama with OLMo 2's blocks: norms after the sublayers, none before, and q/k norms over the whole width."""

    def block(self, cfg: OLMo2Config, layer: int) -> Block:
        return PostNormBlock(cfg)
