import os
import sys
from pathlib import Path

import pytest
import torch

# No test may reach the network: huggingface_hub and transformers must work from local files only.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
sys.path.insert(0, str(Path(__file__).parent))  # conftest.record
sys.path.insert(0, str(Path(__file__).parent.parent))  # benchmarks.checkpoints

from benchmarks.checkpoints import gpt2_vocab_files, write_checkpoint  # noqa: E402

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
