"""The small GPT-2 that minigpt trains and ships: it loads strictly, has learned something, and is the
study's default when the hub cannot be reached."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import weights
from minigpt import generate

SAMPLE = Path(__file__).parent / "data" / "validation_sample.txt"  # from held-out documents (see CORPUS.md)


@pytest.fixture(scope="module")
def bundled():
    return weights.load("bundled", processed=False)


def test_bundled_files_are_small_and_load_through_the_strict_loader(bundled):
    model, _ = bundled
    total = sum(f.stat().st_size for f in weights.hub.BUNDLED_DIR.iterdir())
    assert total <= 25 * 2**20, f"bundled files take {total / 2**20:.1f} MiB"
    assert model.cfg.n_layers >= 8 and model.source["revision"] == "bundled"


def test_validation_loss_beats_every_unigram_model(bundled):
    """The sample's own token frequencies are the best any unigram model can do on it; the model must beat that."""
    model, tokenizer = bundled
    tokens = tokenizer.encode(SAMPLE.read_text(encoding="utf-8"))
    n_ctx = model.cfg.n_ctx
    windows = torch.tensor([tokens[i : i + n_ctx + 1] for i in range(0, len(tokens) - n_ctx - 1, n_ctx)])
    with torch.no_grad():
        loss = F.cross_entropy(model(windows[:, :-1]).flatten(0, 1), windows[:, 1:].flatten()).item()
    predicted = windows[:, 1:].flatten().tolist()
    counts = np.array(list(Counter(predicted).values()), dtype=np.float64)
    unigram_entropy = float(-(counts / counts.sum() * np.log(counts / counts.sum())).sum())
    print(f"bundled model: validation-sample loss {loss:.3f} nats/token, best unigram {unigram_entropy:.3f}")
    assert loss < unigram_entropy - 0.5


def test_greedy_text_is_not_degenerate(bundled):
    model, tokenizer = bundled
    for prompt in ["The function returns", "And the LORD said unto"]:
        new = generate(model, tokenizer.encode(prompt), 24)[len(tokenizer.encode(prompt)) :]
        assert len(set(new)) >= 6, tokenizer.decode(new)


def test_study_defaults_to_the_bundled_model_offline_with_an_empty_cache(tmp_path):
    """Fresh machine, no hub: `python -m analysis.growth` says it uses the bundled model and writes the full report."""
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty-cache"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "analysis.growth", "--out", str(tmp_path / "report")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "model: the bundled model, because openai-community/gpt2 is not in the Hugging Face cache" in result.stdout
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert list(summary["models"]) == ["bundled"] and summary["prompts"] >= 60
    assert len(list((tmp_path / "report").rglob("*.png"))) == 15
    assert summary["models"]["bundled"]["appendix1"]["violations"] == 0
