"""minigpt against Hugging Face transformers and TransformerLens, measured side by side in one run.

    pip install torch==2.13.0 -e ".[bench]"
    python -m benchmarks                  # real shapes: gpt2 and gpt2-xl checkpoints (about 7 GB on disk)
    python -m benchmarks --quick          # toy shapes, a smoke test

Builds random-weight checkpoints in the official layout (kept in --workdir for the next run), then:
1. forward throughput at gpt2 shape (batch 8 × 128) and gpt2-xl shape (4 × 64), contenders alternating,
   warm-up first, median of --repeats, also as a fraction of this machine's fp32 matmul peak;
2. load (+ process) of the gpt2-xl-shaped checkpoint, each contender in a fresh process: time and peak RSS;
3. `python -m analysis.growth` end to end at gpt2-medium and gpt2-xl shapes against its physical limit:
   (forward FLOPs ÷ the fp32 matmul peak measured in this run) + (one raw read of the checkpoint);
4. the study over 61, 1,000 and 20,000 prompts (JSON Lines) on the bundled model and a gpt2-medium-shaped
   checkpoint, each in a fresh process: peak RSS and the forward passes' tokens/s.
Prints every ratio and writes the tables to --out (BENCHMARKS.md).
"""

import argparse
import importlib.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks import forward
from benchmarks.checkpoints import write_checkpoint
from minigpt import Config

SHAPES = {  # name: (n_layers, d_model, n_heads, batch, n_pos)
    "gpt2": (12, 768, 12, 8, 128),
    "gpt2-xl": (48, 1600, 25, 4, 64),
}
QUICK_SHAPES = {"gpt2 (toy: 2 layers, d_model 64)": (2, 64, 4, 4, 32), "gpt2-xl (toy: 3 layers, d_model 96)": (3, 96, 4, 2, 32)}
GOALS = {
    "b_vs_hf": 1.0,
    "c_vs_hf_gpt2": 1.3,
    "peak_fraction_xl": 0.85,
    "load_rss": 1.1,
    "load_vs_hf": 1.0,
    "study_vs_limit": 2.0,
    "study_rss": 1.15,
    "corpus_rss": 1.15,
    "corpus_speed": 0.9,
}
STUDY_SHAPES = {"gpt2-medium": (24, 1024, 16, 0, 0), "gpt2-xl": (48, 1600, 25, 0, 0)}
QUICK_STUDY_SHAPES = {"toy (3 layers, d_model 96)": (3, 96, 4, 0, 0)}
CORPUS_SIZES = (61, 1000, 20000)  # prompts: the default 61, then the same cycled
CORPUS_SHAPE = ("gpt2-medium", (24, 1024, 16, 0, 0))  # the second shape of the corpus section, beside the bundled model


def log(message: str) -> None:
    print(message, flush=True)


def checkpoint(workdir: Path, shape) -> Path:
    n_layers, d_model, n_heads, *_ = shape
    directory = workdir / f"random-{n_layers}x{d_model}"
    if not (directory / "model.safetensors").exists():
        log(f"writing a {n_layers}-layer, d_model {d_model} checkpoint in the official layout to {directory}")
        write_checkpoint(directory, n_layers, d_model, n_heads, seed=0)
    return directory


def probe(contender: str, directory: Path) -> dict:
    result = subprocess.run([sys.executable, "-m", "benchmarks.probe", contender, str(directory)], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"probe {contender} failed:\n{result.stderr[-3000:]}")
    found = json.loads(result.stdout.strip().splitlines()[-1])
    # The study logs its forward passes' throughput: "<model>: N tokens in T s, R tokens/s"
    rates = re.findall(r": (\d+) tokens in [\d.]+ s, (\d+) tokens/s", result.stdout)
    if rates:
        found |= {"tokens": int(rates[-1][0]), "tokens_per_s": float(rates[-1][1])}
    return found


def default_prompt_lengths(directory: Path) -> tuple[list[int], Config]:
    """The study's default prompts as the checkpoint in directory tokenizes them: tokens each, BOS
    included, cut to the context; and the checkpoint's config."""
    import weights
    from analysis.inputs import DEFAULT_PROMPTS, read_prompts

    tokenizer, cfg = weights.read_tokenizer(directory), weights.read_config(directory)
    return [min(1 + len(tokenizer.encode(text)), cfg.n_ctx) for text in read_prompts(DEFAULT_PROMPTS).texts], cfg


def forward_flops(cfg: Config, n: int) -> float:
    """FLOPs of every block over n positions: W_Q, W_K, W_V, W_O, W_in, W_out per position, and q·k and
    pattern @ v over the n(n+1)/2 causal pairs."""
    matrices = 2 * (4 * cfg.d_model**2 + 2 * cfg.d_model * cfg.d_mlp)
    attention = 2 * 2 * cfg.d_model * n * (n + 1) / 2
    return cfg.n_layers * (n * matrices + attention)


def study_flops(directory: Path) -> float:
    """FLOPs the study's forward passes cannot avoid: every block over every token of the default prompts
    (BOS included), causal attention over the positions before each, and no unembedding."""
    lengths, cfg = default_prompt_lengths(directory)
    return sum(forward_flops(cfg, n) for n in lengths)


def study_products(directory: Path) -> float:
    """FLOPs of every matrix product the study runs, as it batches the default prompts: the forward passes
    over every position of every batch, padding included (the BOS/padding figure's batch and the padding
    of batches of similar length), figure 12's controls (each sampled early resid_mid vector through every
    layer's W_in, its own layer's and another's), and the weight measures (N_RANDOM random vectors per layer
    through the MLP, W_in again, W_V then W_O, and W_V once more)."""
    from analysis import engine, measures, study, weight_measures

    lengths, cfg = default_prompt_lengths(directory)
    d, d_mlp, L = cfg.d_model, cfg.d_mlp, cfg.n_layers
    batch_size = study.BATCH_SIZE  # the study's default
    picks = study.padding_picks(lengths, cfg.n_ctx)
    plan = engine.plan_batches(lengths, batch_size, picks, measures.PADDING_EXTRA, engine.BATCH_POSITIONS, cfg.n_ctx)
    total = sum(len(chosen) * forward_flops(cfg, width or max(lengths[i] for i in chosen)) for chosen, width in plan)
    early = min(sum(min(measures.EARLY_POSITIONS, n - 1) for n in lengths), engine.RESERVOIR)
    total += L * 2 * early * 2 * d * d_mlp  # figure 12's controls: two sets through each layer's W_in
    total += (
        L * weight_measures.N_RANDOM * (6 * d * d_mlp + 6 * d * d)
    )  # MLP (4 d d_mlp), W_in (2 d d_mlp), W_OV (4 d²), W_V (2 d²)
    return total


def warm_page_cache(path: Path) -> None:
    """Read the file once, so that the next reader finds it in the page cache."""
    with open(path, "rb", buffering=0) as f:
        while f.read(64 * 2**20):
            pass


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = next(
        (int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), 0
    )
    versions = [f"torch {torch.__version__} ({torch.get_num_threads()} threads)", f"python {platform.python_version()}"]
    for package in ("transformers", "transformer_lens"):
        if importlib.util.find_spec(package):
            from importlib.metadata import version

            versions.append(f"{package} {version(package.replace('_', '-'))}")
    return f"{cpu}, {os.cpu_count()} cores, {memory / 2**30:.0f} GiB; " + ", ".join(versions)


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="toy shapes and 2 repeats: a smoke test")
    parser.add_argument("--repeats", type=int, default=None, help="timed forward passes per contender (default 7, quick 2)")
    parser.add_argument(
        "--workdir", type=Path, default=Path.home() / ".cache" / "minigpt-bench", help="where the checkpoints are kept"
    )
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument(
        "--skip", action="append", default=[], choices=["forward", "load", "study", "corpus"], help="leave a part out"
    )
    args = parser.parse_args(argv)
    shapes = QUICK_SHAPES if args.quick else SHAPES
    repeats = args.repeats or (2 if args.quick else 7)
    with_tl = importlib.util.find_spec("transformer_lens") is not None
    if not with_tl:
        log("transformer_lens is not installed (pip install -e '.[bench]'): its rows are left out")
    args.workdir.mkdir(parents=True, exist_ok=True)
    # Sections 1 and 2 read the gpt2- and gpt2-xl-shaped checkpoints; write them only if one of those sections runs.
    needs_shapes = not {"forward", "load"} <= set(args.skip)
    directories = {name: checkpoint(args.workdir, shape) for name, shape in shapes.items()} if needs_shapes else {}
    large_name, large = list(directories.items())[-1] if directories else (None, None)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "# Benchmarks",
        "",
        f"`python -m benchmarks{' --quick' if args.quick else ''}` on {started}.",
        "",
        f"Machine: {machine()}.",
        "",
        "Random-weight checkpoints in the official layout; every ratio below comes from one run.",
        "",
    ]
    verdicts = []

    if "forward" not in args.skip:
        peak = forward.matmul_peak_flops(512 if args.quick else 2048)
        log(f"fp32 matmul peak of this machine: {peak / 1e9:.1f} GFLOP/s")
        lines += [
            "## 1. Forward throughput",
            "",
            f"fp32 matmul peak measured in this run: {peak / 1e9:.1f} GFLOP/s. "
            f"Median of {repeats} alternating timed passes after a warm-up. (bfloat16 rows are also "
            "given as a percentage of the float32 peak, so they can exceed 100%.)",
            "",
        ]
        for name, directory in directories.items():
            *_, batch, n_pos = shapes[name]
            log(f"forward throughput, {name} shape, batch {batch} × {n_pos}")
            # bfloat16 only at the first shape: at gpt2-xl shape a fourth copy of the weights would crowd 24 GiB
            rows = forward.measure(directory, batch, n_pos, repeats, with_tl, with_bf16=name == list(shapes)[0], log=log)
            hf_eager = next(r for r in rows if r["contender"].startswith("HF eager"))
            lines += [
                f"### {name} shape, batch {batch} × {n_pos} tokens",
                "",
                "| contender | tokens/s | × HF eager | % of matmul peak |",
                "|---|---:|---:|---:|",
            ]
            for r in rows:
                ratio = r["tokens_per_s"] / hf_eager["tokens_per_s"]
                fraction = r["flops"] / r["seconds"] / peak
                r |= {"vs_hf": ratio, "peak_fraction": fraction}
                lines.append(f"| {r['contender']} | {r['tokens_per_s']:,.0f} | {ratio:.2f} | {fraction:.0%} |")
                log(f"  {r['contender']:55s} {r['tokens_per_s']:10,.0f} tok/s  ×{ratio:.2f} HF eager  {fraction:.0%} of peak")
            lines.append("")
            b = next(r for r in rows if r["contender"].startswith("minigpt (b)"))
            c = next(r for r in rows if r["contender"].startswith("minigpt (c)"))
            verdicts.append(("(b) capture-all ≥ 1.0× HF eager", name, f"{b['vs_hf']:.2f}×", b["vs_hf"] >= GOALS["b_vs_hf"]))
            if name == list(shapes)[0]:
                verdicts.append(
                    ("(c) norms only ≥ 1.3× HF eager", name, f"{c['vs_hf']:.2f}×", c["vs_hf"] >= GOALS["c_vs_hf_gpt2"])
                )
            else:
                best = max(b["peak_fraction"], c["peak_fraction"])
                verdicts.append(
                    (
                        "minigpt ≥ 85% of matmul peak",
                        name,
                        f"{c['peak_fraction']:.0%} (c), {b['peak_fraction']:.0%} (b)",
                        best >= GOALS["peak_fraction_xl"],
                    )
                )

    if "load" not in args.skip:
        log(f"load + process of the {large_name}-shaped checkpoint, each in a fresh process")
        contenders = ["raw", "minigpt", "hf", "hf-read"] + (["tl"] if with_tl else [])
        results = {c: [] for c in contenders}
        for _ in range(1 if args.quick else 3):
            for c in contenders:
                warm_page_cache(large / "model.safetensors")  # TransformerLens's 20 GB evicts it: nobody reads from disk
                results[c].append(probe(c, large))
                log(f"  {c:8s} {results[c][-1]['seconds']:6.1f} s  peak RSS {gib(results[c][-1]['peak_rss'])}")
        size = results["raw"][0]["checkpoint_bytes"]
        median = {c: {k: statistics.median(r[k] for r in rs) for k in ("seconds", "peak_rss")} for c, rs in results.items()}
        labels = {
            "raw": "raw safetensors read (every tensor)",
            "minigpt": "minigpt weights.load(processed=True)",
            "hf": "HF GPT2LMHeadModel.from_pretrained (file mapped, weights read on first use)",
            "hf-read": "HF from_pretrained, then every weight used once",
            "tl": "TransformerLens bridge + enable_compatibility_mode()",
        }
        lines += [
            f"## 2. Load + process, {large_name} shape ({gib(size)} file)",
            "",
            "Each in a fresh process, after the file is read once into the page cache; median of the runs. Peak RSS "
            "includes the imports.",
            "",
            "| loader | seconds | × raw read | peak RSS | × file size |",
            "|---|---:|---:|---:|---:|",
        ]
        for c, m in median.items():
            vs_raw, vs_file = m["seconds"] / median["raw"]["seconds"], m["peak_rss"] / size
            lines.append(f"| {labels[c]} | {m['seconds']:.1f} | {vs_raw:.2f} | {gib(m['peak_rss'])} | {vs_file:.2f} |")
        lines.append("")
        mg = median["minigpt"]
        verdicts.append(
            ("load peak RSS ≤ 1.1× file", large_name, f"{mg['peak_rss'] / size:.2f}×", mg["peak_rss"] / size <= GOALS["load_rss"])
        )
        vs_hf = mg["seconds"] / median["hf-read"]["seconds"]
        verdicts.append(
            ("load time ≤ HF from_pretrained + every weight used", large_name, f"{vs_hf:.2f}×", vs_hf <= GOALS["load_vs_hf"])
        )
        if "tl" in median:
            lines += [
                f"minigpt against TransformerLens: {median['tl']['peak_rss'] / mg['peak_rss']:.1f}× less memory, "
                f"{median['tl']['seconds'] / mg['seconds']:.1f}× faster.",
                "",
            ]

    if "study" not in args.skip:
        peak = forward.matmul_peak_flops(512 if args.quick else 2048)
        lines += [
            "## 3. The study end to end against its physical limit",
            "",
            "`python -m analysis.growth --model <checkpoint>` with the default prompts, in a fresh process, from load to "
            "report (imports excluded). Its limit: the forward FLOPs it cannot avoid (every block over every prompt "
            f"token, no unembedding) at the fp32 matmul peak measured in this run ({peak / 1e9:.1f} GFLOP/s), plus one raw "
            "read of the checkpoint (every tensor read into memory, in a fresh process, file in the page cache). "
            "Peak RSS includes the imports.",
            "",
            "The study's own matrix products are more than those forward FLOPs (`study_products`: every padded "
            "position, figure 12's controls, the weight measures); the last two columns give them, and the floor they "
            "set with the same read: what the study could take with every product at the peak and nothing else.",
            "",
            "| shape | file | forward FLOPs | limit | study | × limit | peak RSS | × file | products run "
            "| products + read, × limit |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, shape in (QUICK_STUDY_SHAPES if args.quick else STUDY_SHAPES).items():
            directory = checkpoint(args.workdir, shape)
            warm_page_cache(directory / "model.safetensors")
            raw = probe("raw", directory)
            flops, products = study_flops(directory), study_products(directory)
            limit = flops / peak + raw["seconds"]
            floor = (products / peak + raw["seconds"]) / limit
            log(f"the study at {name} shape: limit {limit:.1f} s ({flops / 1e12:.2f} TFLOP, read {raw['seconds']:.1f} s)")
            study = probe("study", directory)
            ratio = study["seconds"] / limit
            rss = f"peak RSS {gib(study['peak_rss'])} ({study['peak_ratio']:.2f}× the file)"
            log(f"  {study['seconds']:.1f} s = {ratio:.2f}× the limit, {rss}; its products alone, at the peak: {floor:.2f}×")
            lines.append(
                f"| {name} | {gib(raw['checkpoint_bytes'])} | {flops / 1e12:.3f} T | {limit:.1f} s "
                f"({flops / peak:.1f} + {raw['seconds']:.1f}) | {study['seconds']:.1f} s | {ratio:.2f} | "
                f"{gib(study['peak_rss'])} | {study['peak_ratio']:.2f} | {products / 1e12:.3f} T ({products / flops:.2f}×) | "
                f"{floor:.2f} |"
            )
            verdicts.append(("study ≤ 2× its limit", name, f"{ratio:.2f}×", ratio <= GOALS["study_vs_limit"]))
            verdicts.append(
                ("study peak RSS ≤ 1.15× file", name, f"{study['peak_ratio']:.2f}×", study["peak_ratio"] <= GOALS["study_rss"])
            )
        lines.append("")

    if "corpus" not in args.skip:
        import weights

        sizes = (61, 200) if args.quick else CORPUS_SIZES
        name, shape = CORPUS_SHAPE if not args.quick else ("toy", (3, 96, 4, 0, 0))
        lines += [
            "## 4. The study over a corpus: memory and speed against the number of prompts",
            "",
            "`python -m analysis.growth --prompts-file corpus.jsonl` with the default prompts cycled, each size in a fresh "
            "process. Peak RSS includes the imports; tokens/s is the forward passes' own rate, as the study logs it.",
            "",
            "| model | prompts | tokens | tokens/s | peak RSS | × peak at 61 prompts |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for label, directory in (("bundled", weights.BUNDLED_DIR), (f"{name} shape", checkpoint(args.workdir, shape))):
            runs = {}
            for n in sizes:
                log(f"the study over {n} prompts, {label}")
                runs[n] = probe(f"corpus-{n}", directory)
                log(f"  {runs[n]['tokens']} tokens, {runs[n]['tokens_per_s']:.0f} tokens/s, peak RSS {gib(runs[n]['peak_rss'])}")
            small, middle, large = (runs[n] for n in sizes[:1] + sizes[-2:])
            for n, r in runs.items():
                lines.append(
                    f"| {label} | {n:,} | {r['tokens']:,} | {r['tokens_per_s']:,.0f} | {gib(r['peak_rss'])} | "
                    f"{r['peak_rss'] / small['peak_rss']:.2f} |"
                )
            rss, speed = large["peak_rss"] / small["peak_rss"], large["tokens_per_s"] / middle["tokens_per_s"]
            verdicts.append(
                (f"peak RSS at {sizes[-1]:,} ≤ 1.15× at {sizes[0]} prompts", label, f"{rss:.2f}×", rss <= GOALS["corpus_rss"])
            )
            verdicts.append(
                (
                    f"tokens/s at {sizes[-1]:,} ≥ 0.9× at {sizes[-2]:,} prompts",
                    label,
                    f"{speed:.2f}×",
                    speed >= GOALS["corpus_speed"],
                )
            )
        lines.append("")

    if args.quick:  # toy shapes say nothing about the goals, which are set at the real shapes
        lines += ["Toy shapes (--quick): a smoke test; the goals are judged only at the real shapes."]
    else:
        lines += ["## Goals", "", "| goal | shape | measured | met |", "|---|---|---|---|"]
        lines += [f"| {goal} | {shape} | {value} | {'yes' if ok else '**no**'} |" for goal, shape, value, ok in verdicts]
        log("\n".join(f"{'met' if ok else 'MISSED':6s} {goal} ({shape}): {value}" for goal, shape, value, ok in verdicts))
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
