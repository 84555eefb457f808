"""The study's GPU path, checked on the CPU: batches sized by the device (analysis/engine/batching.py), numbers that
do not depend on the batch size, half precision against float32, and benchmarks/gpu.sh --smoke run to its end."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import record
from test_corpus import values

import weights
from analysis import growth, inputs, report, study
from analysis.engine import batching, distributed
from analysis.progress import Progress
from minigpt import Config

ROOT = Path(__file__).parent.parent
XL = Config.sized(48, 1600, 25)  # gpt2-xl's shape
GIB = 1 << 30


# ---------------------------------------------------------------------------------------------
# Batches sized by the device


def test_on_cuda_the_positions_come_from_the_free_memory_and_the_models_shape(monkeypatch):
    """torch.cuda.mem_get_info stubbed: the formula, its cap, and the CPU's fixed size."""
    free = {"bytes": 3 * GIB, "reserved": 0, "allocated": 0}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free["bytes"], 80 * GIB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: free["reserved"])  # PyTorch's cache
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: free["allocated"])
    cuda = torch.device("cuda:0")

    def positions(cfg=XL, dtype=torch.float32, width=128):
        return batching.batch_positions(cuda, cfg, dtype, width)

    # block 12·1600·4 + LayerNorm 3·1600·4, MLP 6400·(3·4 + 1), attention 25·128·8, kept 6·48·4 bytes
    per_position = 76_800 + 19_200 + 83_200 + 25_600 + 1_152
    assert batching.bytes_per_position(XL, torch.float32, 128) == per_position
    assert positions() == int(batching.FREE_FRACTION * (3 * GIB - batching.RESERVE) // per_position) == 6256
    assert positions(width=1024) < 0.6 * positions()  # a row of scores per head: attention grows with the width
    assert positions(dtype=torch.bfloat16) > 1.4 * positions()  # half the bytes per activation
    assert positions(cfg=Config.sized(24, 1024, 16)) > 1.4 * positions()  # gpt2-medium: narrower
    free |= {"reserved": 2 * GIB, "allocated": GIB // 2}  # 1.5 GiB held by PyTorch's cache, unused: free to the study
    assert positions() == int(batching.FREE_FRACTION * (4.5 * GIB - batching.RESERVE) // per_position)
    free |= {"reserved": 0, "allocated": 0}
    free["bytes"] = 70 * GIB  # an H100 with gpt2-xl's weights on it
    assert positions() == batching.MAX_POSITIONS
    free["bytes"] = GIB // 2  # less than the reserve: one prompt at a time (collect.by_length runs it alone)
    assert positions() == 1
    assert batching.batch_positions(torch.device("cpu"), XL, torch.float32, 128) == batching.CPU_POSITIONS == 512
    assert batching.batch_positions(torch.device("mps"), XL, torch.float32, 128) == 512  # no free-memory query there


def test_the_per_position_estimate_covers_one_pass_measured_on_the_cpu():
    """The formula against the peak resident memory of one forward pass of the study, in a fresh process: the
    memory the formula gives a pass (estimate / FREE_FRACTION) must hold it, and the estimate must not be more
    than 2.5 times what it covers (or GPUs would run small batches). Attention-bound (width 512, 16 heads) and
    d_model-bound (width 64, d_model 512); float32 and bfloat16. Measured: estimate/peak 1.07, 1.14 and 1.47,
    the same in repeated runs."""
    for shape in ("2 128 16 512 8 bfloat16", "2 128 16 512 8 float32", "2 512 8 64 32 float32"):
        result = subprocess.run(
            [sys.executable, "-m", "benchmarks.gpu", "--peak-of-one-pass", *shape.split()],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            # Each tensor over 64 KB gets a mapping of its own, returned when freed: the peak is then the live tensors'
            # (what a GPU's caching allocator holds), not what glibc's heap happens to keep. Without it the same
            # d_model-bound pass peaked at 145-221 MB from run to run, against 86 MB of live tensors.
            env=os.environ | {"OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"},
        )
        assert result.returncode == 0, result.stderr
        measured, estimate = json.loads(result.stdout.strip().splitlines()[-1])
        record(f"batching: estimate / measured peak of one pass ({shape})", estimate / measured, 2.5)
        assert measured <= estimate / batching.FREE_FRACTION, shape


def test_batch_positions_is_a_positive_integer(tmp_path, capsys):
    for bad, said in (("0", "--batch-positions must be at least 1, found 0"), ("many", "invalid int value: 'many'")):
        with pytest.raises(SystemExit) if bad == "many" else _no_raise() as raised:
            status = growth.main(["--model", "bundled", "--batch-positions", bad, "--out", str(tmp_path / "out")])
        status = raised.value.code if bad == "many" else status
        assert status == 2 and said in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


class _no_raise:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


# ---------------------------------------------------------------------------------------------
# The study's numbers: the same at any batch size, and in half precision within a stated tolerance


def study_summary(directory: Path, dtype=torch.float32, batch_positions: int | None = None, batch_size=study.BATCH_SIZE) -> dict:
    """summary.json's numbers (by path) of the study of a checkpoint on the default prompts, without the figures."""
    prompts_in = inputs.read_prompts(inputs.DEFAULT_PROMPTS)
    directory, source = weights.locate(str(directory))
    cfg = weights.read_config(directory)
    prompts, truncated = inputs.tokenize(prompts_in, weights.read_tokenizer(directory), cfg, "test", False)
    plan = study.Plan(str(directory), directory, source, cfg, prompts, truncated, study.check_fit_layers("test", cfg, None))
    log = Progress(open(os.devnull, "w"))
    result = study.analyse(plan, dtype, batch_size, torch.device("cpu"), log, batch_positions=batch_positions)
    found = report.summary([result], report.Inputs(prompts_in, sum(map(len, prompts)), truncated, cfg.n_ctx))
    return values(found["models"][str(directory)])


def relative(a: float, b: float) -> float:
    return 0.0 if a == b else abs(a - b) / max(abs(a), abs(b))


def test_the_study_does_not_depend_on_the_batch_size(small_checkpoint):
    """summary.json at 64, 200 and 512 positions per pass: every number within 1e-6
    relative, counts equal. A position's vectors do not depend on the prompts beside it or on the padding after
    it (attention is causal), and every sum is float64; what may change is the float32 rounding of the matrix
    products over a different number of rows, ~1e-7 of each norm."""
    runs = [study_summary(small_checkpoint, batch_positions=n) for n in (64, 200, 512)]
    largest = 0.0
    for other in runs[1:]:
        assert other.keys() == runs[0].keys()
        for key, expected in runs[0].items():
            if isinstance(expected, float) and not math.isnan(expected):
                largest = max(largest, relative(other[key], expected))
            else:
                assert other[key] == expected or (expected != expected and other[key] != other[key]), key
    record("summary.json at 64, 200, 512 positions per pass: relative difference", largest, 1e-6)


# bfloat16 keeps 8 bits of mantissa: each stored activation is rounded by up to 2^-9 = 2e-3 of itself. A norm over
# d_model entries averages those independent roundings (~2e-3/√d_model of the norm), and the mean over the ~1,000
# positions of the default prompts averages again; what remains is mostly the rounding carried along the residual
# stream from layer to layer, common to neighbouring layers, so it cancels in their ratio. Measured by this test:
# growth ratio per layer 4.4e-5 at 3 layers × d_model 64, 2.0e-4 at gpt2's shape (gpt2_checkpoint: 12 × 768; four
# minutes on two cores, so not run each time); mean norms 9.3e-4 and 4.9e-4.
BF16_RATIO_TOLERANCE = 1e-3  # the per-layer growth ratio of mean ‖resid_post‖, and the growth rates: 5x the largest
BF16_NORM_TOLERANCE = 5e-3  # each mean norm itself (every stream, every layer): 5x the largest


# gpt2's shape ("gpt2_checkpoint") measured 2.0e-4 above; add it to the list to run it again (four minutes).
@pytest.mark.parametrize("checkpoint", ["small_checkpoint"])
def test_bfloat16_matches_float32_within_the_stated_tolerance(checkpoint, request):
    """--dtype bfloat16 against float32 on the CPU test checkpoint (3 layers at d_model 64): LayerNorm's
    statistics, the softmax and every reduction of the study are float32 in both, so only the stored activations'
    rounding differs."""
    directory = request.getfixturevalue(checkpoint)
    full, half = study_summary(directory), study_summary(directory, torch.bfloat16)
    means = [k for k in full if k.startswith(".mean_norm.resid_post[")]
    n = np.array([full[k] for k in means])
    h = np.array([half[k] for k in means])
    ratio_error = np.abs((h[1:] / h[:-1]) / (n[1:] / n[:-1]) - 1).max()
    rates = [k for k in full if k.startswith(".growth.") and "rate" in k and isinstance(full[k], float)]
    rate_error = max(relative(half[k], full[k]) for k in rates)
    norm_error = max(relative(half[k], full[k]) for k in full if k.startswith(".mean_norm."))
    record(f"bfloat16 vs float32, growth ratio per layer ({checkpoint})", ratio_error, BF16_RATIO_TOLERANCE)
    record(f"bfloat16 vs float32, growth rates ({checkpoint})", rate_error, BF16_RATIO_TOLERANCE)
    record(f"bfloat16 vs float32, mean norms ({checkpoint})", norm_error, BF16_NORM_TOLERANCE)


# ---------------------------------------------------------------------------------------------
# benchmarks/gpu.sh, run to its end on the CPU


def test_the_gpu_benchmark_runs_to_its_end_on_the_cpu_with_smoke(tmp_path):
    """benchmarks/gpu.sh --smoke: every step of the GPU run, at tiny shapes on the CPU, gloo for NCCL (four studies
    and a torchrun of two: about 50 s of CPU time, 1-3 minutes of wall time on a busy 2-core machine)."""
    env = os.environ | {"OUT": str(tmp_path / "out"), "MINIGPT_GPU_NO_INSTALL": "1", "PYTHON": sys.executable}
    command = ["bash", "benchmarks/gpu.sh", "--smoke", "--workdir", str(tmp_path / "work")]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = (tmp_path / "out" / "gpu.md").read_text()
    rows = {line.split(" | ")[0].removeprefix("| "): line for line in table.splitlines() if line.startswith("| ")}
    for row in (
        "study at gpt2-xl shape",
        "load alone",
        "forward, norms only, float32",
        "forward, norms only, bfloat16",
        "TF32 matmuls against float32",
        "corpus at gpt2-medium shape, 200 prompts",
        "torchrun, 2 processes",
    ):
        found = [line for what, line in rows.items() if what.startswith(row)]
        assert found and "failed" not in found[0], (row, table)
    assert re.search(r"torchrun, 2 processes on the CPU.*\| gloo; summary equal to one process: yes", table)
    assert re.search(r"study at gpt2-xl shape.*\| [\d.]+ s \(forward passes [\d,]+ tokens/s, 512 positions per pass\)", table)
    assert "top ops by self_cpu_time_total" in (tmp_path / "out" / "profile-forward-bfloat16.txt").read_text()


def test_processes_sharing_a_gpu_meet_over_gloo():
    """NCCL refuses two ranks on one device ("Duplicate GPU detected"): torchrun --nproc-per-node 2 on a machine
    with one GPU gets gloo, whose sums are a few kilobytes on the CPU; one GPU per process gets NCCL."""
    cuda, cpu = torch.device("cuda:0"), torch.device("cpu")
    assert distributed.choose_backend(cuda, processes_here=2, gpus_here=2) == "nccl"
    assert distributed.choose_backend(cuda, processes_here=8, gpus_here=8) == "nccl"
    assert distributed.choose_backend(cuda, processes_here=2, gpus_here=1) == "gloo"
    assert distributed.choose_backend(cpu, processes_here=2, gpus_here=0) == "gloo"
