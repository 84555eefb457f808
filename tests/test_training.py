"""The training loop, on a tiny model and a toy corpus, and its checkpoint in the official layout."""

import json

import numpy as np
import pytest
import torch
from conftest import toy_corpus

import weights
from minigpt import GPT2, Config
from training.train import TrainConfig, checkpoint_steps, init_weights, learning_rate, make_optimizer, train, unigram_loss


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
    first, _ = weights.load(folders[0], process=False)
    last, _ = weights.load(folders[-1], process=False)
    assert torch.equal(first.W_E, initial)  # step 0 is the initialisation, stored exactly (float32)
    assert torch.equal(last.W_E, model.W_E.detach()) and not torch.equal(last.W_E, initial)
    record = json.loads((folders[3] / "training_step.json").read_text())
    assert record["step"] == 5 and record["tokens"] == 5 * 4 * 32 and np.isfinite(record["val_loss"])
    assert record["train_loss"] == pytest.approx(np.mean(history["train_loss"][:5]))
    assert json.loads((folders[0] / "training_step.json").read_text())["train_loss"] is None
