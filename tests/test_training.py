"""The training loop, on a tiny model and a toy corpus, its checkpoint in the official layout, and the
training and corpus commands' --out rules (real processes where signals and exit codes matter)."""

import hashlib
import json
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import toy_corpus

import outdir
import weights
from minigpt import GPT2, Config
from training import corpus
from training.train import (
    BUNDLED,
    TrainConfig,
    checkpoint_steps,
    init_weights,
    learning_rate,
    make_optimizer,
    parse_args,
    train,
    unigram_loss,
)
from training.train import main as train_main


def test_training_lowers_the_loss_within_seconds():
    cfg = TrainConfig(steps=60, batch_size=8, seq_len=32, lr=1e-2, warmup_steps=5, eval_every=20, eval_batches=2, bf16=False)
    model = init_weights(GPT2(Config.sized(2, 32, 2, d_vocab=500, n_ctx=32)), seed=0)
    history = train(model, toy_corpus(20_000, 0), toy_corpus(5_000, 1), cfg, progress=False)
    assert history["val_loss"][-1] < 0.5 * np.log(500), history["val_loss"]  # far below uniform guessing
    assert np.mean(history["train_loss"][-5:]) < 0.5 * np.mean(history["train_loss"][:5])


def test_learning_rate_warms_up_then_decays_to_its_floor():
    cfg = TrainConfig(steps=1000, lr=1e-3, warmup_steps=100, min_lr_fraction=0.1)
    assert learning_rate(0, cfg) == 1e-5 and learning_rate(99, cfg) == 1e-3
    assert learning_rate(550, cfg) < learning_rate(200, cfg) < 1e-3
    assert abs(learning_rate(1000, cfg) - 1e-4) < 1e-12


def test_unigram_baseline_is_the_entropy_of_the_frequencies():
    train_tokens = np.array([0, 0, 0, 1], dtype=np.uint16)
    expected = -np.log(np.array([4, 4, 2]) / 6).mean()  # add-one counts: 3+1 and 1+1, over 6
    assert abs(unigram_loss(train_tokens, np.array([0, 0, 1]), d_vocab=2) - expected) < 1e-12


def test_a_trained_model_saves_in_the_official_layout(tmp_path, vocab_files):
    model = init_weights(GPT2(Config.sized(2, 32, 2, n_ctx=64)), seed=0)
    weights.save(model, tmp_path, vocab_json=vocab_files[0], merges_txt=vocab_files[1], dtype=torch.bfloat16)
    loaded, _ = weights.load(tmp_path, processed=False)
    assert loaded.W_E.dtype == torch.float32 and loaded.cfg == model.cfg
    torch.testing.assert_close(loaded.W_E, model.W_E.detach().to(torch.bfloat16).float())


# ---------------------------------------------------------------------------------------------
# Checkpoints over training and the weight-decay ablation


def decayed(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """{parameter name: the weight decay its group applies}, read off the optimizer itself."""
    return {name: group["weight_decay"] for group in optimizer.param_groups for name in group["names"]}


def test_each_ablation_decays_what_it_says_on_the_optimizer():
    model = GPT2(Config.sized(2, 32, 2, d_vocab=500, n_ctx=32))
    names = [name for name, _ in model.named_parameters()]
    # By name, as the docstring and docs/training-dynamics.md say: the matrices and embeddings are the
    # W_… parameters, the biases b_… (b_Q, b_K and b_V are [n_heads, d_head], two-dimensional, yet biases).
    gains = [n for n in names if n.endswith(".w")]
    matrices = [n for n in names if n.split(".")[-1].startswith("W_")]
    biases = [n for n in names if n.split(".")[-1].startswith("b_") or n.endswith(".b")]
    assert sorted(gains + matrices + biases) == sorted(names)
    assert {"blocks.0.ln1.w", "blocks.1.ln2.w", "ln_final.w"} <= set(gains) and {"W_E", "W_pos", "blocks.1.attn.W_Q"} <= set(
        matrices
    )
    assert {"blocks.0.attn.b_Q", "blocks.0.attn.b_K", "blocks.1.attn.b_V", "blocks.0.mlp.b_in", "ln_final.b"} <= set(biases)

    today = decayed(make_optimizer(model, TrainConfig(weight_decay=0.1)))
    assert {n for n, wd in today.items() if wd == 0.1} == set(matrices) and set(today) == set(names)
    with_gains = decayed(make_optimizer(model, TrainConfig(weight_decay=0.1, decay_gains=True)))
    assert {n for n, wd in with_gains.items() if wd == 0.1} == set(matrices) | set(gains)
    assert all(with_gains[n] == 0.0 for n in biases)
    assert set(decayed(make_optimizer(model, TrainConfig(weight_decay=0.0))).values()) == {0.0}
    # every parameter the optimizer holds is the model's, once
    held = [id(p) for group in make_optimizer(model, TrainConfig()).param_groups for p in group["params"]]
    assert sorted(held) == sorted(id(p) for p in model.parameters())


def test_checkpoint_steps_are_log_spaced_from_initialisation_to_the_end():
    steps = checkpoint_steps(1500, 14)
    assert steps[0] == 0 and steps[-1] == 1500 and steps == sorted(set(steps)) and len(steps) == 14
    gaps = np.diff(np.log(steps[4:]))  # past the first few (rounded to whole steps), equal ratios
    assert np.allclose(gaps, gaps.mean(), rtol=0.2)
    assert checkpoint_steps(10, 0) == [] and checkpoint_steps(10, 1) == [10] and checkpoint_steps(10, 2) == [0, 10]
    assert checkpoint_steps(3, 20) == [0, 1, 2, 3]


def test_training_saves_checkpoints_in_the_official_layout(tiny_run):
    run, cfg, model, initial, history = tiny_run
    folders = sorted((run / "checkpoints").iterdir())
    assert [f.name for f in folders] == [f"step-{s:06d}" for s in checkpoint_steps(12, 5)] == [
        "step-000000", "step-000001", "step-000002", "step-000005", "step-000012",
    ]  # fmt: skip
    first, _ = weights.load(folders[0], processed=False)
    last, _ = weights.load(folders[-1], processed=False)
    assert torch.equal(first.W_E, initial)  # step 0 is the initialisation, stored exactly (float32)
    assert torch.equal(last.W_E, model.W_E.detach()) and not torch.equal(last.W_E, initial)
    record = json.loads((folders[3] / "training_step.json").read_text())
    assert record["step"] == 5 and record["tokens"] == 5 * 4 * 32 and np.isfinite(record["val_loss"])
    assert record["train_loss"] == pytest.approx(np.mean(history["train_loss"][:5]))
    assert json.loads((folders[0] / "training_step.json").read_text())["train_loss"] is None


# ---------------------------------------------------------------------------------------------
# The commands' --out: the rules of outdir (new, empty, or their own previous output; anything else
# refused untouched; interrupted or failing, --out exactly as it was), as a user meets them.

TINY = ["--layers", "2", "--d-model", "32", "--heads", "2", "--n-ctx", "32", "--batch-size", "2", "--warmup-steps", "1"]
TINY += ["--eval-every", "1000", "--eval-batches", "1", "--bf16", "false"]


@pytest.fixture(scope="module")
def token_files(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("data")
    toy_corpus(5_000, 0).tofile(data / "train.bin")
    toy_corpus(2_000, 1).tofile(data / "val.bin")
    return data


def train_command(token_files: Path, out: Path, *flags) -> list[str]:
    return [sys.executable, "-m", "training", "--data", str(token_files), "--out", str(out), *TINY, *map(str, flags)]


@pytest.fixture(scope="module")
def previous_run(token_files, tmp_path_factory) -> Path:
    """A finished run of the command (3 steps, checkpoints 0, 1, 3); tests copy it before letting a run loose on it."""
    out = tmp_path_factory.mktemp("previous") / "run"
    assert train_main(["--data", str(token_files), "--out", str(out), *TINY, "--steps", "3", "--checkpoints", "3"]) == 0
    return out


@pytest.fixture
def run_copy(previous_run, tmp_path) -> Path:
    out = tmp_path / "run"
    subprocess.run(["cp", "-a", str(previous_run), str(out)], check=True)
    return out


def state(folder: Path) -> dict[str, tuple]:
    """Everything observable about the files below folder: content hash, mode and mtime of each."""
    found = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        found[str(path.relative_to(folder))] = (digest, info.st_mode, info.st_mtime_ns)
    return found


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_the_default_out_is_a_folder_of_its_own_and_the_bundled_model_is_refused_untouched(token_files, capsys):
    assert parse_args([]).out == Path("training-run")
    before = state(BUNDLED)
    assert train_main(["--data", str(token_files), "--out", str(BUNDLED), *TINY, "--steps", "1"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "is the shipped bundled model, which this command never overwrites" in line and "nothing was touched" in line
    assert state(BUNDLED) == before


def test_a_folder_of_checkpoints_it_did_not_write_is_refused_untouched(tiny_run, token_files, tmp_path, capsys):
    someones = tmp_path / "someones-checkpoints"
    subprocess.run(["cp", "-a", str(tiny_run[0]), str(someones)], check=True)  # checkpoints/, no marker
    before = state(tmp_path)
    assert train_main(["--data", str(token_files), "--out", str(someones), *TINY, "--steps", "1"]) == 2
    line = one_line(capsys.readouterr().err)
    assert re.search(r"holding 25 file\(s\) that this command did not write \(checkpoints/step-000000/config.json", line)
    assert state(tmp_path) == before


def test_a_previous_run_is_replaced_whole_and_marked(run_copy, token_files, tmp_path):
    old_steps = sorted(p.name for p in (run_copy / "checkpoints").iterdir())
    assert old_steps == ["step-000000", "step-000001", "step-000003"]
    assert train_main(["--data", str(token_files), "--out", str(run_copy), *TINY, "--steps", "2", "--checkpoints", "2"]) == 0
    assert sorted(p.name for p in (run_copy / "checkpoints").iterdir()) == ["step-000000", "step-000002"]
    marker = json.loads((run_copy / outdir.TRAINING_RUN.marker).read_text())
    written = {str(p.relative_to(run_copy)) for p in run_copy.rglob("*") if p.is_file()} - {outdir.TRAINING_RUN.marker}
    assert marker["format"] == outdir.TRAINING_RUN.format and set(marker["files"]) == written
    assert {"model.safetensors", "config.json", "training_log.json", "checkpoints/step-000002/model.safetensors"} <= written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"], "scratch left behind"
    assert weights.load(run_copy, processed=False)[0].cfg.n_layers == 2


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_mid_training_leaves_out_exactly_as_before(signum, run_copy, token_files, tmp_path):
    before = state(tmp_path)
    run = subprocess.Popen(
        train_command(token_files, run_copy, "--steps", "100000", "--checkpoints", "40"), stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    # Mid-run: the new run's checkpoints are being written, into the scratch folder beside --out.
    while not list(tmp_path.glob(".run.partial-*/checkpoints/step-000001/training_step.json")):
        assert run.poll() is None and time.monotonic() < deadline, "no checkpoint appeared in the scratch folder"
        time.sleep(0.1)
    run.send_signal(signum)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 128 + signum  # 130 for SIGINT, 143 for SIGTERM
    last = stderr.replace("\r", "\n").strip().splitlines()[-1]
    assert last == f"interrupted ({signal.Signals(signum).name}); {run_copy} unchanged", stderr
    assert state(tmp_path) == before


def test_a_failed_write_names_the_checkpoint_and_leaves_out_unchanged(run_copy, token_files, tmp_path):
    def limit():  # in the child: writes past 100 kB fail with EFBIG (a checkpoint here is ~6.5 MB)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    before = state(tmp_path)
    result = subprocess.run(
        train_command(token_files, run_copy, "--steps", "3", "--checkpoints", "3"),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"error: could not write the checkpoint in {tmp_path}/\.run\.partial-\d+-\w+/checkpoints/step-000000: "
        rf"File too large; {run_copy} is unchanged",
        last,
    ), result.stderr
    assert state(tmp_path) == before


def test_stop_after_ends_the_run_partway_through_its_schedule_and_keeps_it(token_files, tmp_path):
    out = tmp_path / "run"
    assert (
        train_main(
            ["--data", str(token_files), "--out", str(out), *TINY, "--steps", "12", "--checkpoints", "5", "--stop-after", "5"]
        )
        == 0
    )
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000000", "step-000001", "step-000002", "step-000005"]
    log = json.loads((out / "training_log.json").read_text())
    assert log["step"] == [0, 1, 2, 3, 4] and log["val_step"] == [4]
    record = json.loads((out / "checkpoints" / "step-000005" / "training_step.json").read_text())
    assert record["learning_rate"] == learning_rate(5, TrainConfig(**log["train"]))  # the 12-step schedule's
    last, _ = weights.load(out / "checkpoints" / "step-000005", processed=False)
    final, _ = weights.load(out, processed=False)  # stored in bfloat16
    torch.testing.assert_close(final.W_E, last.W_E.to(torch.bfloat16).float())


# The corpus command, on two tiny sources in place of the Debian packages.
FAKE_SOURCES = {"python3.11-doc": ["The function returns a value.\n"] * 20, "bible-kjv-text": ["In the beginning.\n"] * 20}


@pytest.fixture
def fake_sources(monkeypatch):
    monkeypatch.setattr(corpus, "check_sources", lambda: None)
    monkeypatch.setattr(corpus, "read_sources", lambda: FAKE_SOURCES)


def test_the_corpus_replaces_its_previous_output_and_refuses_anything_else_untouched(fake_sources, tmp_path, capsys):
    out = tmp_path / "data"
    assert corpus.main(["--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [outdir.CORPUS.marker, "provenance.json", "train.bin", "val.bin"]
    first = state(out)
    assert corpus.main(["--out", str(out)]) == 0  # its own previous output: replaced
    assert state(out).keys() == first.keys()
    (out / "my-notes.txt").write_text("mine")
    before = state(tmp_path)
    capsys.readouterr()
    assert corpus.main(["--out", str(out)]) == 2
    assert "holds a previous corpus and also 1 thing(s) this command did not write (my-notes.txt)" in one_line(
        capsys.readouterr().err
    )
    assert state(tmp_path) == before


def test_an_interrupt_while_the_corpus_is_built_leaves_out_exactly_as_before(fake_sources, tmp_path):
    out = tmp_path / "data"
    assert corpus.main(["--out", str(out)]) == 0
    before = state(tmp_path)
    script = (
        "import sys, time\n"
        "import training.corpus as corpus\n"
        "def slow():\n"
        "    print('reading sources', flush=True)\n"
        "    time.sleep(60)\n"
        "corpus.check_sources = lambda: None\n"
        "corpus.read_sources = slow\n"
        f"sys.exit(corpus.main(['--out', {str(out)!r}]))\n"
    )
    run = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert run.stdout.readline() == "reading sources\n"
    assert len(list(tmp_path.glob(".data.partial-*"))) == 1  # the scratch folder, beside --out
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 130 and one_line(stderr) == f"interrupted (SIGINT); {out} unchanged"
    assert state(tmp_path) == before


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--eval-every", "0"], "--eval-every must be at least 1, found 0"),
        (["--heads", "0"], "--heads must be at least 1, found 0"),
        (["--layers", "0"], "--layers must be at least 1, found 0"),
        (["--batch-size", "0"], "--batch-size must be at least 1, found 0"),
        (["--n-ctx", "0"], "--n-ctx must be at least 1, found 0"),
        (["--lr", "nan"], "--lr must be a finite number, more than 0; found nan"),
        (["--steps", "0"], r"--steps must be at least 1, found 0 \(an untrained model is not a training run\)"),
        (["--vocab-too-small"], r"train.bin holds token id 60000 \(at index 7\); the vocabulary has 50257"),
        (["--bad-provenance"], r"provenance.json: cannot be read as JSON \(Expecting property name"),
    ],
)
def test_numbers_and_files_it_cannot_train_with_are_one_line_before_the_first_step(
    flags, expected, token_files, tmp_path, capsys
):
    data = token_files
    if flags[0] in ("--vocab-too-small", "--bad-provenance"):
        data = tmp_path / "data"
        subprocess.run(["cp", "-a", str(token_files), str(data)], check=True)
        if flags == ["--vocab-too-small"]:
            tokens = np.fromfile(data / "train.bin", dtype=np.uint16)
            tokens[7] = 60_000
            tokens.tofile(data / "train.bin")
        else:
            (data / "provenance.json").write_text("{not json\n")
        flags = []
    out = tmp_path / "run"
    began = time.perf_counter()
    assert train_main(["--data", str(data), "--out", str(out), *TINY, "--steps", "2", *flags]) == 2
    assert re.search(expected, one_line(capsys.readouterr().err))
    assert not out.exists() and time.perf_counter() - began < 10
