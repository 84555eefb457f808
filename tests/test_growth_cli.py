"""`python -m analysis.growth` end to end on an official-layout checkpoint, and its bad-input errors."""

import csv
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import GPT2LMHeadModel

from analysis import growth

PROMPTS = [
    "The cat sat on the mat.",
    "A much longer prompt, which will need padding for the others in its batch.",
    "Hi",
    "def f(x): return x * 2",
    "Rain is expected tomorrow across the north of the country.",
]
FIGURES = [
    "01-norm-histograms",
    "02-positions-one-prompt",
    "04-growth-ratio-one-prompt",
    "05-bos-and-padding",
    "06-resid-pre-mid-post",
    "07-attn-and-mlp-out",
    "08-attention-weights",
    "09-mlp-random-inputs",
    "10-std-and-bounds",
    "11-mlp-weight-norms",
    "12-gelu-activation-rate",
    "13-reading-vs-writing",
    "14-appendix1-bound",
    "15-frobenius-claim",
]


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def report(small_checkpoint, prompts_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "report"
    assert (
        growth.main(
            ["--model", str(small_checkpoint), "--prompts-file", str(prompts_file), "--out", str(out), "--batch-size", "2"]
        )
        == 0
    )
    return out


def test_every_output_is_written(report, small_checkpoint):
    folder = report / small_checkpoint.name
    for stem in FIGURES:
        assert (folder / f"{stem}.png").stat().st_size > 10_000 and (folder / f"{stem}.svg").exists(), stem
    assert (report / "03-mean-norm-by-model.png").exists() and (report / "03-mean-norm-by-model.svg").exists()
    text = (report / "report.md").read_text()
    for stem in FIGURES:
        assert f"({small_checkpoint.name}/{stem}.png)" in text
    assert not list(report.parent.glob(".report.*")), "scratch folders left behind"


def test_summary_json_follows_the_schema(report, small_checkpoint):
    summary = json.loads((report / "summary.json").read_text())
    assert summary["prompts"] == len(PROMPTS)
    model = summary["models"][str(small_checkpoint)]
    L = model["n_layers"]
    assert L == 3 and model["revision"] == "local"
    assert set(model["mean_norm"]) == {"resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"}
    assert all(len(v) == L for v in model["mean_norm"].values())
    g = model["growth"]
    assert g["hook"] == "resid_post" and (g["first_layer"], g["last_layer"]) == (0, 2)
    assert {"rate", "fit_rate", "r2"} <= g.keys()
    assert model["appendix1"]["violations"] == 0
    with open(report / "layers.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == L and float(rows[1]["mean_resid_post"]) == pytest.approx(model["mean_norm"]["resid_post"][1])


def test_mean_norms_equal_an_independent_computation_from_hugging_face(report, small_checkpoint):
    """HF's hidden states, mean-centred (what weight processing does), BOS excluded: ≤ 1e-3 relative."""
    summary = json.loads((report / "summary.json").read_text())["models"][str(small_checkpoint)]
    hf = GPT2LMHeadModel.from_pretrained(small_checkpoint, attn_implementation="eager").eval()
    from weights.tokenizer_files import read_tokenizer

    tokenizer = read_tokenizer(small_checkpoint)
    last_block = []
    hf.transformer.h[-1].register_forward_hook(lambda m, i, out: last_block.append(out[0] if isinstance(out, tuple) else out))
    pre, post = [], []
    with torch.no_grad():
        for text in PROMPTS:
            out = hf(torch.tensor([[tokenizer.eot, *tokenizer.encode(text)]]), output_hidden_states=True)
            states = [*out.hidden_states[:-1], last_block[-1]]  # hidden_states[-1] has ln_f applied
            norms = torch.stack([(h - h.mean(-1, keepdim=True))[0, 1:].norm(dim=-1) for h in states])  # [L + 1, pos]
            pre.append(norms[:-1])
            post.append(norms[1:])
    for name, ours in (("resid_pre", pre), ("resid_post", post)):
        expected = torch.cat(ours, dim=1).mean(1).numpy()
        np.testing.assert_allclose(summary["mean_norm"][name], expected, rtol=1e-3, err_msg=name)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "analysis.growth", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "case, expected",
    [
        ("empty", "has no prompts: every line is empty"),
        ("latin1", "is not UTF-8: byte 0xe9 at offset 3"),
        ("too_long", r"prompt 2 \(line 3 of .*\) has 1101 tokens with BOS; .* accepts at most 1024"),
        ("unknown_model", "'gpt5': not a known model name. Known names: gpt2"),
        ("fit_layers", "--fit-layers 1:7 is outside .*'s 3 layers"),
    ],
)
def test_bad_input_gives_one_line_exit_2_and_leaves_out_untouched(case, expected, small_checkpoint, tmp_path, report):
    prompts = tmp_path / "prompts.txt"
    model = str(small_checkpoint)
    extra = []
    if case == "empty":
        prompts.write_text("\n  \n\n")
    elif case == "latin1":
        prompts.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    elif case == "too_long":
        prompts.write_text("short one\n\n" + "word " * 1100 + "\n")
    else:
        prompts.write_text("fine prompt\n")
    if case == "unknown_model":
        model = "gpt5"
    if case == "fit_layers":
        extra = ["--fit-layers", "1:7"]
    out = tmp_path / "out"
    shutil.copytree(report, out)  # a previous report: the one kind of folder a run may replace
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    result = run_cli("--model", model, "--prompts-file", str(prompts), "--out", str(out), *extra)
    assert result.returncode == 2, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1 and error_lines[0].startswith("error: "), result.stderr
    assert re.search(expected, error_lines[0]), error_lines[0]
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "prompts.txt"], "scratch folder left behind"


def test_a_single_prompt_still_gives_all_fifteen_figures(small_checkpoint, tmp_path):
    prompts = tmp_path / "one.txt"
    prompts.write_text("Only one prompt here.\n")
    out = tmp_path / "report"
    assert growth.main(["--model", str(small_checkpoint), "--prompts-file", str(prompts), "--out", str(out)]) == 0
    assert len(list(out.rglob("*.png"))) == 15


def test_a_one_layer_model_is_refused_clearly(tmp_path, capsys):
    from benchmarks.checkpoints import write_checkpoint

    directory = write_checkpoint(tmp_path / "one-layer", n_layers=1, d_model=32, n_heads=2)
    assert growth.main(["--model", str(directory), "--out", str(tmp_path / "out")]) == 2
    assert "has 1 layer; a growth rate needs at least 2" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "case, expected",
    [
        ("folder", r"prompts file .* is a folder; give a file with one prompt per line"),
        ("long_name", r"prompts file .*x{300}: File name too long"),
        ("surrogate", r"prompts file .*prompts.jsonl, line 2: the \"text\" holds a lone surrogate, U\+D800 at character 4"),
        ("deep_json", r"prompts file .*prompts.jsonl, line 1: JSON nested too deeply to read"),
        ("same_folder_name", r"--model .*a/final and --model .*b/final would share 'final', the report's folder"),
        ("twice", r"--model .* is given twice; name each model once"),
    ],
)
def test_prompt_files_and_model_names_that_cannot_work_are_one_line_before_loading(
    case, expected, small_checkpoint, tmp_path, capsys
):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"text": "fine"}\n')
    models = [str(small_checkpoint)]
    if case == "folder":
        prompts = tmp_path
    elif case == "long_name":
        prompts = tmp_path / ("x" * 300)
    elif case == "surrogate":
        prompts.write_text('{"text": "fine"}\n{"text": "abc\\ud800 def"}\n')
    elif case == "deep_json":
        prompts.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    elif case == "same_folder_name":
        models = []
        for parent in "ab":
            shutil.copytree(small_checkpoint, tmp_path / parent / "final")
            models.append(str(tmp_path / parent / "final"))
    elif case == "twice":
        models = models * 2
    loaded = []
    growth.weights.locate, locate = (lambda *a: loaded.append(a) or locate(*a)), growth.weights.locate
    try:
        named = [arg for model in models for arg in ("--model", model)]
        status = growth.main([*named, "--prompts-file", str(prompts), "--out", str(tmp_path / "out")])
    finally:
        growth.weights.locate = locate
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert re.search(expected, err), err
    assert not loaded, "a model was looked for before the refusal"
    assert not (tmp_path / "out").exists()
