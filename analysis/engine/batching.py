"""How many positions one forward pass of the study takes: set by the device, the model's shape and its dtype.

On the CPU, CPU_POSITIONS: a matrix product of 512 rows already runs at this machine's peak, and more rows
only hold more memory. On a CUDA GPU, as many as the free memory holds (`cuda_positions`), up to
MAX_POSITIONS. `--batch-positions N` (analysis.growth) overrides both. The study's numbers do not depend
on the choice (tests/test_gpu_path.py runs it at three sizes): attention is causal, so a position's
vectors do not depend on the prompts beside it or on the padding after it, and every sum is float64.
"""

import torch

from minigpt import Config

CPU_POSITIONS = 512  # matrix products of 512 rows run at this CPU's peak, 100 at ~80%
# On CUDA: at most this many positions per pass. 16,384 rows through gpt2-xl's W_in (1,600 × 6,400) are 3.4·10¹¹
# FLOPs, ~0.35 ms at an H100's nominal bfloat16 dense peak (989 TFLOP/s): long beside the ~5 µs of launching the
# kernel, so more rows gain little (not yet measured on a GPU), while each pass's reductions ([quantity, layer,
# batch, pos], float32) are copied to the CPU whole.
MAX_POSITIONS = 16_384
# Of the free memory, what the passes may take: the rest is left to the CUDA caching allocator's rounding and
# fragmentation, cuBLAS's workspace and what other processes on the same GPU allocate meanwhile (torchrun with
# several processes on one GPU).
FREE_FRACTION = 0.6
RESERVE = 1 << 30  # bytes never counted as free: the CUDA context and cuBLAS's handles grow after the first pass


def bytes_per_position(cfg: Config, dtype: torch.dtype, width: int, n_quantities: int = 6, gated: bool = False) -> int:
    """An upper estimate of the memory one position of a batch holds at the widest point of a forward pass of
    the study (`collect.per_position_norms`), for a batch padded to `width` positions. e is the dtype's
    size in bytes; statistics taken in float32 count 4 bytes each.

    - the block's vectors of size d_model alive at once: the residual, LayerNorm's output, q, k and v and their
      copies in the heads' order for the score product, z and z side by side, attn_out, resid_mid:
      12·d_model·e (12·n_heads·d_head·e where the heads are wider than d_model, as Qwen 3's); LayerNorm's float32
      statistics (x, x − mean, its square): 3·d_model·4;
    - the MLP: its pre-activation, GELU's output, GELU's temporary, and the bool mask of the "active" count:
      d_mlp·(3e + 1); a gated MLP (`gated`) holds its second product x @ W_in too: d_mlp·(4e + 1);
    - attention: each position's row of scores, n_heads·width entries, in the model's dtype, and the softmax's
      float32 input and output: n_heads·width·(e + 8) in half precision; in float32 the scores are the
      softmax's input, n_heads·width·8;
    - what the pass keeps: n_quantities float32 numbers per layer (the [quantity, layer, batch, pos] buffer),
      on the device and again on the CPU.

    Checked on the CPU against the rise of peak resident memory over one pass (tests/test_gpu_path.py): the
    estimate is 1.02× the measured peak attention-bound (width 512, 16 heads; bfloat16), 1.06× (float32), and
    1.2–1.6× bound by d_model (512, width 64). On CUDA the caching allocator rounds each block up (to 2 MiB
    for large ones) and cuBLAS may take a workspace, which FREE_FRACTION leaves room for: not yet measured on
    a GPU (benchmarks/gpu.sh reports the peak GPU memory of a corpus run). The gated MLP's and the wider heads'
    terms, and the 11 quantities of an RMSNorm model, are counted the same way, not yet checked against a measurement.
    """
    e = torch.empty((), dtype=dtype).element_size()
    block = 12 * max(cfg.d_model, cfg.n_heads * cfg.d_head) * e + 3 * cfg.d_model * 4
    mlp = cfg.d_mlp * ((4 if gated else 3) * e + 1)
    attention = cfg.n_heads * width * (8 if e == 4 else e + 8)
    kept = n_quantities * cfg.n_layers * 4
    return block + mlp + attention + kept


def cuda_positions(cfg: Config, dtype: torch.dtype, width: int, free_bytes: int, **kinds) -> int:
    """Positions per pass on a GPU with free_bytes free (the weights already on it):
    FREE_FRACTION · (free_bytes − RESERVE) / bytes_per_position, within [1, MAX_POSITIONS]. A prompt longer
    than that still runs, alone in its batch (collect.by_length). kinds: bytes_per_position's n_quantities, gated."""
    usable = FREE_FRACTION * max(free_bytes - RESERVE, 0)
    return int(min(MAX_POSITIONS, max(1, usable // bytes_per_position(cfg, dtype, width, **kinds))))


def batch_positions(device: torch.device, cfg: Config, dtype: torch.dtype, width: int, **kinds) -> int:
    """The positions per forward pass for a model on `device` whose longest batch is `width` positions wide:
    on CUDA from the memory free now (torch.cuda.mem_get_info), with what PyTorch's caching allocator holds
    unused (a previous model's blocks, freed but kept for reuse), elsewhere CPU_POSITIONS. kinds: what
    bytes_per_position needs beyond the shape (how many quantities the pass keeps, a gated MLP)."""
    if device.type != "cuda":
        return CPU_POSITIONS
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return cuda_positions(cfg, dtype, width, free + cached, **kinds)
