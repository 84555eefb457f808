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
from .model import GPT2, MLP, Attention, linear, per_head


@dataclass(frozen=True)
class OPTConfig(Config):
    """OPT's shape has GPT-2's fields exactly; its own type says which family a config (and its model) is."""


class OPTAttention(Attention):
    """GPT-2's attention (same parameters and hooks) with the query scaled before the product."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [batch, pos, d_model], LayerNorm's output
        q = self.hook_q(per_head(x, self.W_Q, self.b_Q))  # [batch, pos, n_heads, d_head]
        k = self.hook_k(per_head(x, self.W_K, self.b_K))  # [batch, pos, n_heads, d_head]
        v = self.hook_v(per_head(x, self.W_V, self.b_V))  # [batch, pos, n_heads, d_head]

        d_head, n_pos = q.shape[-1], x.shape[1]
        scores = torch.einsum("bqhe,bkhe->bhqk", q * d_head**-0.5, k)  # difference 2: q scaled, then q · k
        future = torch.ones(n_pos, n_pos, dtype=torch.bool, device=x.device).triu(diagonal=1)  # [query_pos, key_pos]
        scores.masked_fill_(future, float("-inf"))
        scores = self.hook_attn_scores(scores)
        pattern = scores.float().softmax(dim=-1).to(v.dtype)  # [batch, n_heads, query_pos, key_pos]
        pattern = self.hook_pattern(pattern)

        z = self.hook_z(torch.einsum("bhqk,bkhe->bqhe", pattern, v))  # [batch, pos, n_heads, d_head]
        return linear(z.flatten(-2), self.W_O.flatten(0, 1), self.b_O)  # [batch, pos, d_model], as GPT-2's


class ReLUMLP(MLP):
    """GPT-2's MLP (same parameters and hooks) with ReLU in place of the GELU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.hook_pre(linear(x, self.W_in, self.b_in))  # [batch, pos, d_mlp]
        post = self.hook_post(torch.relu(pre))  # [batch, pos, d_mlp]: difference 1
        return linear(post, self.W_out, self.b_out)  # [batch, pos, d_model]


class OPT(GPT2):
    """GPT-2 whose blocks attend and compute their MLP as OPT's do."""

    def __init__(self, cfg: OPTConfig):
        super().__init__(cfg)
        for block in self.blocks:
            block.attn = OPTAttention(cfg)
            block.mlp = ReLUMLP(cfg)
