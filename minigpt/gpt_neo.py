"""GPT-Neo (EleutherAI/gpt-neo-125m, -1.3B, -2.7B): GPT-2, except…

1. The attention scores are not divided by √d_head. Hugging Face's modeling_gpt_neo.py
   (GPTNeoSelfAttention._attn) multiplies queries by keys and goes straight to the mask and softmax;
   the models were trained that way, and HF also takes that product in float32 so that it cannot overflow
   in half precision. minigpt does the same.
2. Local attention on some layers. config.json's `attention_types` (e.g. [[["global", "local"], 6]]: the
   pair repeated 6 times) marks each layer "global" or "local". A global layer is GPT-2's causal attention.
   On a local layer a query at position i reads only the `window_size` most recent positions, itself
   included: keys j with i − window_size < j ≤ i. (HF builds that mask as tril(1) XOR tril(1, −window_size);
   the released models use a window of 256, so it matters only for prompts longer than 256 tokens.)
3. Queries, keys and values have no bias (q_proj, k_proj, v_proj are nn.Linear(bias=False); out_proj has one).
   The model keeps b_Q, b_K, b_V as zeros, so that folding LayerNorm (`weights.fold_layer_norm`) has
   somewhere to put ln1's bias, exactly as it does for GPT-2.
4. The checkpoint's layers are nn.Linear, whose weights are stored [out, in]; `weights.load` transposes each
   once into minigpt's [in, out] (weights/families.py). That is the file, not the model.

Everything else is GPT-2's: learned positions, pre-LayerNorm blocks with a residual stream written by
attention then MLP, GPT-2's tanh GELU ("gelu_new"), LayerNorm's ε from config.json, and an unembedding
tied to the embedding. So the model is `GPT2` with each block's attention replaced.
"""

from dataclasses import dataclass

import torch

from .config import Config
from .model import GPT2, Attention, Block


@dataclass(frozen=True)
class NeoConfig(Config):
    window_size: int = 256  # how many positions, itself included, a query on a local layer reads
    local_layers: tuple[int, ...] = ()  # the layers that attention_types marks "local"; the others are global


def window_mask(n_pos: int, window: int | None, device) -> torch.Tensor:
    """[query_pos, key_pos], True where the key is hidden: the future, and, with a window, keys `window` or more
    positions back (a query reads itself and the window − 1 before it). window None: GPT-2's causal mask."""
    positions = torch.arange(n_pos, device=device)
    back = positions[:, None] - positions[None, :]  # [query_pos, key_pos]: how far back the key is
    if window is None:
        return back < 0
    return (back < 0) | (back >= window)


class NeoAttention(Attention):
    """GPT-2's attention (same parameters, hooks and forward pass) with unscaled scores and, on local layers, a window."""

    def __init__(self, cfg: NeoConfig, local: bool):
        super().__init__(cfg)
        self.window = cfg.window_size if local else None  # None: a global layer

    def scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Not divided by √d_head (difference 1), and in float32, as HF computes it: unscaled scores are
        √d_head times larger than GPT-2's and could overflow float16."""
        return torch.einsum("bqhe,bkhe->bhqk", q.float(), k.float())  # [batch, n_heads, query_pos, key_pos]

    def hidden(self, n_pos: int, device) -> torch.Tensor:
        """The future, and, on a local layer, keys `window` or more positions back (difference 2)."""
        return window_mask(n_pos, self.window, device)


class GPTNeo(GPT2):
    """GPT-2 whose blocks attend as GPT-Neo does (NeoAttention, global or local by layer)."""

    def block(self, cfg: NeoConfig, layer: int) -> Block:
        return Block(cfg, attn=NeoAttention(cfg, local=layer in cfg.local_layers))
