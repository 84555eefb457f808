"""python -m analysis.dynamics --model REPO: a hub repository's training checkpoints, published as revisions
step<N> as Pythia's are, end to end through olah on 127.0.0.1 (a real hub protocol server, tests/conftest.py).

olah serves each git branch and tag of a mirror as a hub revision: list_repo_refs answers with the mirror's
branches and tags (olah/mirror/repos.py, LocalMirrorRepo.get_refs), and a download at revision "step4"
resolves that branch to its commit. So the repository below is laid out as Pythia's are, with nothing faked:
one branch per checkpoint (step0, step1, step2, step4, each its own weights), main at the last,
pytorch_model.bin only, and tokenizer.json instead of vocab.json and merges.txt. olah answers a revision a
mirror lacks as an unknown repository (401), which is why the command checks names against the refs itself.
"""

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import HubServer, commit_repo, git
from test_families import write_family
from test_tokenizer import trained_neox_like

import weights.revisions
from analysis import dynamics, inputs, over_training

ROOT = Path(__file__).parent.parent
REPO = "someone/pythia-tiny"
STEPS = (0, 1, 2, 4)
PROMPTS = "The quick brown fox jumps over the lazy dog.\nΚαλημέρα κόσμε, and a second line.\ndef f(x): return x ** 2\n"
# Pythia pads its vocabulary to a multiple of 128; the trained tokenizer here has 1,202 ids.
D_VOCAB = 1280


@pytest.fixture(scope="module")
def pythia_hub(tmp_path_factory):
    """olah serving someone/pythia-tiny (above) and someone/no-steps (main and a tag v1, no step<N> revision).
    Yields the server, each step's source folder and each step branch's commit."""
    root = tmp_path_factory.mktemp("pythia-hub")
    mirror = root / "mirrors" / "models" / REPO
    mirror.mkdir(parents=True)
    git(mirror, "init", "-q", "-b", "main")
    sources, commits = {}, {}
    for step in STEPS:
        folder = root / "sources" / f"step{step}"
        source = write_family(folder, "gpt_neox", seed=100 + step, weights_format="bin", d_vocab=D_VOCAB)
        (source / "vocab.json").unlink()
        (source / "merges.txt").unlink()
        (source / "tokenizer.json").write_text(trained_neox_like(False))
        for path in source.iterdir():
            shutil.copy(path, mirror / path.name)
        git(mirror, "add", "-A")
        git(mirror, "commit", "-q", "-m", f"step {step}")
        git(mirror, "branch", f"step{step}")
        sources[step], commits[f"step{step}"] = source, git(mirror, "rev-parse", "HEAD")
    commit_repo(root / "mirrors", "someone/no-steps", {"config.json": b"{}"})
    git(root / "mirrors" / "models" / "someone" / "no-steps", "tag", "v1")
    (root / "olah").mkdir()
    server = HubServer(root / "mirrors", root / "olah", refused=("someone/private",))
    (root / "prompts.txt").write_text(PROMPTS)
    yield server, sources, commits, root / "prompts.txt"
    server.stop()


def run_dynamics(prompts: Path, *args, env: dict) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "analysis.dynamics", "--prompts-file", str(prompts), "--device", "cpu", *map(str, args)]
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)


def offline(env: dict) -> dict:
    """The same cache, no hub: HF_HUB_OFFLINE=1, and the endpoint is the discard port, where nothing listens."""
    return env | {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}


def error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def repo_cache(hf_home: Path) -> Path:
    return hf_home / "hub" / f"models--{REPO.replace('/', '--')}"


def table(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@torch.no_grad()
def expected_mean_norms(source: Path, step: int, prompts: Path) -> np.ndarray:
    """The command's mean ‖resid_post‖ by layer, measured here from the folder the branch was committed from."""
    return over_training.measure(source, step, inputs.read_prompts(prompts), torch.device("cpu"), 8).mean_norm


def test_named_revisions_are_measured_from_their_own_branches(pythia_hub, tmp_path):
    server, sources, commits, prompts = pythia_hub
    env = server.env(tmp_path / "hf")
    result = run_dynamics(prompts, "--model", REPO, "--revisions", "step4,step0", "--out", tmp_path / "out", env=env)
    assert result.returncode == 0, result.stderr
    assert f"downloading {REPO} at step0 (1 of 2)" in result.stdout and f"downloading {REPO} at step4 (2 of 2)" in result.stdout
    (run,) = json.loads((tmp_path / "out" / "summary.json").read_text())["runs"]
    assert run["label"] == "pythia-tiny" and run["repo"] == REPO and run["directory"] is None
    assert run["revisions"] == [{"step": s, "revision": f"step{s}", "commit": commits[f"step{s}"]} for s in (0, 4)]
    assert [row["step"] for row in run["steps"]] == [0, 4] and run["final_step"] == 4
    assert all(row["tokens"] is None and row["val_loss"] is None for row in run["steps"])  # not known, not invented
    rows = table(tmp_path / "out" / "layers.csv")
    for step in (0, 4):
        found = [float(row["mean_resid_post"]) for row in rows if row["step"] == str(step)]
        np.testing.assert_allclose(found, expected_mean_norms(sources[step], step, prompts), rtol=1e-5)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| pythia-tiny | 4 | 4 | – | – | ×" in report and re.search(r"^\| 0 \| – \| – \| ×", report, re.M)
    assert "Revisions step0, step4 of the hub repository someone/pythia-tiny" in report
    assert len(list((tmp_path / "out" / "pythia-tiny").glob("*.png"))) == 4
    snapshots = repo_cache(tmp_path / "hf") / "snapshots"
    assert sorted(p.name for p in snapshots.iterdir()) == sorted(commits[f"step{s}"] for s in (0, 4))
    for snapshot in snapshots.iterdir():  # what Pythia's step branches hold, and nothing else was asked for
        assert sorted(p.name for p in snapshot.iterdir()) == ["config.json", "pytorch_model.bin", "tokenizer.json"]


def test_the_default_picks_every_step_branch_and_offline_the_cache_gives_the_same_numbers(pythia_hub, tmp_path):
    server, sources, _, prompts = pythia_hub
    online = server.env(tmp_path / "hf")
    first = run_dynamics(prompts, "--model", REPO, "--out", tmp_path / "first", env=online)
    assert first.returncode == 0, first.stderr
    assert f"no --revisions: 4 of the 4 step revisions of {REPO} on the hub" in first.stdout
    assert "step0, step1, step2, step4" in first.stdout and "downloading" in first.stdout
    steps = table(tmp_path / "first" / "steps.csv")
    assert [row["step"] for row in steps] == ["0", "1", "2", "4"]  # main (the same commit as step4) is not a step
    assert len({row["fit_rate"] for row in steps}) == 4  # each branch its own weights
    assert not (tmp_path / "first" / "runs-growth-rate.png").exists()  # one run: no comparison figures

    second = run_dynamics(prompts, "--model", REPO, "--out", tmp_path / "second", env=offline(online))
    assert second.returncode == 0, second.stderr
    assert f"4 of the 4 step revisions of {REPO} in the Hugging Face cache (the hub cannot be reached)" in second.stdout
    assert "step2: cached (3 of 4)" in second.stdout and "downloading" not in second.stdout
    for name in ("steps.csv", "layers.csv"):
        assert (tmp_path / "second" / name).read_text() == (tmp_path / "first" / name).read_text()

    third = tmp_path / "third"
    result = run_dynamics(prompts, "--model", REPO, "--revisions", "step0,step3", "--out", third, env=offline(online))
    assert result.returncode == 2 and not third.exists()
    assert error_line(result) == (
        f"error: {REPO}: step3 not in the Hugging Face cache, and the hub cannot be reached (offline, or HF_HUB_OFFLINE=1) "
        "to download it; the cache holds step0, step1, step2, step4; nearest to step3: step2, step4"
    )


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["--model", REPO, "--revisions", "step0,step3"],
            f"{REPO} has no revision step3; its 4 step revisions: step0, step1, step2, step4; nearest to step3: step2, step4",
        ),
        (
            ["--model", "someone/no-steps"],
            "someone/no-steps has no branches or tags named step<N> (its revisions: main, v1): no training "
            "checkpoints this command can measure",
        ),
        (["--model", "someone/private"], "someone/private: no such repository on the Hugging Face hub (or it is private)"),
        (  # offline, olah cannot know that a repository it lacks does not exist upstream; it says what it can
            ["--model", "someone/missing"],
            "someone/missing: the hub did not list its branches and tags (HTTP 404: Repository refs are not cached locally)",
        ),
    ],
    ids=["unknown-revision", "no-step-revisions", "private-or-unknown", "refs-refused"],
)
def test_what_the_hub_lacks_is_one_line_before_anything_is_downloaded(pythia_hub, tmp_path, args, expected):
    server, _, _, prompts = pythia_hub
    result = run_dynamics(prompts, *args, "--out", tmp_path / "out", env=server.env(tmp_path / "hf"))
    assert result.returncode == 2 and error_line(result).startswith(f"error: {expected}")
    assert not (tmp_path / "out").exists()
    cached = [p for p in (tmp_path / "hf" / "hub").rglob("*") if p.is_file() and p.name != "CACHEDIR.TAG"]
    assert cached == [] and "downloading" not in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give training runs (RUN_DIR…) or a hub repository (--model EleutherAI/pythia-160m)"),
        (["--revisions", "step0"], "--revisions names revisions of the hub repository that --model gives; add --model REPO"),
        (["--model", REPO, "RUN"], f"--model {REPO} and RUN_DIR (RUN): give a hub repository or training runs, not both"),
        (["--model", REPO, "--model", "b/c"], f"--model is given 2 times ({REPO}, b/c); it takes one repository"),
        (["--model", "pythia-160m"], "--model pythia-160m: not a hub repository id (OWNER/NAME, such as EleutherAI/pythia-160m)"),
        (["--model", REPO, "--revisions", "main"], "--revisions: 'main' is not named step<N>: the training step"),
        (["--model", REPO, "--revisions", "step1,step01"], "--revisions: 'step01' is not named step<N>"),
        (["--model", REPO, "--revisions", "step1,step1"], "--revisions: step1 is given twice"),
    ],
)
def test_arguments_that_cannot_go_together_are_one_line(args, message, tmp_path, capsys):
    assert dynamics.main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {message}")
    assert not (tmp_path / "out").exists()


def test_the_default_pick_of_pythias_154_step_branches():
    pythia = [0] + [2**i for i in range(10)] + list(range(1000, 143001, 1000))
    assert len(pythia) == 154
    assert weights.revisions.log_spaced(pythia, 12) == [0, 2, 8, 32, 64, 256, 512, 2000, 6000, 17000, 49000, 143000]
    assert weights.revisions.log_spaced([0, 1, 2, 4], 12) == [0, 1, 2, 4]
    assert weights.revisions.log_spaced([0, 1, 2, 4, 8, 16], 3) == [0, 4, 16]
