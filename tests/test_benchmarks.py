"""The benchmark command at toy size: it runs every part and writes its tables (no goal is judged here)."""

import subprocess
import sys


def test_benchmark_runs_at_toy_size(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--workdir", str(tmp_path / "work"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = out.read_text()
    for row in [
        "minigpt (a): plain forward",
        "minigpt (b): capturing every hook",
        "minigpt (c): residual norms only",
        "HF eager + hidden states",
        "HF default (sdpa)",
        "minigpt weights.load(processed=True)",
        "raw safetensors read",
        "HF GPT2LMHeadModel.from_pretrained",
        "The study end to end",
        "products + read, × limit",
        "The study over a corpus",
        "| bundled | 200 | 4,927 |",
    ]:
        assert row in table, row
    assert "fp32 matmul peak measured in this run" in table


def test_formats_benchmark_runs_at_toy_size(tmp_path):
    """`python -m benchmarks.formats`: every weights format written, loaded in a fresh process and measured."""
    command = [sys.executable, "-m", "benchmarks.formats", "--shape", "toy", "--shard-mb", "1", "--repeats", "1"]
    result = subprocess.run([*command, "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "GiB" in line]
    assert [row.split(" | ")[0] for row in rows] == [
        "| model.safetensors",
        "| model.safetensors shards + index",
        "| pytorch_model.bin",
        "| pytorch_model.bin shards + index",
    ]
    assert all(int(row.split(" | ")[1]) > 1 for row in rows[1::2])  # the sharded ones are in several files
