"""minigpt.generate: greedy is deterministic, a seed repeats a sample, and no seed draws a new one."""

import pytest
import torch

from minigpt import GPT2, Config, generate
from training.train import init_weights


@pytest.fixture(scope="module")
def model():
    # Random weights give nearly uniform next-token probabilities over 50257 tokens: two independent
    # 12-token samples coincide with probability about 50257**-12, i.e. never.
    return init_weights(GPT2(Config.sized(2, 32, 2, n_ctx=32)), seed=0).eval()


def test_a_seed_repeats_its_sample_and_another_seed_differs(model):
    first = generate(model, [1, 2, 3], 12, temperature=1.0, seed=7)
    assert generate(model, [1, 2, 3], 12, temperature=1.0, seed=7) == first
    assert generate(model, [1, 2, 3], 12, temperature=1.0, seed=8) != first


def test_unseeded_calls_draw_different_samples(model):
    samples = {tuple(generate(model, [1, 2, 3], 12, temperature=1.0)) for _ in range(3)}
    assert len(samples) == 3, "generate with seed=None repeated its sample: its generator kept a fixed seed"


def test_unseeded_sampling_leaves_torchs_global_generator_alone(model):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    generate(model, [1, 2, 3], 4, temperature=1.0)
    assert torch.equal(torch.rand(3), expected)
