"""Gemma 2 and Gemma 3 (google/gemma-2-2b, -9b, -27b; google/gemma-3-1b-pt, -270m, the text-only Gemma 3s):
GPT-2, except…

Everything llama.py lists (RMSNorm, whole-head rotary, grouped-query attention, a gated MLP, no biases, sliding
windows), with its unembedding tied to the embedding as GPT-2's, and, where Gemma parts from Llama (HF's
modeling_gemma2.py and modeling_gemma3.py):

1. Each RMSNorm multiplies by (1 + w), with w stored around 0 (Gemma2RMSNorm). weights/gemma.py reads the gain
   as w = 1 + w_file, in float32, so llama.py's RMSNorm (x / rms · w) serves unchanged and its gain is, as
   everywhere else in minigpt, the number the normalised vector is multiplied by. (HF's Gemma multiplies by 1 + w
   in float32 before casting to the model's dtype; here the gain is in the model's dtype, as Llama's: the same in
   float32, a rounding of the gain and of the product apart in bfloat16.)
2. The embedding is multiplied by √d_model before the first block, in the model's dtype as HF does (in bfloat16
   √1152 = 33.94 becomes 34.0): hook_embed is after the scale, the residual stream's start. The tied
   unembedding reads W_E unscaled.
3. Norms before and after each sublayer ("sandwich" norms): ln1 and ln2 read the residual stream as in GPT-2,
   and ln1_post (post_attention_layernorm), ln2_post (post_feedforward_layernorm) normalise each sublayer's
   output before it is added. hook_attn_out and hook_mlp_out are after the post-norms, as in TransformerLens, so
   resid_mid = resid_pre + attn_out still holds. The post-norms' gains cannot be folded (olmo2.py, difference 2).
4. GeGLU: llama.py's gated MLP with GPT-2's tanh GELU as the gate's activation (hidden_activation
   "gelu_pytorch_tanh", the same formula) in place of SiLU.
5. The scores are multiplied by query_pre_attn_scalar^−0.5, which need not be d_head^−0.5 (gemma-2-27b: 144
   against heads of 128).
6. Gemma 2 caps the attention scores softly before the mask: s ↦ c · tanh(s / c), c = attn_logit_softcapping
   (50), and the logits after the unembedding, c = final_logit_softcapping (30): the model's `final_softcap`,
   None where there is none (Gemma 3 has neither).
7. Sliding and global layers alternate (layer_types; Gemma 2: every other layer, from layer 0; Gemma 3: five
   sliding, then one global): llama.py's window on the sliding ones.
8. Gemma 3 normalises each head's q and k (llama.py, difference 6, with the (1 + w) of difference 1), and its
   two kinds of layer turn at two rates: sliding layers by rope_local_base_freq (10 000), global ones by
   rope_theta (1 000 000), stretched linearly where rope_scaling says so (transformers 5 writes both as
   rope_parameters per layer type). The larger Gemma 3s (model_type "gemma3", with a vision tower) are refused.

As in GPT-2: a pre-norm residual stream written by attention then the MLP, a final norm, a tied unembedding.
"""

from dataclasses import dataclass

import torch

from .gpt_neox import inverse_frequencies
from .llama import GatedMLP, Llama, LlamaAttention, LlamaConfig, RMSNorm
from .model import Block, gelu_new


@dataclass(frozen=True)
class GemmaConfig(LlamaConfig):
    query_pre_attn_scalar: float = 256.0  # the scores are multiplied by its −0.5th power (difference 5)
    attn_softcap: float | None = None  # attn_logit_softcapping: Gemma 2's cap on the scores (difference 6)
    final_softcap: float | None = None  # final_logit_softcapping: Gemma 2's cap on the logits
    rope_local_base: float = 10000.0  # sliding layers' rotary base (difference 8); Gemma 2's reader sets rope_theta

    def __post_init__(self):
        super().__post_init__()
        for name in ("query_pre_attn_scalar", "attn_softcap", "final_softcap", "rope_local_base"):
            value = getattr(self, name)
            if value is not None and not value > 0:  # NaN fails too
                raise ValueError(f"{name} must be a positive number, found {value!r}")


class GemmaAttention(LlamaAttention):
    """Llama's attention with Gemma's scale, Gemma 2's soft cap on the scores and Gemma 3's local rotary base."""

    def frequencies(self, device) -> torch.Tensor:
        """Difference 8: a sliding layer turns by rope_local_base, never stretched; a global one as Llama's."""
        if self.window is not None:
            return inverse_frequencies(self.cfg.d_head, self.cfg.rope_local_base, device)
        return super().frequencies(device)

    def scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """q · k times query_pre_attn_scalar^−0.5 (difference 5), then c · tanh(s / c) where capped (difference 6).
        Not Llama's `scores` rescaled: that would round otherwise than HF's one multiplication."""
        k = k.repeat_interleave(self.group, dim=2)  # [batch, pos, n_heads, d_head]: grouped-query attention
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) * self.cfg.query_pre_attn_scalar**-0.5  # [batch, n_heads, q, k]
        cap = self.cfg.attn_softcap
        return scores if cap is None else torch.tanh(scores / cap) * cap  # in (−cap, cap), before the mask


class SandwichBlock(Block):
    """Difference 3: RMSNorm before each sublayer, as in GPT-2, and another on its output before it is added."""

    def __init__(self, cfg: GemmaConfig, layer: int):
        attn = GemmaAttention(cfg, local=layer in cfg.local_layers)
        super().__init__(cfg, attn=attn, mlp=GatedMLP(cfg, activation=gelu_new))  # difference 4
        self.ln1, self.ln2 = RMSNorm(cfg), RMSNorm(cfg)
        self.ln1_post, self.ln2_post = RMSNorm(cfg), RMSNorm(cfg)

    def forward(self, resid_pre: torch.Tensor) -> torch.Tensor:
        resid_pre = self.hook_resid_pre(resid_pre)  # [batch, pos, d_model]
        attn_out = self.hook_attn_out(self.ln1_post(self.attn(self.ln1(resid_pre))))  # [batch, pos, d_model]
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)  # [batch, pos, d_model]
        mlp_out = self.hook_mlp_out(self.ln2_post(self.mlp(self.ln2(resid_mid))))  # [batch, pos, d_model]
        return self.hook_resid_post(resid_mid + mlp_out)  # [batch, pos, d_model]


class Gemma(Llama):
    """Llama with Gemma's sandwich blocks, a scaled embedding and, for Gemma 2, soft-capped logits."""

    def __init__(self, cfg: GemmaConfig):
        super().__init__(cfg)
        self.final_softcap = cfg.final_softcap  # difference 6; read by the rewrites (center_unembed refuses it)

    def block(self, cfg: GemmaConfig, layer: int) -> Block:
        return SandwichBlock(cfg, layer)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Difference 2: W_E's rows times √d_model, rounded to the model's dtype first, as HF's embed_scale is."""
        scale = torch.tensor(self.cfg.d_model**0.5, dtype=self.W_E.dtype, device=self.W_E.device)
        return self.hook_embed(self.W_E[tokens] * scale)  # [batch, pos, d_model]

    def forward(self, tokens: torch.Tensor, *, unembed: bool = True) -> torch.Tensor:
        """GPT-2's forward pass; then, where final_softcap is set, the logits capped softly (difference 6)."""
        out = super().forward(tokens, unembed=unembed)  # logits [batch, pos, d_vocab], or the residual stream
        cap = self.final_softcap
        return out if cap is None or not unembed else torch.tanh(out / cap) * cap
