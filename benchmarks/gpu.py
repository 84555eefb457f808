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
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.checkpoints import write_checkpoint
from benchmarks.forward import forward_flops
from benchmarks.gpu_parts import (
    Table,
    compare_summaries,
    forward_rate,
    free_port,
    growth_ratios,
    last_json,
    load_only,
    machine,
    matmul_peak,
    peak_of_one_pass,
    positions_logged,
    profile_forward,
    run_python,
    study_in_process,
    summary_numbers,
    time_forward,
)
from benchmarks.probe import write_corpus

XL, MEDIUM = (48, 1600, 25), (24, 1024, 16)  # (n_layers, d_model, n_heads)
SMOKE_XL, SMOKE_MEDIUM = (3, 96, 4), (2, 64, 4)
GOAL_STUDY_SECONDS = 10.0
GOAL_PEAK_FRACTION = 0.5
TF32_TOLERANCE = 1e-3  # tests/test_gpu_path.py's bfloat16 tolerance for the growth ratio per layer
ROOT = Path(__file__).parent.parent


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
