"""Forward-pass throughput of every contender on one checkpoint, timed alternately in one process."""

import gc
import statistics
import time

import torch

import instrument
import weights
from analysis import engine
from minigpt import Config


def matmul_peak_flops(n: int = 2048, repeats: int = 10) -> float:
    """This machine's fp32 matrix-multiply rate (FLOP/s): the best of several n×n @ n×n products."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def forward_flops(cfg: Config, batch: int, n_pos: int, unembed: bool) -> float:
    """Multiply-add FLOPs of one forward pass, as the eager implementations compute it (full n_pos × n_pos scores)."""
    d, tokens = cfg.d_model, batch * n_pos
    per_token = cfg.n_layers * (2 * 4 * d * d + 2 * 2 * d * cfg.d_mlp + 2 * 2 * n_pos * d)
    if unembed:
        per_token += 2 * d * cfg.d_vocab
    return tokens * per_token


def contenders(directory, tokens: torch.Tensor, with_tl: bool, with_bf16: bool) -> dict:
    """{name: (callable running one forward pass, flops of that pass)}."""
    from transformers import GPT2LMHeadModel

    model, _ = weights.load(directory)  # processed, as the study runs it
    hf = GPT2LMHeadModel.from_pretrained(directory, attn_implementation="eager").eval()
    default_attention = "sdpa"  # what from_pretrained picks for GPT-2 when not told (transformers 5)
    batch, n_pos = tokens.shape
    full, no_unembed = forward_flops(model.cfg, batch, n_pos, True), forward_flops(model.cfg, batch, n_pos, False)

    def hf_run(implementation):
        def run():
            hf.set_attn_implementation(implementation)
            return hf(tokens, output_hidden_states=True)

        return run

    runs = {
        "minigpt (a): plain forward, logits": (lambda: model(tokens), full),
        "minigpt (b): capturing every hook": (lambda: instrument.run_with_cache(model, tokens), full),
        "minigpt (c): residual norms only, no unembedding": (lambda: engine.per_position_norms(model, tokens), no_unembed),
        "HF eager + hidden states": (hf_run("eager"), full),
        f"HF default ({default_attention}) + hidden states": (hf_run(default_attention), full),
    }
    if with_bf16:  # this CPU multiplies bfloat16 natively (avx512_bf16); LayerNorm statistics stay float32
        half, _ = weights.load(directory, dtype=torch.bfloat16)
        runs["minigpt (a) in bfloat16"] = (lambda: half(tokens), full)
        runs["minigpt (c) in bfloat16"] = (lambda: engine.per_position_norms(half, tokens), no_unembed)
    if with_tl:
        from transformer_lens.model_bridge import TransformerBridge

        bridge = TransformerBridge.boot_transformers(str(directory), device="cpu")
        runs["TransformerLens bridge run_with_cache"] = (lambda: bridge.run_with_cache(tokens), full)
    return runs


@torch.no_grad()
def measure(directory, batch: int, n_pos: int, repeats: int, with_tl: bool, with_bf16: bool = False, log=print) -> list[dict]:
    tokens = torch.randint(0, 50257, (batch, n_pos), generator=torch.Generator().manual_seed(0))
    runs = contenders(directory, tokens, with_tl, with_bf16)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for run, _ in runs.values():  # warm-up: first calls allocate and pick kernels
        run()
    for repeat in range(repeats):
        for name, (run, _) in runs.items():  # alternate, so drift in the machine's speed hits all alike
            start = time.perf_counter()
            result = run()
            times[name].append(time.perf_counter() - start)
            del result
        log(f"  repeat {repeat + 1}/{repeats} done")
    rows = [
        {
            "contender": name,
            "seconds": statistics.median(times[name]),
            "tokens_per_s": batch * n_pos / statistics.median(times[name]),
            "flops": flops,
            "all_seconds": times[name],
        }
        for name, (_, flops) in runs.items()
    ]
    del runs
    gc.collect()  # HF models hold reference cycles: free this shape's models before the next shape loads its own
    return rows
