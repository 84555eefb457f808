"""OPT (facebook/opt-125m, -1.3b, -2.7b, -6.7b, …): GPT-2, except…

1. The MLP's nonlinearity is ReLU, not GELU (config.json's activation_function "relu"; HF's
   modeling_opt.py, OPTDecoderLayer: fc1 → activation_fn → fc2).
2. Queries are scaled by 1/√d_head before the product with the keys (OPTAttention.forward:
   q_proj(x) * scaling, then attention with scaling=1.0), where GPT-2 divides the scores after it.
   The same numbers up to float rounding; minigpt follows OPT's order so that the rounding matches too.
   hook_q is the query before that scaling, as in TransformerLens; hook_attn_scores are the scaled scores.
3. The learned position embedding has two extra rows at its start: OPTLearnedPositionalEmbedding looks
   position p up at row p + 2 (a leftover of fairseq's padding index). `weights.load` keeps rows 2… as
   W_pos, so that W_pos[p] is position p as in GPT-2; rows 0 and 1 are never read for an unpadded prompt.
4. The embedding is padded beyond the tokenizer's vocabulary (vocab_size 50272 in every released config.json),
   BOS is </s> (bos_token_id 2), not <|endoftext|>, and the checkpoint's layers are nn.Linear, weights stored
   [out, in] (transposed once at load, weights/families.py). These concern the files, not the forward pass.

As in GPT-2: pre-LayerNorm blocks (do_layer_norm_before), a final LayerNorm before the unembedding
(OPTDecoder.final_layer_norm), biases on every projection, LayerNorm ε = 1e-5 (OPT uses nn.LayerNorm's
default), and the unembedding tied to the embedding. opt-350m is not read: it is post-LayerNorm and projects
between a 512-wide embedding and its 1024-wide residual stream (project_in/project_out), so it is not
"GPT-2, except" a few lines; `weights.load` refuses it and says so.
"""

from dataclasses import dataclass

import torch

from .config import Config
from .model import GPT2, MLP, Attention, Block


@dataclass(frozen=True)
class OPTConfig(Config):
    """OPT's shape has GPT-2's fields exactly; its own type says which family a config (and its model) is."""


class OPTAttention(Attention):
    """GPT-2's attention (same parameters, hooks and forward pass) with the query scaled before the product."""

    def scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Difference 2: q scaled by 1/√d_head, then q · k. hook_q (before this) is the query unscaled."""
        return torch.einsum("bqhe,bkhe->bhqk", q * q.shape[-1] ** -0.5, k)  # [batch, n_heads, query_pos, key_pos]


class OPT(GPT2):
    """GPT-2 whose blocks attend as OPT's do and whose MLPs use ReLU (difference 1)."""

    def block(self, cfg: OPTConfig, layer: int) -> Block:
        return Block(cfg, attn=OPTAttention(cfg), mlp=MLP(cfg, activation=torch.relu))
