"""The pieces of benchmarks/gpu.py: the child processes it times (load alone, the study, one pass's peak), the
matmul peak, the forward timing and profile, summary comparison and the markdown table it writes."""

import json
import math
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).parent.parent


def log(message: str) -> None:
    print(f"[gpu benchmark {time.strftime('%H:%M:%S')}] {message}", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------
# Helpers run in fresh processes: `python -m benchmarks.gpu --load-only …`, `--study …`, `--peak-of-one-pass …`


def load_only(directory: str, device: str) -> dict:
    """weights.load as the study loads (processed, no unembedding) onto device, timed from the call to the last copy."""
    import weights

    device = torch.device(device)
    started = time.perf_counter()
    weights.load(directory, device=device, unembed=False)
    sync(device)
    return {"seconds": time.perf_counter() - started}


def study_in_process(args: list[str]) -> dict:
    """analysis.growth in this process; its exit status, seconds, and the GPU's peak memory. With
    MINIGPT_GPU_PROFILE=path, under torch.profiler and cProfile, their top entries written there."""
    from analysis import growth

    profile_to = os.environ.get("MINIGPT_GPU_PROFILE")
    started = time.perf_counter()
    if profile_to:
        import cProfile
        import io
        import pstats

        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        python = cProfile.Profile()
        with profile(activities=activities) as torch_profile:
            python.enable()
            status = growth.main(args)
            python.disable()
        text = io.StringIO()
        pstats.Stats(python, stream=text).sort_stats("cumulative").print_stats(25)
        key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
        Path(profile_to).write_text(
            f"python -m analysis.growth {' '.join(args)}\n\ntorch.profiler, top ops by {key}:\n"
            + torch_profile.key_averages().table(sort_by=key, row_limit=20)
            + "\n\ncProfile, top functions by cumulative time:\n"
            + text.getvalue()
        )
    else:
        status = growth.main(args)
    on_gpu = torch.cuda.is_available() and torch.cuda.is_initialized()
    peak = torch.cuda.max_memory_allocated() if on_gpu else None  # in tensors
    reserved = torch.cuda.max_memory_reserved() if on_gpu else None  # held by PyTorch's caching allocator
    return {"status": status, "seconds": time.perf_counter() - started, "peak_gpu_bytes": peak, "peak_reserved_bytes": reserved}


def peak_of_one_pass(n_layers: str, d_model: str, n_heads: str, width: str, batch: str, dtype: str) -> list[int]:
    """[measured, estimated] bytes of one forward pass of the study on the CPU (engine.per_position_norms on
    batch × width random tokens, a random model of that shape): the rise of peak resident memory over the
    memory held before it (VmHWM reset through /proc/self/clear_refs), and batching.bytes_per_position's
    estimate. The check of the formula that sizes GPU batches, made where there is no GPU."""
    from analysis.engine import batching, per_position_norms
    from minigpt import GPT2, Config
    from training.train import init_weights

    torch.set_num_threads(1)
    cfg = Config.sized(int(n_layers), int(d_model), int(n_heads))
    model = init_weights(GPT2(cfg), seed=0).to(getattr(torch, dtype)).requires_grad_(False)
    status = Path("/proc/self/status")

    def field(name: str) -> int:
        return int(re.search(rf"{name}:\s+(\d+) kB", status.read_text()).group(1)) * 1024

    per_position_norms(model, torch.randint(0, 1000, (1, 8)))  # first-call allocations out of the way
    before = field("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    per_position_norms(model, torch.randint(0, 1000, (int(batch), int(width))))
    measured = field("VmHWM") - before
    return [measured, batching.bytes_per_position(cfg, model.W_E.dtype, int(width)) * int(batch) * int(width)]


# ---------------------------------------------------------------------------------------------
# The measurements


def run_python(args: list[str], env: dict | None = None, timeout: float = 600) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env or os.environ
    )
    return result, time.perf_counter() - started


def last_json(result: subprocess.CompletedProcess):
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"exit status {result.returncode}: {(result.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(lines[-1])


def forward_rate(log_text: str) -> tuple[int, float] | None:
    """(tokens, tokens/s) of the forward passes, as the study logs them: "<model>: N tokens in T s, R tokens/s"."""
    found = re.findall(r": (\d+) tokens in [\d.]+ s, (\d+) tokens/s", log_text)
    return (int(found[-1][0]), float(found[-1][1])) if found else None


def positions_logged(log_text: str) -> str:
    found = re.findall(r"(\d+) positions at most", log_text)
    return found[-1] if found else "?"


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 5) -> float:
    """The dense matrix-product rate (FLOP/s) in dtype: the best of several n×n @ n×n products."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    a @ b
    sync(device)
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best


def growth_ratios(model, tokens: torch.Tensor) -> torch.Tensor:
    """Mean ‖resid_post‖ of layer l+1 over layer l (positions >= 1), from one forward pass of the study."""
    from analysis import engine

    norms = engine.per_position_norms(model, tokens)["resid_post"][:, :, 1:].double().mean((1, 2))  # [n_layers]
    return norms[1:] / norms[:-1]


def time_forward(model, tokens: torch.Tensor, device: torch.device, repeats: int) -> float:
    """The median seconds of one forward pass of the study (norms only), after a warm-up."""
    from analysis import engine

    engine.per_position_norms(model, tokens)
    sync(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        engine.per_position_norms(model, tokens)
        sync(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def profile_forward(model, tokens: torch.Tensor, device: torch.device, path: Path) -> None:
    from torch.profiler import ProfilerActivity, profile

    from analysis import engine

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(3):
            engine.per_position_norms(model, tokens)
        sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    path.write_text(
        f"3 forward passes, norms only, tokens {list(tokens.shape)}, {model.W_E.dtype}; top ops by {key}:\n"
        + prof.key_averages().table(sort_by=key, row_limit=20)
    )


def summary_numbers(out: Path) -> dict:
    def leaves(tree, path=""):
        if isinstance(tree, dict):
            return {k: v for key, sub in tree.items() for k, v in leaves(sub, f"{path}.{key}").items()}
        if isinstance(tree, list):
            return {k: v for i, sub in enumerate(tree) for k, v in leaves(sub, f"{path}[{i}]").items()}
        return {path: tree}

    return leaves(json.loads((out / "summary.json").read_text()))


def compare_summaries(mine: dict, theirs: dict) -> tuple[bool, float]:
    """(every count and text equal and every float within 1e-6 relative, the largest relative difference);
    `distributed` and the paths, which differ between runs by design, left out."""
    largest = 0.0
    for key, expected in theirs.items():
        if key.startswith(".distributed") or key.endswith((".prompts_file", ".source.path", ".source.directory")):
            continue
        found = mine.get(key)
        if isinstance(expected, float) and isinstance(found, float):
            if not (expected == found or (math.isnan(expected) and math.isnan(found))):
                largest = max(largest, abs(found - expected) / max(abs(expected), 1e-300))
        elif found != expected:
            return False, math.inf
    return largest <= 1e-6, largest


class Table:
    """The markdown table, rewritten to `path` after each row."""

    def __init__(self, path: Path, heading: str):
        self.path, self.heading, self.rows, self.notes = path, heading, [], []

    def add(self, what: str, value: str, goal: str = "") -> None:
        value = " ".join(value.split()).replace("|", "\\|")  # an error's lines, kept within one cell
        self.rows.append((what, value, goal))
        log(f"{what}: {value} {goal}")
        self.write()

    def note(self, text: str) -> None:
        self.notes.append(text)
        self.write()

    def write(self) -> None:
        lines = [self.heading, "", "| measured | value | goal |", "|---|---|---|"]
        lines += [f"| {what} | {value} | {goal} |" for what, value, goal in self.rows]
        lines += [""] + [f"- {note}" for note in self.notes]
        self.path.write_text("\n".join(lines) + "\n")


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return (
            f"{torch.cuda.get_device_name(device)} ({total / 2**30:.0f} GiB, {torch.cuda.device_count()} GPU(s)), "
            f"torch {torch.__version__}, CUDA {torch.version.cuda}, Python {platform.python_version()}"
        )
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), torch {torch.__version__}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
