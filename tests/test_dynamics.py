"""python -m analysis.dynamics on a tiny run: every checkpoint measured, the numbers wired to the right
tensors, the report written by analysis.growth's rules, and bad runs refused in one line."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import instrument
import weights
from analysis import dynamics, inputs, over_training, rates
from benchmarks.checkpoints import write_checkpoint

ROOT = Path(__file__).parent.parent


def test_steady_growth_is_the_bundled_models_bar():
    layers = np.arange(12)
    exponential = rates.growth_rate(10 * 1.05**layers, 1, 10)
    assert rates.steady_growth(exponential, 12) == {"r2": True, "rate": True, "span": True, "halves": True, "steady": True}
    square_root = rates.growth_rate(10 * np.sqrt(layers + 1), 1, 10)  # independent updates: slows down
    assert not rates.steady_growth(square_root, 12)["halves"]
    assert not rates.steady_growth(rates.growth_rate(10 * 1.01**layers, 1, 10), 12)["rate"]
    assert not rates.steady_growth(rates.growth_rate(10 * 1.05**layers, 2, 8), 12)["span"]  # 7 of 12 layers
    noisy = rates.growth_rate(10 * 1.05**layers * np.where(layers % 2, 1.3, 1 / 1.3), 1, 10)
    assert not rates.steady_growth(noisy, 12)["r2"]


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory):
    run = tiny_run[0]
    twin = run.parent / "tiny-twin"  # a second run, to get the comparison figures
    twin.symlink_to(run.name)
    out = tmp_path_factory.mktemp("dynamics") / "report"
    assert dynamics.main([str(run), str(twin), "--out", str(out), "--device", "cpu"]) == 0
    return run, out


def test_every_checkpoint_is_measured_and_written(report):
    run, out = report
    summary = json.loads((out / "summary.json").read_text())
    first = summary["runs"][0]
    assert [row["step"] for row in first["steps"]] == [0, 1, 2, 5, 12]
    with open(out / "steps.csv") as f:
        assert len(list(csv.DictReader(f))) == 10  # 5 checkpoints of 2 runs
    with open(out / "layers.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 5 * 3 and set(over_training.WEIGHTS) <= set(rows[0])
    figures = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert len(figures) == 2 * 4 + 2 and "runs-growth-rate.png" in figures and "tiny/02-growth-rate.png" in figures
    text = (out / "report.md").read_text()
    assert "| tiny | 3 | 12 |" in text and "![02-growth-rate.png](tiny/02-growth-rate.png)" in text


def test_the_numbers_come_from_the_right_tensors(report, tiny_run):
    run, out = report
    rows = [r for r in csv.DictReader(open(out / "layers.csv")) if r["run"] == "tiny" and r["step"] == "12"]
    final = run / "checkpoints" / "step-000012"
    # Gains as trained, read straight from the file (official names: h.{l}.ln_1.weight)
    state = load_file(final / "model.safetensors")
    for l, row in enumerate(rows):
        gain = state[f"h.{l}.ln_1.weight"]
        assert float(row["ln1_gain_rms"]) == pytest.approx(float(gain.pow(2).mean().sqrt()), rel=1e-6)
    # Mean ‖resid_post‖ without NormStats: the processed model's cache, BOS and nothing else left out
    model, tokenizer = weights.load(final)
    prompts = inputs.read_prompts(inputs.DEFAULT_PROMPTS)
    sums, count = np.zeros(3), 0
    for text in prompts.texts:
        tokens = torch.tensor([[tokenizer.eot, *tokenizer.encode(text)][: model.cfg.n_ctx]])
        _, cache = instrument.run_with_cache(model, tokens, names=lambda n: n.endswith("hook_resid_post"))
        sums += [float(cache[f"blocks.{l}.hook_resid_post"][0, 1:].norm(dim=-1).sum()) for l in range(3)]
        count += tokens.shape[1] - 1
    np.testing.assert_allclose([float(r["mean_resid_post"]) for r in rows], sums / count, rtol=1e-5)
    step = json.loads((out / "summary.json").read_text())["runs"][0]["steps"][-1]
    expected = rates.growth_rate(sums / count, *rates.default_fit_layers(3))
    assert step["fit_rate"] == pytest.approx(expected["fit_rate"], rel=1e-5) and step["val_loss"] is not None


def test_a_folder_without_checkpoints_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "empty-run").mkdir()
    assert dynamics.main([str(tmp_path / "empty-run"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "empty-run has no checkpoints" in err and "--checkpoints" in err
    assert not (tmp_path / "out").exists()


def test_runs_with_the_same_name_are_refused(tiny_run, tmp_path, capsys):
    run = tiny_run[0]
    other = tmp_path / "elsewhere" / run.name
    other.parent.mkdir()
    other.symlink_to(run)
    assert dynamics.main([str(run), str(other), "--out", str(tmp_path / "out")]) == 2
    assert "repeat: tiny, tiny" in capsys.readouterr().err


def two_layer_run(root: Path, step_record: str | None = None, log: str | bytes | None = None) -> Path:
    """A run folder holding one 2-layer checkpoint, with training_step.json and training_log.json as given."""
    run = root / "two-layer"
    folder = write_checkpoint(run / "checkpoints" / "step-000010", n_layers=2, d_model=64, n_heads=4, seed=3)
    if step_record is not None:
        (folder / "training_step.json").write_text(step_record)
    if log is not None:
        (run / "training_log.json").write_bytes(log if isinstance(log, bytes) else log.encode())
    return run


def test_a_two_layer_run_is_reported_without_halves(tmp_path):
    """Issue 27.8: a 2-layer model's fit spans layers 0-1, too short to halve (rates gives None for the halves);
    the report said so by crashing in report() after all the measuring. Through the command line."""
    run = two_layer_run(tmp_path, json.dumps({"step": 10, "tokens": 1280, "val_loss": 7.5}))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "analysis.dynamics", str(run), "--out", str(out), "--device", "cpu"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    text = (out / "report.md").read_text()
    assert "| two-layer | 2 | 10 | 1,280 | 7.500 |" in text
    rows = [line for line in text.splitlines() if line.startswith("| 10 |")]
    assert len(rows) == 1 and "| – |" in rows[0]
    assert json.loads((out / "summary.json").read_text())["runs"][0]["steps"][0]["rate_first_half"] is None


@pytest.mark.parametrize(
    "step_record, log, message",
    [
        ("{not json", None, "training_step.json: not a readable JSON training record (Expecting property name"),
        ("[1, 2]", None, "training_step.json: expected a JSON object (as python -m training writes), found list"),
        ('{"val_loss": "low"}', None, "training_step.json: 'val_loss' must be a number, found 'low'"),
        ('{"tokens": true}', None, "training_step.json: 'tokens' must be a number, found True"),
        ("[" * 100_000 + "]" * 100_000, None, "training_step.json: not a readable JSON training record (nested too deeply)"),
        (None, b"\xff\xfe{", "training_log.json: not a readable JSON training record ("),
        (None, '"a string"', "training_log.json: expected a JSON object (as python -m training writes), found str"),
    ],
    ids=["step-not-json", "step-a-list", "step-loss-text", "step-tokens-bool", "step-deep", "log-not-utf8", "log-a-string"],
)
def test_a_broken_training_record_is_one_line_before_anything_is_measured(tmp_path, capsys, step_record, log, message):
    run = two_layer_run(tmp_path, step_record, log)
    out = tmp_path / "out"
    assert dynamics.main([str(run), "--out", str(out), "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {run}/") and message in err, err
    assert "step 10" not in captured.out and not out.exists()  # refused before the first checkpoint was measured
