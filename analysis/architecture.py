"""What kind of model the study has in hand, read once from the processed model: which norm, which gains
processing folded and which it left, the key-value heads, the position embedding. The study records it
(`ModelStudy.arch`), and analysis/differences.py writes the report's per-family statements from it.
"""

from dataclasses import dataclass

from torch import nn

from analysis import measures
from minigpt import GPT2
from minigpt.llama import RMSNorm
from minigpt.model import LayerNorm

LAYER_NORM_PROCESSING = "LayerNorm folded, writing weights centred"


@dataclass(frozen=True)
class Architecture:
    norm: str  # "LayerNorm" or "RMSNorm" (measures.norm_kind)
    processing: str  # what weights.process did to this model, one phrase
    folded: tuple[str, ...]  # the block's norms whose gains processing folded into the weights that read them
    left: tuple[str, ...]  # the block's norms whose gains are still applied where they are (post-norms, q/k norms)
    pre_norms: bool  # ln1 and ln2 before the sublayers (GPT-2's place); OLMo 2 has none
    post_norms: bool  # ln1_post and ln2_post after the sublayers, before hook_attn_out / hook_mlp_out
    position_embedding: bool  # a learned W_pos added to the embedding (GPT-2, GPT-Neo, OPT); rotary models have none
    n_heads: int
    n_kv_heads: int  # key-value heads; fewer than n_heads with grouped-query attention
    qk_norm: str | None  # "per head" (Qwen 3, Gemma 3), "whole width" (OLMo 2) or None


def block_norms(model: GPT2) -> dict[str, nn.Module]:
    """The norms of the first block by their path in it (ln1, ln2, ln1_post, ln2_post, attn.q_norm, attn.k_norm)."""
    return {name: m for name, m in model.blocks[0].named_modules() if isinstance(m, LayerNorm | RMSNorm)}


def architecture(model: GPT2) -> Architecture:
    """Read from the processed model: a gain that processing folded is None (the weights that read it carry it)."""
    norms = block_norms(model)
    kind = measures.norm_kind(model)
    folded = tuple(name for name, m in norms.items() if m.w is None)
    left = tuple(name for name, m in norms.items() if m.w is not None)
    attn = model.blocks[0].attn
    q_norm = getattr(attn, "q_norm", None)
    qk = None
    if q_norm is not None:  # Qwen 3 and Gemma 3: a gain of width d_head; OLMo 2: n_heads · d_head
        qk = "per head" if q_norm.w is not None and len(q_norm.w) == attn.W_Q.shape[-1] else "whole width"
    if kind == "LayerNorm":
        processing = LAYER_NORM_PROCESSING
    else:
        gains = f"{', '.join(folded)} gains folded into the weights that read them" if folded else "no gain folded"
        kept = f"; {', '.join(left)} gains left as trained" if left else ""
        processing = f"{gains}, nothing centred (RMSNorm does not subtract the mean){kept}"
    return Architecture(
        norm=kind,
        processing=processing,
        folded=folded,
        left=left,
        pre_norms="ln1" in norms,
        post_norms="ln1_post" in norms,
        position_embedding=getattr(model, "W_pos", None) is not None,
        n_heads=attn.W_Q.shape[0],
        n_kv_heads=attn.W_V.shape[0],
        qk_norm=qk,
    )
