"""Rewrites of a model's weights that change what the residual stream looks like, not what the model predicts.

The residual-stream study (like TransformerLens's `from_pretrained`) applies them in this order:
    fold_layer_norm → center_writing_weights → center_unembed → fold_value_biases
A study that reads no logits may first `drop_unembed`: the rewrites then leave out ln_final and W_U,
whose copy of the embedding (W_U is W_E transposed, then rewritten apart from it) is 14% of gpt2-medium.
Each works in place, one tensor at a time (so processing needs little memory beyond the model), and
returns the model. The tests check each invariant claimed below against the unprocessed model.

What applies where:
- LayerNorm families (GPT-2, GPT-Neo, OPT, Pythia/GPT-NeoX; minigpt/gpt_neo.py, opt.py, gpt_neox.py) have GPT-2's
  parameters under GPT-2's names: all four rewrites apply, and each docstring's "Families" line says what differs
  and why the identity still holds (tests/test_families.py checks each). A post-LayerNorm OPT such as opt-350m,
  where no LayerNorm reads the residual stream alone, is refused when it is read, not rewritten into something else.
- RMSNorm families (Llama, Mistral, Qwen: minigpt/llama.py; OLMo 2, Gemma) read the residual stream with RMSNorm,
  which does not subtract the mean. fold_layer_norm folds the pre-norms' gains, and nothing is centred;
  center_writing_weights is refused (it is not an identity there) and `process` skips it; center_unembed is
  refused where logits are softcapped (Gemma 2); fold_value_biases applies, per key-value head.
  tests/test_llama.py checks each for every kind of Llama's file, tests/test_olmo2_gemma.py for OLMo 2 and Gemma.
"""

import torch
from torch import nn

from minigpt import GPT2
from minigpt.llama import RMSNorm


def _replace(module: nn.Module, name: str, tensor: torch.Tensor) -> None:
    setattr(module, name, nn.Parameter(tensor, requires_grad=False))


def _untie_unembed(model: GPT2) -> None:
    """Give the model its own W_U = W_E.T, so that rewriting one leaves the other alone, and, where a LayerNorm's
    bias will fold into it, b_U = 0 (an RMSNorm has no bias: b_U stays None)."""
    if model.ln_final is None:  # dropped: nothing reads W_E but the embedding
        return
    if model.W_U is None:
        _replace(model, "W_U", model.W_E.detach().T.clone())
    if model.b_U is None and not uses_rms_norm(model):
        _replace(model, "b_U", torch.zeros(model.cfg.d_vocab, dtype=model.W_E.dtype, device=model.W_E.device))


def uses_rms_norm(model: GPT2) -> bool:
    """Whether the model normalises with RMSNorm (minigpt/llama.py's, which OLMo 2 and Gemma share), not LayerNorm."""
    return any(isinstance(module, RMSNorm) for module in model.modules())


@torch.no_grad()
def fold_layer_norm(model: GPT2) -> GPT2:
    """Move each LayerNorm's gain w and bias b into the weights that read its output.

    Identity: LN(x) = x̂·w + b with x̂ = centred, normalised x, so for a reader (W, c)
        LN(x) @ W + c = x̂ @ (diag(w)·W) + (b @ W + c).
    Then, because x̂ has zero mean (x̂·1 = 0), the mean over d_model of each column of the new W
    contributes nothing, and is removed ("centring the reading weights", as TransformerLens does).
    Readers: ln1 → W_Q, W_K, W_V (and biases); ln2 → W_in (b_in); ln_final → W_U (a new b_U).
    Afterwards every LayerNorm only centres and normalises (w = b = None).
    Invariant: logits exactly (up to float rounding); residual stream unchanged.
    Families: GPT-Neo's q, k, v have no bias in its files (b_Q, b_K, b_V are zeros) and get one here. In
    GPT-NeoX's parallel block ln2 reads resid_pre rather than resid_mid: the identity is about a LayerNorm
    and the weights that read it, not about what it reads, so it holds; the rotary embedding turns q and k
    after this product, and q and k are unchanged. OPT's final LayerNorm is ln_final, as GPT-2's; Pythia's
    W_U is its own matrix (embed_out), rewritten in place like the untied copy GPT-2 gets. RMSNorm families
    (Llama, Mistral, Qwen, OLMo 2, Gemma): `fold_rms_norm`, which moves the gains alone and centres nothing.
    """
    if uses_rms_norm(model):
        return fold_rms_norm(model)
    # Applied twice it refuses: the gains and biases it would move are gone (w = b = None).
    if any(block.ln1.w is None for block in model.blocks) or (model.ln_final is not None and model.ln_final.w is None):
        raise ValueError(
            "fold_layer_norm: this model's LayerNorm is already folded into the weights (its w and b are None); "
            "fold it once (weights.load and weights.process already do)"
        )
    _untie_unembed(model)
    for block in model.blocks:
        attn, mlp = block.attn, block.mlp
        for name in "QKV":
            W, bias = getattr(attn, f"W_{name}"), getattr(attn, f"b_{name}")  # [n_heads, d_model, d_head], [n_heads, d_head]
            bias += torch.einsum("d,hde->he", block.ln1.b, W)
            W *= block.ln1.w[None, :, None]
            W -= W.mean(dim=1, keepdim=True)
        mlp.b_in += block.ln2.b @ mlp.W_in
        mlp.W_in *= block.ln2.w[:, None]
        mlp.W_in -= mlp.W_in.mean(dim=0, keepdim=True)
        block.ln1.w = block.ln1.b = block.ln2.w = block.ln2.b = None
    if model.ln_final is not None:
        model.b_U += model.ln_final.b @ model.W_U
        model.W_U *= model.ln_final.w[:, None]
        model.W_U -= model.W_U.mean(dim=0, keepdim=True)
        model.ln_final.w = model.ln_final.b = None
    return model


@torch.no_grad()
def fold_rms_norm(model: GPT2) -> GPT2:
    """`fold_layer_norm` for RMSNorm models: move each pre-norm's gain w into the weights that read its output.

    Identity: RMSNorm(x) = x̂·w with x̂ = x / √(mean(x²) + ε), so for a reader W, (x̂·w) @ W = x̂ @ (diag(w)·W).
    Readers: ln1 → W_Q, W_K, W_V; ln2 → W_gate and W_in; ln_final → W_U (untied first). There is no bias to move,
    and nothing is centred: x̂ does not have zero mean, so the mean of W's columns is not idle as after a LayerNorm.
    Afterwards these norms only normalise (w = None). OLMo 2's blocks have no ln1 and ln2: nothing to fold there.
    Left as they are, because no weight reads their output linearly alone:
      the post-sublayer norms ln1_post and ln2_post (OLMo 2, Gemma): their output is added to the residual
        stream directly, and the weights before them (W_O, W_out) are undone by the normalisation;
      q_norm and k_norm (Qwen 3, OLMo 2, Gemma 3): no weight reads q or k, only their product q·k, and a rotation
        comes between, mixing dimensions i and i + d_head/2, so a gain that differs between the two cannot move
        past it (and one equal within each pair could at most be merged from one norm into the other).
    Invariant: logits exactly (up to float rounding); residual stream unchanged (hook_normalized loses w).
    """
    blocks = list(model.blocks)
    pre_norms = [norm for block in blocks for norm in (getattr(block, "ln1", None), getattr(block, "ln2", None)) if norm]
    if any(norm.w is None for norm in pre_norms) or (model.ln_final is not None and model.ln_final.w is None):
        raise ValueError(
            "fold_layer_norm: this model's RMSNorm gains are already folded into the weights (their w is None); "
            "fold them once (weights.load and weights.process already do)"
        )
    _untie_unembed(model)
    for block in blocks:
        attn, mlp = block.attn, block.mlp
        if getattr(block, "ln1", None) is not None:
            for W in (attn.W_Q, attn.W_K, attn.W_V):  # [n_heads or n_kv_heads, d_model, d_head]
                W *= block.ln1.w[None, :, None]
            block.ln1.w = None
        if getattr(block, "ln2", None) is not None:
            for W in (mlp.W_gate, mlp.W_in):  # [d_model, d_mlp]
                W *= block.ln2.w[:, None]
            block.ln2.w = None
    if model.ln_final is not None:
        model.W_U *= model.ln_final.w[:, None]
        model.ln_final.w = None
    return model


@torch.no_grad()
def center_writing_weights(model: GPT2) -> GPT2:
    """Subtract, from every vector written to the residual stream, its mean over d_model.

    Writers: W_E, W_pos (rows), W_O, b_O, W_out, b_out (their d_model axis).
    Identity: every reader of the residual stream is a LayerNorm, which starts by subtracting the
    mean: LN(x + c·1) = LN(x). Writing mean-free vectors therefore changes the residual stream only
    by its mean, and after this every residual vector has zero mean (norm = std·√d_model).
    Invariant: logits exactly (up to float rounding); the residual stream up to its mean.
    The unembedding is untied first, since W_U = W_E.T reads, and must keep reading, the old W_E.
    Families: GPT-NeoX has no W_pos (positions are rotations of q and k), and its W_U is already its own.
    In its parallel block attention and MLP both write to, and both LayerNorms read, the residual stream,
    so every reader is still a LayerNorm and the identity holds.
    Refused for RMSNorm models: RMSNorm(x + c·1) ≠ RMSNorm(x), so the identity does not hold there.
    """
    if uses_rms_norm(model):
        raise ValueError(
            f"center_writing_weights: {type(model).__name__} reads its residual stream with RMSNorm, which does not "
            "subtract the mean, so centring what is written would change its predictions; it is not applied"
        )
    # Applied twice, the second call changes nothing but rounding: the means it subtracts are already 0.
    _untie_unembed(model)
    model.W_E -= model.W_E.mean(dim=-1, keepdim=True)
    if model.W_pos is not None:  # GPT-NeoX has none
        model.W_pos -= model.W_pos.mean(dim=-1, keepdim=True)
    for block in model.blocks:
        for W in (block.attn.W_O, block.attn.b_O, block.mlp.W_out, block.mlp.b_out):
            W -= W.mean(dim=-1, keepdim=True)
    return model


@torch.no_grad()
def center_unembed(model: GPT2) -> GPT2:
    """Subtract from W_U and b_U their mean over the vocabulary.

    Identity: each position's logits all shift by the same amount, (x @ mean_v(W_U) + mean(b_U)),
    and softmax ignores a constant shift. Invariant: log-probabilities (not logits).
    Families: the same for all; for the padded vocabularies (OPT's 50272 rows, Pythia's 50304) the mean is
    over every row, padding included, which shifts every logit of a position alike, so softmax still ignores it.
    RMSNorm families: the same, with no b_U. Refused where the logits are softcapped (Gemma 2's final_softcap:
    softcap·tanh(logits / softcap) is not shift-invariant, so the shift would change the probabilities).
    """
    if getattr(model, "final_softcap", None):
        raise ValueError(
            f"center_unembed: {type(model).__name__} softcaps its logits (final_softcap {model.final_softcap}), "
            "and tanh does not ignore a shift, so centring the unembedding would change its predictions; it is not applied"
        )
    # Applied twice, the second call changes nothing but rounding: the means it subtracts are already 0.
    _untie_unembed(model)
    if model.ln_final is not None:
        model.W_U -= model.W_U.mean(dim=-1, keepdim=True)
        if model.b_U is not None:  # RMSNorm families have none
            model.b_U -= model.b_U.mean()
    return model


@torch.no_grad()
def fold_value_biases(model: GPT2) -> GPT2:
    """Move the value bias b_V into the output bias: b_O += Σ_h b_V[h // group] @ W_O[h], then b_V = 0.

    Identity: z_q = Σ_k pattern[q, k]·(v_k + b_V) = Σ_k pattern[q, k]·v_k + b_V, because each row of
    the attention pattern sums to 1; so b_V reaches attn_out as the constant b_V @ W_O.
    Invariant: attn_out, the residual stream and logits; hook_v and hook_z change by b_V.
    Families: the rows still sum to 1 under GPT-Neo's local window (fewer keys, still a softmax) and with
    GPT-NeoX's rotation, which turns q and k and never v. With grouped-query attention (Llama's families) query
    head h reads value head h // group, group = n_heads / n_kv_heads (1 elsewhere), and its b_V with it. Where a
    post-norm follows the attention (OLMo 2, Gemma), what moves stays inside the sum that it normalises.
    """
    # Applied twice, the second call changes nothing: b_V is 0, so it adds exactly 0 to b_O.
    for block in model.blocks:
        attn = block.attn
        b_V = attn.b_V.repeat_interleave(attn.W_O.shape[0] // attn.b_V.shape[0], dim=0)  # [n_heads, d_head]
        attn.b_O += torch.einsum("he,hed->d", b_V, attn.W_O)
        attn.b_V.zero_()
    return model


def drop_unembed(model: GPT2) -> GPT2:
    """Remove ln_final and the unembedding: the model then gives the residual stream (`unembed=False`)
    and refuses to give logits. Invariant: the residual stream and every hook before ln_final."""
    model.ln_final = None
    model.W_U = model.b_U = None
    return model


def process(model: GPT2, unembed: bool = True) -> GPT2:
    """The rewrites in the study's order. LayerNorm families: all four, so folded LayerNorms and a zero-mean
    residual stream. RMSNorm families: the pre-norms' gains folded, the unembedding centred (not where logits are
    softcapped) and the value biases folded; the writing weights are not centred (no identity without a centring
    reader), so the residual stream is the released model's own. unembed=False drops the unembedding first
    (`drop_unembed`), for studies that read no logits."""
    if not unembed:
        drop_unembed(model)
    if not uses_rms_norm(model):
        rewrites = (fold_layer_norm, center_writing_weights, center_unembed, fold_value_biases)
    elif getattr(model, "final_softcap", None):
        rewrites = (fold_layer_norm, fold_value_biases)
    else:
        rewrites = (fold_layer_norm, center_unembed, fold_value_biases)
    for rewrite in rewrites:
        rewrite(model)
    return model
