"""The study at GPU speed, measured in one run (issue 30): one markdown table, written to $OUT/gpu.md (or --out).

    bash benchmarks/gpu.sh                  # on a GPU machine: minigpt's dependencies from pip, then this
    python -m benchmarks.gpu --smoke        # the same steps on the CPU at tiny shapes, gloo for NCCL (the tests run it)

Checkpoints are built as benchmarks/checkpoints.py builds them (random weights, the official layout), at gpt2-xl's
and gpt2-medium's shapes; nothing is downloaded. Then, each row of the table:
1. the study at gpt2-xl shape on the default prompts, `python -m analysis.growth` in a fresh process, from its
   start to the report written; and load alone (weights.load, processed, onto the GPU) in another;
2. the forward pass of the study (engine.per_position_norms: norms only, no unembedding) at gpt2-xl shape,
   float32 and bfloat16, in tokens/s and as a fraction of the dense matrix-product peak in that dtype, measured
   in this run with a large matmul; and TF32 (float32 matmuls in TF32) against float32: the growth ratio per layer;
3. the study over 10,000 prompts (the default ones cycled, JSON Lines) at gpt2-medium shape: the forward passes'
   tokens/s and the peak GPU memory;
4. torchrun with 2 processes (one per GPU where there are 2, else both on cuda:0): summary.json against one
   process's. NCCL where each process has its own GPU; processes sharing one GPU meet over gloo (NCCL refuses
   two ranks on one device).
Goals (issue 30): the gpt2-xl study in 10 s or less; the bfloat16 forward at 50% of peak or more. A goal missed
writes a profile beside the table (profile-*.txt: torch.profiler's top ops, and for the study cProfile's top
functions), so that the next person sees why. The table is rewritten after each row: a failure keeps the rows before.
"""

import argparse
import json
import math
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.checkpoints import write_checkpoint
from benchmarks.forward import forward_flops
from benchmarks.probe import write_corpus

XL, MEDIUM = (48, 1600, 25), (24, 1024, 16)  # (n_layers, d_model, n_heads)
SMOKE_XL, SMOKE_MEDIUM = (3, 96, 4), (2, 64, 4)
GOAL_STUDY_SECONDS = 10.0
GOAL_PEAK_FRACTION = 0.5
TF32_TOLERANCE = 1e-3  # tests/test_gpu_path.py's bfloat16 tolerance for the growth ratio per layer
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


def run(smoke: bool, out: Path, workdir: Path) -> int:
    device = torch.device("cpu" if smoke else "cuda")
    xl_shape, medium_shape = (SMOKE_XL, SMOKE_MEDIUM) if smoke else (XL, MEDIUM)
    n_corpus = 200 if smoke else 10_000
    out.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    if smoke:  # one thread per process, as torchrun gives each rank, so that one process computes as each rank does
        env |= {"OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"} if sys.platform == "linux" else {"OMP_NUM_THREADS": "1"}
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    shapes = f"{'tiny shapes (--smoke): ' if smoke else ''}xl {xl_shape}, medium {medium_shape} (n_layers, d_model, n_heads)"
    table = Table(
        out / "gpu.md", f"### `bash benchmarks/gpu.sh{' --smoke' if smoke else ''}`, {when}: {machine(device)}; {shapes}"
    )
    goals_judged = device.type == "cuda"

    started = time.perf_counter()
    xl_dir, medium_dir = (workdir / f"random-{n}x{d}" for n, d, _ in (xl_shape, medium_shape))
    for directory, (n_layers, d_model, n_heads) in ((xl_dir, xl_shape), (medium_dir, medium_shape)):
        if not (directory / "model.safetensors").exists():
            write_checkpoint(directory, n_layers, d_model, n_heads, seed=0)
    table.add("checkpoints written (benchmarks/checkpoints.py, official layout)", f"{time.perf_counter() - started:.1f} s")

    # 1. The study at gpt2-xl shape, start to report; load alone
    study = ["-m", "analysis.growth", "--model", str(xl_dir), "--device", device.type]
    result, seconds = run_python([*study, "--out", str(workdir / "xl-report")], env)
    (out / "study-xl.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        table.add("study at gpt2-xl shape, default prompts, start to report", f"failed: {result.stderr.strip()[-300:]}")
    else:
        rate = forward_rate(result.stdout)
        missed = goals_judged and seconds > GOAL_STUDY_SECONDS
        table.add(
            "study at gpt2-xl shape, default prompts, start to report",
            f"{seconds:.1f} s (forward passes {rate[1]:,.0f} tokens/s, {positions_logged(result.stdout)} positions per pass)",
            f"≤ {GOAL_STUDY_SECONDS:.0f} s: {'missed' if missed else 'met' if goals_judged else 'judged on a GPU'}",
        )
        if missed:
            profile_env = env | {"MINIGPT_GPU_PROFILE": str(out / "profile-study.txt")}
            rerun, _ = run_python(
                ["-m", "benchmarks.gpu", "--study", *study[2:], "--out", str(workdir / "xl-profiled")], profile_env
            )
            table.note(
                f"study goal missed: profile in profile-study.txt (exit status {rerun.returncode}); its log in study-xl.log"
            )
    result, _ = run_python(["-m", "benchmarks.gpu", "--load-only", str(xl_dir), device.type], env)
    try:
        table.add("load alone (weights.load, processed, onto the device), gpt2-xl shape", f"{last_json(result)['seconds']:.1f} s")
    except RuntimeError as error:
        table.add("load alone (weights.load, processed, onto the device), gpt2-xl shape", f"failed: {error}")

    # 3. The corpus at gpt2-medium shape (before this process puts a model on the GPU)
    corpus = write_corpus(workdir / "corpus.jsonl", n_corpus)
    args = ["--model", str(medium_dir), "--prompts-file", str(corpus), "--device", device.type, "--out", str(workdir / "corpus")]
    result, seconds = run_python(["-m", "benchmarks.gpu", "--study", *args], env)
    (out / "study-corpus.log").write_text(result.stdout + result.stderr)
    try:
        found, rate = last_json(result), forward_rate(result.stdout)
        peak = (
            ""
            if found["peak_gpu_bytes"] is None
            else f", peak GPU memory {found['peak_gpu_bytes'] / 2**30:.2f} GiB in tensors, "
            f"{found['peak_reserved_bytes'] / 2**30:.2f} GiB reserved"
        )
        table.add(
            f"corpus at gpt2-medium shape, {n_corpus:,} prompts{' (10,000 without --smoke)' if smoke else ''}",
            f"{rate[1]:,.0f} tokens/s over {rate[0]:,} tokens{peak}; {positions_logged(result.stdout)} positions per pass; "
            f"{seconds:.1f} s start to report",
        )
    except (RuntimeError, TypeError) as error:
        table.add(f"corpus at gpt2-medium shape, {n_corpus:,} prompts", f"failed: {error}")

    # 4. torchrun, 2 processes, against one process (the same --batch-positions, so the same batches)
    same = ["--model", str(medium_dir), "--batch-size", "8", "--batch-positions", "4096"]
    many_gpus = device.type == "cuda" and torch.cuda.device_count() >= 2
    # auto: cuda:LOCAL_RANK, one GPU each; on one GPU both ranks name cuda:0 (a bare "cuda" would be cuda:1 for rank 1)
    ranks_device = "auto" if many_gpus else ("cuda:0" if device.type == "cuda" else "cpu")
    one, _ = run_python(["-m", "analysis.growth", *same, "--device", device.type, "--out", str(workdir / "one")], env)
    rendezvous = ["--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(free_port())]
    two, _ = run_python(
        [
            "-m",
            "torch.distributed.run",
            *rendezvous,
            "-m",
            "analysis.growth",
            *same,
            "--device",
            ranks_device,
            "--out",
            str(workdir / "two"),
        ],
        env,
    )
    (out / "torchrun.log").write_text(two.stdout + two.stderr)
    where = "2 GPUs" if many_gpus else ("one GPU, both on cuda:0" if device.type == "cuda" else "the CPU")
    if one.returncode or two.returncode:
        failed = one if one.returncode else two
        table.add(f"torchrun, 2 processes on {where}", f"failed: {(failed.stderr.strip().splitlines() or ['?'])[-1]}")
    else:
        backend = re.search(r"torchrun: 2 processes over (\w+)", two.stdout)
        equal, largest = compare_summaries(summary_numbers(workdir / "two"), summary_numbers(workdir / "one"))
        table.add(
            f"torchrun, 2 processes on {where}, gpt2-medium shape",
            f"{backend.group(1) if backend else '?'}; summary equal to one process: {'yes' if equal else 'NO'} "
            f"(largest relative difference {largest:.1e}, counts equal)",
        )

    # 2. The forward pass at gpt2-xl shape, float32 and bfloat16, against the dense peak; TF32 against float32
    import weights
    from analysis import engine

    n_pos = 32 if smoke else 128
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        model, _ = weights.load(xl_dir, dtype=dtype, device=device, unembed=False)
        positions = engine.batching.batch_positions(device, model.cfg, dtype, n_pos)
        batch = max(1, min(positions, 64 if smoke else positions) // n_pos)
        tokens = torch.randint(0, model.cfg.d_vocab, (batch, n_pos), generator=torch.Generator().manual_seed(0)).to(device)
        seconds = time_forward(model, tokens, device, repeats=3 if smoke else 5)
        peak = matmul_peak(device, dtype, 256 if smoke else 8192)
        fraction = forward_flops(model.cfg, batch, n_pos, unembed=False) / seconds / peak
        missed = fraction < GOAL_PEAK_FRACTION
        goal = ""
        if dtype == torch.bfloat16:
            goal = (
                f"≥ {GOAL_PEAK_FRACTION:.0%} of peak: " + ("missed" if missed else "met") if goals_judged else "judged on a GPU"
            )
        table.add(
            f"forward, norms only, {name}, gpt2-xl shape, {batch} × {n_pos} tokens",
            f"{batch * n_pos / seconds:,.0f} tokens/s = {fraction:.1%} of the {name} dense peak ({peak / 1e12:.3g} TFLOP/s)",
            goal,
        )
        if dtype == torch.bfloat16 and (missed or smoke):
            profile_forward(model, tokens, device, out / "profile-forward-bfloat16.txt")
            why = "below the goal" if missed and goals_judged else "written in every --smoke run, so that the tests run it"
            table.note(f"bfloat16 forward profile in profile-forward-bfloat16.txt ({why})")
        if dtype == torch.float32:
            exact = growth_ratios(model, tokens)
            torch.backends.cuda.matmul.allow_tf32 = True
            tf32 = growth_ratios(model, tokens)
            torch.backends.cuda.matmul.allow_tf32 = False
            difference = float(((tf32 - exact).abs() / exact).max())
            table.add(
                "TF32 matmuls against float32: growth ratio per layer, largest relative difference",
                f"{difference:.1e}" + (" (no TF32 on the CPU)" if device.type != "cuda" else ""),
                f"≤ {TF32_TOLERANCE:.0e} to allow it: {'yes' if difference <= TF32_TOLERANCE else 'no'} (minigpt leaves it off)",
            )
        del model, tokens
        if device.type == "cuda":
            torch.cuda.empty_cache()
    table.note(f"whole run {time.perf_counter() - started:.0f} s, checkpoints in {workdir}; logs beside this table")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--load-only"]:
        print(json.dumps(load_only(*argv[1:3])))
        return 0
    if argv[:1] == ["--study"]:
        found = study_in_process(argv[1:])
        print(json.dumps(found))
        return found["status"]
    if argv[:1] == ["--peak-of-one-pass"]:
        print(json.dumps(peak_of_one_pass(*argv[1:7])))
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU, gloo for NCCL: runs anywhere")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-benchmark")), help="where gpu.md goes ($OUT)")
    parser.add_argument("--workdir", type=Path, help="checkpoints and reports (default: a new temporary folder)")
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print(
            "error: no CUDA GPU here (torch.cuda.is_available() is False); --smoke runs the same steps on the CPU",
            file=sys.stderr,
        )
        return 2
    if args.workdir:
        return run(args.smoke, args.out, args.workdir)
    with tempfile.TemporaryDirectory(prefix="minigpt-gpu-") as workdir:
        return run(args.smoke, args.out, Path(workdir))


if __name__ == "__main__":
    sys.exit(main())
