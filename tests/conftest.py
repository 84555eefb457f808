import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

# No test may reach past 127.0.0.1: huggingface_hub and transformers work from local files, except where a
# test points HF_ENDPOINT at its own hub server (olah, below) in a subprocess of its own.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
sys.path.insert(0, str(Path(__file__).parent))  # conftest.record
sys.path.insert(0, str(Path(__file__).parent.parent))  # benchmarks.checkpoints

from benchmarks.checkpoints import gpt2_vocab_files, save_weights, write_checkpoint
from minigpt import GPT2, Config
from training.train import TrainConfig, init_weights, train

torch.set_num_threads(min(2, torch.get_num_threads()))

# Largest differences measured by the parity tests, printed at the end of the run: {what: (value, bound)}.
MEASURED: dict[str, tuple[float, float]] = {}


def record(what: str, value: float, bound: float) -> None:
    MEASURED[what] = (max(value, MEASURED.get(what, (0.0, bound))[0]), bound)
    assert value <= bound, f"{what}: {value:.3g} exceeds {bound:.0e}"


def pytest_terminal_summary(terminalreporter):
    if MEASURED:
        terminalreporter.section("measured maxima (value <= bound)")
        for what, (value, bound) in sorted(MEASURED.items()):
            terminalreporter.write_line(f"{what:70s} {value:.2e} <= {bound:.0e}")


@pytest.fixture(scope="session")
def vocab_files():
    return gpt2_vocab_files()


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory):
    """A 3-layer, d_model 64 GPT-2 in the official layout: quick to load, real vocabulary."""
    return write_checkpoint(tmp_path_factory.mktemp("small"), n_layers=3, d_model=64, n_heads=4, seed=1)


@pytest.fixture(scope="session")
def gpt2_checkpoint(tmp_path_factory):
    """gpt2's full shape (12 layers, d_model 768, 12 heads), random weights, official layout."""
    return write_checkpoint(tmp_path_factory.mktemp("gpt2"), n_layers=12, d_model=768, n_heads=12, seed=2)


# ---------------------------------------------------------------------------------------------
# A real hub-protocol server on 127.0.0.1: olah, serving local git repositories as hub repositories.


def git(directory, *args) -> str:
    env = {
        "GIT_AUTHOR_NAME": "minigpt tests",
        "GIT_AUTHOR_EMAIL": "tests@localhost",
        "GIT_COMMITTER_NAME": "minigpt tests",
        "GIT_COMMITTER_EMAIL": "tests@localhost",
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(directory),
    }
    result = subprocess.run(["git", *args], cwd=directory, env=env, capture_output=True, text=True, check=True)
    return result.stdout.strip()


class HubServer:
    """olah on a free port of 127.0.0.1, offline (it never asks huggingface.co), serving `mirrors`:
    mirrors/models/OWNER/NAME is a git repository that clients see as the hub repository OWNER/NAME.
    The repositories in `refused` olah's proxy rules turn away as the hub does an unknown or private one
    (401, RepoNotFound); offline, olah cannot tell an unknown repository from one it has not cached."""

    def __init__(self, mirrors: Path, workdir: Path, refused: tuple[str, ...] = ()):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        config = workdir / "olah.toml"
        accessibility = "offline = true\n"
        if refused:  # olah's default rules allow every repository; of the rules matching a name, the last decides
            rules = [("*", "true"), ("*/*", "true"), *((repo, "false") for repo in refused)]
            accessibility += "proxy = [" + ", ".join(f'{{repo = "{repo}", allow = {allow}}}' for repo, allow in rules) + "]\n"
        config.write_text(
            f'[basic]\nhost = "127.0.0.1"\nport = {self.port}\nrepos-path = "{workdir / "cache"}"\n'
            f'mirrors-path = ["{mirrors}"]\n[accessibility]\n{accessibility}'
        )
        self.log = open(workdir / "olah.out", "w")
        command = [sys.executable, "-m", "olah.server", "-c", str(config), "--log-path", str(workdir / "logs")]
        self.process = subprocess.Popen(command, cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"olah did not start; see {workdir / 'olah.out'}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()

    def env(self, hf_home: Path) -> dict[str, str]:
        """The environment of a process that should reach this server as its hub, with its own cache."""
        env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
        return env | {"HF_ENDPOINT": self.endpoint, "HF_HOME": str(hf_home), "HF_HUB_DISABLE_TELEMETRY": "1"}


def commit_repo(mirrors: Path, repo_id: str, files: dict[str, Path | bytes]) -> str:
    """mirrors/models/OWNER/NAME as a git repository of one commit holding files {name: source file or bytes}."""
    repo = mirrors / "models" / repo_id
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    for name, content in files.items():
        if isinstance(content, bytes):
            (repo / name).write_bytes(content)
        else:
            shutil.copy(content, repo / name)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"{len(files)} files")
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture(scope="session")
def hub_mirrors(tmp_path_factory):
    """Hub repositories as git repositories, named like the real ones: openai-community/gpt2 with two commits
    of different weights (the older tagged v1); and, each in one of the other weights formats and holding
    files a download should leave behind, someone/gpt2-pickle (pytorch_model.bin only), someone/gpt2-sharded
    (safetensors shards), someone/gpt2-bin-sharded (.bin shards), someone/tokenizer-json (tokenizer.json
    instead of vocab.json and merges.txt), someone/flax-only (no weights minigpt reads) and
    someone/shard-missing (an index naming a shard the repository lacks).
    Returns (mirrors folder, {what: commit or source directory})."""
    root = tmp_path_factory.mktemp("hub")
    mirrors, sources = root / "mirrors", root / "sources"
    repo = mirrors / "models" / "openai-community" / "gpt2"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    facts = {}
    for seed, label in ((21, "older"), (22, "newer")):
        source = write_checkpoint(sources / label, n_layers=3, d_model=64, n_heads=4, seed=seed, n_ctx=128)
        for path in source.iterdir():
            shutil.copy(path, repo / path.name)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"{label} weights")
        facts[label] = git(repo, "rev-parse", "HEAD")
        facts[f"{label}_dir"] = source
    git(repo, "tag", "v1", facts["older"])
    # A tokenizer.json in GPT-2's form (openai-community/gpt2 carries one): fetched beside vocab.json and merges.txt,
    # which are what is read (weights.tokenizer_files.tokenizer_json_to_read).
    gpt2_form = {"normalizer": None, "pre_tokenizer": {"type": "ByteLevel", "use_regex": True}, "model": {"type": "BPE"}}
    decoys = {"tf_model.h5": b"not fetched", "tokenizer.json": json.dumps(gpt2_form).encode()}
    for label, seed, kwargs in (
        ("pickle", 23, dict(weights_format="bin")),
        ("sharded", 24, dict(max_shard_bytes=300_000)),
        ("bin-sharded", 25, dict(weights_format="bin", max_shard_bytes=300_000)),
    ):
        source = write_checkpoint(sources / label, n_layers=3, d_model=64, n_heads=4, seed=seed, n_ctx=128, **kwargs)
        extra = decoys | ({"pytorch_model.bin": b"not fetched: safetensors come first"} if label == "sharded" else {})
        commit_repo(mirrors, f"someone/gpt2-{label}", {path.name: path for path in source.iterdir()} | extra)
        facts[f"{label}_dir"] = source
    newer = facts["newer_dir"]
    small = {"config.json": newer / "config.json", "model.safetensors": b"not read by locate"}
    commit_repo(mirrors, "someone/tokenizer-json", small | {"tokenizer.json": b"{}", "vocab.json": newer / "vocab.json"})
    commit_repo(mirrors, "someone/flax-only", {"config.json": newer / "config.json", "flax_model.msgpack": b"flax"})
    partial = root / "partial"
    partial.mkdir()
    save_weights({"a": torch.zeros(300_000), "b": torch.zeros(300_000)}, partial, max_shard_bytes=1_000_000)
    commit_repo(mirrors, "someone/shard-missing", {"model.safetensors.index.json": partial / "model.safetensors.index.json"})
    return mirrors, facts


@pytest.fixture(scope="session")
def hub(hub_mirrors, tmp_path_factory):
    """One olah server for the whole test session."""
    server = HubServer(hub_mirrors[0], tmp_path_factory.mktemp("olah"))
    yield server
    server.stop()


def toy_corpus(n: int, seed: int) -> np.ndarray:
    """A repeating pattern with noise: learnable in a few steps, unlike uniform random tokens."""
    rng = np.random.default_rng(seed)
    pattern = np.tile(np.arange(100, 116), n // 16 + 1)[:n]
    noise = rng.random(n) < 0.1
    return np.where(noise, rng.integers(0, 500, n), pattern).astype(np.uint16)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A 3-layer model with the real vocabulary, trained 12 steps on toy tokens, with 5 checkpoints."""
    run = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = TrainConfig(
        steps=12, batch_size=4, seq_len=32, lr=1e-2, warmup_steps=2, eval_every=6, eval_batches=1, bf16=False, checkpoints=5
    )
    model = init_weights(GPT2(Config.sized(3, 32, 2, n_ctx=32)), seed=0)
    initial = model.W_E.detach().clone()
    history = train(model, toy_corpus(5_000, 0), toy_corpus(2_000, 1), cfg, progress=False, checkpoint_dir=run / "checkpoints")
    return run, cfg, model, initial, history
