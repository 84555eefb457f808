"""The training loop, on a tiny model and a toy corpus, and its checkpoint in the official layout."""

import numpy as np
import torch

import weights
from minigpt import GPT2, Config
from training.train import TrainConfig, init_weights, learning_rate, train, unigram_loss


def toy_corpus(n: int, seed: int) -> np.ndarray:
    """A repeating pattern with noise: learnable in a few steps, unlike uniform random tokens."""
    rng = np.random.default_rng(seed)
    pattern = np.tile(np.arange(100, 116), n // 16 + 1)[:n]
    noise = rng.random(n) < 0.1
    return np.where(noise, rng.integers(0, 500, n), pattern).astype(np.uint16)


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
    loaded, _ = weights.load(tmp_path, process=False)
    assert loaded.W_E.dtype == torch.float32 and loaded.cfg == model.cfg
    torch.testing.assert_close(loaded.W_E, model.W_E.detach().to(torch.bfloat16).float())
