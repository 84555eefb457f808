"""The engine (analysis/engine/) against the plain measures it speeds up: batching, running sums, the
per-position buffer, the embedding rows kept, shards merged, figure 12's sample, and the padding batch."""

import numpy as np
import pytest
import torch

import instrument
import weights
from analysis import engine, measures


@pytest.fixture(scope="module")
def processed(small_checkpoint):
    return weights.load(small_checkpoint)


def test_batched_collection_equals_the_plain_measures_of_each_prompt_alone(processed):
    """Right padding cannot change the real positions (attention is causal), so batching is invisible:
    every statistic of a batched run equals the plain measure (analysis.measures) of each prompt run alone."""
    model, tokenizer = processed
    L = model.cfg.n_layers
    prompts = [[tokenizer.eot, *tokenizer.encode(text)] for text in ["Hello there", "A longer prompt than the first one", "x"]]
    stats = engine.collect(model, prompts, batch_size=3, pad=tokenizer.eot, example=1)
    alone = {q: [] for q in measures.PER_POSITION}
    early = []
    for prompt in prompts:
        for quantity, values in measures.values_per_prompt(model, [prompt], tokenizer.eot).items():
            alone[quantity] += values
        _, cache = instrument.run_with_cache(model, torch.tensor([prompt]))
        early.append(torch.stack([cache[measures.hook_name(l, "resid_mid")][0, 1:7] for l in range(L)]))
    for stream in measures.STREAMS:
        np.testing.assert_allclose(stats.mean(stream), measures.mean_over_positions(alone[stream]), rtol=1e-5)
        np.testing.assert_allclose(stats.rms(stream), measures.rms_over_positions(alone[stream]), rtol=1e-5)
        np.testing.assert_allclose(stats.bos(stream), measures.bos_norm(alone[stream]), rtol=1e-5)
        np.testing.assert_allclose(stats.example[stream], alone[stream][1], rtol=1e-5)
    # The active fraction is a count: batched and alone, the matrix products round differently, and a
    # pre-activation within rounding of 0 may change sign. Allowed: 2 of the d_mlp · count pre-activations.
    two_counts = 2 / (model.cfg.d_mlp * stats.count)
    np.testing.assert_allclose(stats.mean("active"), measures.mean_over_positions(alone["active"]), rtol=0, atol=two_counts)
    plain = measures.appendix1(alone)
    np.testing.assert_allclose(stats.appendix1()["growth_minus_1"], plain["growth_minus_1"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stats.appendix1()["bound"], plain["bound"], rtol=1e-5)
    assert stats.appendix1()["violations"] == plain["violations"] == 0
    assert stats.count == sum(len(p) - 1 for p in prompts) and stats.n_prompts == 3
    # Figure 1: the histogram counts measures.log10_norms on its fixed bins
    for layer in (0, L - 1):
        counts, _ = np.histogram(np.clip(measures.log10_norms(alone["resid_post"], layer), -2, 5), engine.HISTOGRAM_EDGES)
        assert np.abs(stats.histogram[layer] - counts).sum() <= 2  # a norm within float32 rounding of a bin edge may move
    assert int(stats.histogram.sum()) == L * stats.count
    # Figure 12's controls: positions 1..6 of every prompt, or fewer for short prompts (2 + 6 + 1 vectors
    # per layer, all kept), the same as measures.early_controls on those vectors
    early = torch.cat(early, dim=1)  # [n_layers, 9, d_model]
    assert stats.early_seen == stats.early_kept == early.shape[1]
    controls, expected = stats.early_controls(), measures.early_controls(model, list(early))
    for key in ("active_early_positions", "active_other_layer"):
        np.testing.assert_allclose(controls[key], expected[key], rtol=0, atol=1e-12)
    assert controls["other_layer"].tolist() == expected["other_layer"].tolist() == measures.other_layers(L)
    assert all(k != l for l, k in enumerate(stats.other_layer))


def test_the_per_position_buffer_holds_the_plain_reductions(processed):
    """engine.per_position_norms, written into one buffer while the model runs, equals measures.per_position."""
    model, tokenizer = processed
    prompts = [[tokenizer.eot, 5, 6, 7, 8], [tokenizer.eot, 9, 10]]
    plain, _ = measures.per_position(model, prompts, tokenizer.eot)
    fast = engine.per_position_norms(model, measures.pad_batch(prompts, tokenizer.eot)[0])
    assert fast.keys() == plain.keys() == measures.PER_POSITION.keys()
    for quantity in plain:
        np.testing.assert_array_equal(fast[quantity].numpy(), plain[quantity], err_msg=quantity)


def test_kept_state_has_a_fixed_size_however_many_prompts_run(processed):
    """The memory bound, counted in bytes: 40 prompts and 400 leave statistics of the same size."""
    model, tokenizer = processed

    def stream(n):  # the same first prompts each time, so the example prompt is the same one
        rng = np.random.default_rng(0)
        return [[tokenizer.eot, *rng.integers(0, 50000, size=rng.integers(3, 20)).tolist()] for _ in range(n)]

    few = engine.collect(model, stream(40), batch_size=8, pad=tokenizer.eot, example=0, reservoir=64)
    many = engine.collect(model, stream(400), batch_size=8, pad=tokenizer.eot, example=0, reservoir=64)
    assert few.early_seen > 64 and many.early_seen > 10 * 64  # both reservoirs full: a sample, not everything
    assert few.nbytes() == many.nbytes() and few.early_kept == many.early_kept == 64
    assert many.count > 9 * few.count


def test_statistics_of_two_shards_merge_by_addition(processed):
    model, tokenizer = processed
    prompts = [[tokenizer.eot, *tokenizer.encode(text)] for text in ["One prompt", "and another, longer one", "a third", "four"]]
    # batch size 1: each prompt's arithmetic is then the same in the whole run and in its shard
    whole = engine.collect(model, prompts, batch_size=1, pad=tokenizer.eot)
    merged = engine.collect(model, prompts[:2], batch_size=1, pad=tokenizer.eot)
    merged.merge(engine.collect(model, prompts[2:], batch_size=1, pad=tokenizer.eot))
    for stream in measures.STREAMS:
        np.testing.assert_allclose(merged.mean(stream), whole.mean(stream), rtol=1e-6)
        np.testing.assert_allclose(merged.bos(stream), whole.bos(stream), rtol=1e-6)
    assert np.array_equal(merged.histogram, whole.histogram) and merged.count == whole.count
    assert merged.appendix1()["worst_excess"] == whole.appendix1()["worst_excess"]


def test_reservoir_sample_is_uniform_and_seeded():
    """Algorithm R: after 200 pairs with room for 20, each pair was kept with probability 20/200."""
    batches = [[2] * 50] * 4  # four batches of 50 two-token prompts: one early position each, 200 pairs

    def sample(seed):
        kept = engine.NormStats(1, reservoir=20, seed=seed).choose_early(batches)
        return [50 * batch + row for batch, pairs in enumerate(kept) for row, position in pairs]

    counts = np.zeros(200)
    for seed in range(300):
        chosen = sample(seed)
        assert len(chosen) == len(set(chosen)) == 20
        counts[chosen] += 1
    assert counts.std() / 300 < 0.03 and counts[:20].mean() / 300 < 0.15  # no preference for the first pairs
    assert sample(299) == sample(299) and sample(299) != sample(298)


def test_collect_runs_the_padding_batch_among_the_others(processed):
    """collect(padded=…) gives padding_norms' numbers for those prompts, and the same statistics as without it."""
    model, tokenizer = processed
    prompts = [[tokenizer.eot, *range(10, 10 + n)] for n in (3, 9, 1, 5, 14, 2)]
    padded = [1, 3, 5]
    with_padding = engine.collect(model, prompts, 2, tokenizer.eot, padded=padded, extra=3)
    expected = measures.padding_norms(model, [prompts[i] for i in padded], tokenizer.eot, extra=3)
    for key in ("bos", "padding", "ordinary"):
        np.testing.assert_allclose(with_padding.padding[key], expected[key], rtol=1e-6)
    plain = engine.collect(model, prompts, 2, tokenizer.eot)
    assert plain.padding is None and with_padding.count == plain.count
    for s in measures.STREAMS:
        np.testing.assert_allclose(with_padding.mean(s), plain.mean(s), rtol=1e-6)
    np.testing.assert_array_equal(with_padding.histogram.sum(1), plain.histogram.sum(1))


def test_batches_are_cut_by_prompt_count_and_by_padded_size():
    lengths = [3, 3, 4, 10, 10, 11, 40]
    order = list(range(len(lengths)))
    assert engine.by_length(order, lengths, 64, 32) == [[0, 1, 2], [3, 4], [5], [6]]  # 3 × 4 ≤ 32 < 4 × 10
    assert engine.by_length(order, lengths, 2, 1000) == [[0, 1], [2, 3], [4, 5], [6]]
    assert sum(engine.by_length(order, lengths, 64, 1), []) == order  # each alone, none lost


def test_positions_per_pass_are_the_cpus_or_those_asked_for(processed, monkeypatch):
    """On the CPU, batching.CPU_POSITIONS whatever the free memory; --batch-positions wins everywhere; on CUDA the
    widest batch the formula sizes for is the longest prompt plus the padding figure's extra positions."""
    model, tokenizer = processed
    prompts = [[tokenizer.eot, *range(10, 10 + n)] for n in (3, 40)]
    assert engine.positions_per_pass(model, prompts) == engine.batching.CPU_POSITIONS == engine.BATCH_POSITIONS == 512
    assert engine.positions_per_pass(model, prompts, asked=100) == 100
    widths = []
    monkeypatch.setattr(engine.batching, "batch_positions", lambda device, cfg, dtype, width: widths.append(width) or 7)
    assert engine.positions_per_pass(model, prompts) == 7 and widths == [41 + measures.PADDING_EXTRA]
