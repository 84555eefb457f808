"""Each measurement of analysis.measures on inputs whose answer is known."""

import numpy as np
import pytest
import torch

import instrument
import weights
from analysis import measures


def test_growth_rate_of_a_geometric_sequence():
    norms = 3.0 * 1.045 ** np.arange(48)
    g = measures.growth_rate(norms, 5, 41)
    assert g["rate"] == pytest.approx(1.045) and g["fit_rate"] == pytest.approx(1.045)
    assert g["r2"] == pytest.approx(1.0) and g["fit_intercept"] == pytest.approx(3.0)
    assert g["rate_first_half"] == pytest.approx(1.045) and g["rate_second_half"] == pytest.approx(1.045)


def test_growth_rate_sees_square_root_growth_slow_down():
    g = measures.growth_rate(np.sqrt(1 + np.arange(12)), 1, 10)
    assert g["rate_second_half"] - 1 < 0.6 * (g["rate_first_half"] - 1)


def test_growth_rate_refuses_layers_outside_the_model():
    with pytest.raises(ValueError, match="fit layers 5:41 must satisfy 0 <= first < last <= 11"):
        measures.growth_rate(np.ones(12), 5, 41)


@pytest.mark.parametrize("n_layers, expected", [(48, (5, 41)), (12, (1, 10)), (10, (1, 9)), (3, (0, 2)), (2, (0, 1))])
def test_default_fit_layers_scale_the_studys_5_to_41_of_48(n_layers, expected):
    assert measures.default_fit_layers(n_layers) == expected


def test_W_OV_frobenius_equals_the_explicit_product():
    g = torch.Generator().manual_seed(0)
    W_V, W_O = torch.randn(5, 40, 8, generator=g), torch.randn(5, 8, 40, generator=g)
    explicit = torch.stack([(W_V[h] @ W_O[h]).norm() for h in range(5)])
    torch.testing.assert_close(measures.W_OV_frobenius(W_V, W_O), explicit, rtol=1e-5, atol=0)


def test_expected_squared_norm_of_Wx_is_the_squared_frobenius_norm():
    """E‖W x‖² = ‖W‖_F² for x with identity covariance (the study's footnote 5)."""
    g = torch.Generator().manual_seed(1)
    W_V, W_O = torch.randn(3, 64, 16, generator=g), torch.randn(3, 16, 64, generator=g)
    x = torch.randn(20000, 64, generator=g)
    mean_square = measures.W_OV_apply(W_V, W_O, x).pow(2).sum(-1).mean(1)
    torch.testing.assert_close(mean_square, measures.W_OV_frobenius(W_V, W_O) ** 2, rtol=0.03, atol=0)


def test_random_normalised_vectors_have_mean_0_and_variance_1():
    x = measures.random_normalised(100, 256)
    torch.testing.assert_close(x.mean(-1), torch.zeros(100), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.pow(2).mean(-1), torch.ones(100))


def stats_of_vectors(streams: dict[str, np.ndarray]) -> measures.NormStats:
    """NormStats of one batch given the vectors themselves, {stream: [n_layers, batch, pos, d_model]}."""
    L, batch, n_pos, _ = streams["resid_pre"].shape
    stats = measures.NormStats(L)
    norms = {s: torch.as_tensor(np.linalg.norm(v, axis=-1), dtype=torch.float32) for s, v in streams.items()}
    stats.add(norms, torch.zeros(L, batch, n_pos), [n_pos] * batch)
    return stats


def test_appendix1_holds_on_consistent_vectors_and_flags_a_broken_one():
    rng = np.random.default_rng(0)
    pre, attn, mlp = rng.normal(size=(3, 4, 2, 7, 16))  # [n_layers, batch, pos, d_model] each
    streams = {"resid_pre": pre, "attn_out": attn, "resid_mid": pre + attn, "mlp_out": mlp, "resid_post": pre + attn + mlp}
    check = stats_of_vectors(streams).appendix1()
    assert check["violations"] == 0 and np.all(check["growth_minus_1"] <= check["bound"])
    streams["resid_post"][2, 0, 3] *= 10  # a resid_post norm no sum of those vectors can reach
    assert stats_of_vectors(streams).appendix1()["violations"] == 1


@pytest.fixture(scope="module")
def processed(small_checkpoint):
    return weights.load(small_checkpoint)


def test_batched_collection_equals_one_prompt_at_a_time(processed):
    """Right padding cannot change the real positions (attention is causal), so batching is invisible:
    every statistic of a batched run equals the one computed from each prompt run alone."""
    model, tokenizer = processed
    L = model.cfg.n_layers
    prompts = [[tokenizer.eot, *tokenizer.encode(text)] for text in ["Hello there", "A longer prompt than the first one", "x"]]
    stats = measures.collect(model, prompts, batch_size=3, pad=tokenizer.eot, example=1)
    alone = {s: [] for s in (*measures.STREAMS, "active")}
    early = []
    for prompt in prompts:
        _, cache = instrument.run_with_cache(model, torch.tensor([prompt]))
        for stream in measures.STREAMS:
            alone[stream].append(torch.stack([cache[measures.hook_name(l, stream)][0].norm(dim=-1) for l in range(L)]).numpy())
        alone["active"].append(
            torch.stack([(cache[f"blocks.{l}.mlp.hook_pre"][0] > 0).float().mean(-1) for l in range(L)]).numpy()
        )
        early.append(torch.stack([cache[measures.hook_name(l, "resid_mid")][0, 1:7] for l in range(L)]))
    for stream in measures.STREAMS:
        np.testing.assert_allclose(stats.mean_norm(stream), measures.pooled_mean(alone[stream]), rtol=1e-5)
        pooled = np.concatenate([n[:, 1:] for n in alone[stream]], axis=1)
        np.testing.assert_allclose(stats.rms_norm(stream), np.sqrt((pooled**2).mean(1)), rtol=1e-5)
        np.testing.assert_allclose(stats.bos_norm(stream), np.mean([n[:, 0] for n in alone[stream]], axis=0), rtol=1e-5)
        np.testing.assert_allclose(stats.example[stream], alone[stream][1], rtol=1e-5)
    np.testing.assert_allclose(stats.active_fraction(), measures.pooled_mean(alone["active"]), rtol=1e-6)
    assert stats.count == sum(len(p) - 1 for p in prompts) and stats.n_prompts == 3
    assert int(stats.histogram.sum()) == L * stats.count
    # Figure 12's controls: positions 1..6 of every prompt, or fewer for short prompts (2 + 6 + 1 vectors
    # per layer, all kept), through each layer's MLP and through the MLP of the layer that reads it as its other
    early = torch.cat(early, dim=1)  # [n_layers, 9, d_model]
    assert stats.early_seen == stats.early_kept == early.shape[1]

    def rate(reader, resid):  # the MLP itself, through its hook
        pre, _ = measures.mlp_on(model, reader, model.blocks[reader].ln2(resid))
        return float((pre > 0).double().mean())

    controls = stats.early_controls()
    for l in range(L):
        assert controls["active_early_positions"][l] == pytest.approx(rate(l, early[l]), abs=1e-12)
        assert controls["active_other_layer"][l] == pytest.approx(rate(l, early[stats.other_layer[l]]), abs=1e-12)
    assert controls["other_layer"].tolist() == measures.other_layers(L) and all(k != l for l, k in enumerate(stats.other_layer))


def test_kept_state_has_a_fixed_size_however_many_prompts_run(processed):
    """The memory bound, counted in bytes: 40 prompts and 400 leave statistics of the same size."""
    model, tokenizer = processed

    def stream(n):  # the same first prompts each time, so the example prompt is the same one
        rng = np.random.default_rng(0)
        return [[tokenizer.eot, *rng.integers(0, 50000, size=rng.integers(3, 20)).tolist()] for _ in range(n)]

    few = measures.collect(model, stream(40), batch_size=8, pad=tokenizer.eot, example=0, reservoir=64)
    many = measures.collect(model, stream(400), batch_size=8, pad=tokenizer.eot, example=0, reservoir=64)
    assert few.early_seen > 64 and many.early_seen > 10 * 64  # both reservoirs full: a sample, not everything
    assert few.nbytes() == many.nbytes() and few.early_kept == many.early_kept == 64
    assert many.count > 9 * few.count


def test_statistics_of_two_shards_merge_by_addition(processed):
    model, tokenizer = processed
    prompts = [[tokenizer.eot, *tokenizer.encode(text)] for text in ["One prompt", "and another, longer one", "a third", "four"]]
    # batch size 1: each prompt's arithmetic is then the same in the whole run and in its shard
    whole = measures.collect(model, prompts, batch_size=1, pad=tokenizer.eot)
    merged = measures.collect(model, prompts[:2], batch_size=1, pad=tokenizer.eot)
    merged.merge(measures.collect(model, prompts[2:], batch_size=1, pad=tokenizer.eot))
    for stream in measures.STREAMS:
        np.testing.assert_allclose(merged.mean_norm(stream), whole.mean_norm(stream), rtol=1e-6)
        np.testing.assert_allclose(merged.bos_norm(stream), whole.bos_norm(stream), rtol=1e-6)
    assert np.array_equal(merged.histogram, whole.histogram) and merged.count == whole.count
    assert merged.appendix1()["worst_excess"] == whole.appendix1()["worst_excess"]


def test_reservoir_sample_is_uniform_and_seeded():
    """Algorithm R: after 200 pairs with room for 20, each pair was kept with probability 20/200."""
    batches = [[2] * 50] * 4  # four batches of 50 two-token prompts: one early position each, 200 pairs

    def sample(seed):
        kept = measures.NormStats(1, reservoir=20, seed=seed).choose_early(batches)
        return [50 * batch + row for batch, pairs in enumerate(kept) for row, position in pairs]

    counts = np.zeros(200)
    for seed in range(300):
        chosen = sample(seed)
        assert len(chosen) == len(set(chosen)) == 20
        counts[chosen] += 1
    assert counts.std() / 300 < 0.03 and counts[:20].mean() / 300 < 0.15  # no preference for the first pairs
    assert sample(299) == sample(299) and sample(299) != sample(298)


def test_padding_norms_separate_bos_padding_and_ordinary_positions(processed):
    model, tokenizer = processed
    prompts = [[tokenizer.eot, 10, 11, 12, 13], [tokenizer.eot, 20]]
    found = measures.padding_norms(model, prompts, tokenizer.eot, extra=2)  # width 7: 2 and 5 padding positions
    _, cache = instrument.run_with_cache(model, measures.pad_batch(prompts, tokenizer.eot, width=7)[0])
    last = cache[measures.hook_name(model.cfg.n_layers - 1, "resid_post")].norm(dim=-1)  # [2, 7]
    torch.testing.assert_close(
        torch.tensor(found["padding"][-1]), torch.cat([last[0, 5:], last[1, 2:]]).mean(), rtol=1e-5, atol=0
    )
    assert found["bos"][-1] == pytest.approx(last[:, 0].mean().item(), rel=1e-5)
    assert found["ordinary"][-1] == pytest.approx(torch.cat([last[0, 1:5], last[1, 1:2]]).mean().item(), rel=1e-5)


def test_padding_batch_has_padding_even_when_all_prompts_are_equally_long(processed):
    model, tokenizer = processed
    found = measures.padding_norms(model, [[tokenizer.eot, 5, 6], [tokenizer.eot, 7, 8]], tokenizer.eot)
    assert np.isfinite(found["padding"]).all()


def test_growth_written_into_the_weights_is_measured():
    """Scale each layer's writing weights by g^l: the residual norm then grows by ≈ g per layer."""
    from minigpt import GPT2, Config

    torch.manual_seed(0)
    g, L = 1.5, 12
    model = GPT2(Config.sized(L, 64, 4, d_vocab=100, n_ctx=32))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
        for l, block in enumerate(model.blocks):
            for W in (block.attn.W_O, block.attn.b_O, block.mlp.W_out, block.mlp.b_out):
                W *= g**l
    weights.process(model)
    act = measures.collect(model, [[0, *range(1, 20)], [0, *range(30, 60)]], batch_size=2, pad=99)
    rate = measures.growth_rate(act.mean_norm("resid_post"), 4, 11)
    assert rate["fit_rate"] == pytest.approx(g, rel=0.03)
    for stream in ("attn_out", "mlp_out"):
        assert measures.growth_rate(act.mean_norm(stream), 4, 11)["fit_rate"] == pytest.approx(g, rel=0.1)


def test_weight_measures_match_direct_computation(processed):
    model, _ = processed
    w = measures.weight_measures(model, n_random=64)
    block = model.blocks[1]
    assert w["W_in_norm"][1] == pytest.approx(block.mlp.W_in.norm().item(), rel=1e-6)
    explicit = torch.stack([(block.attn.W_V[h] @ block.attn.W_O[h]).norm() for h in range(model.cfg.n_heads)])
    np.testing.assert_allclose(w["W_OV_frobenius"][1], explicit.numpy(), rtol=1e-5)
    x = measures.random_normalised(64, model.cfg.d_model)
    assert w["mlp_random_norm"][1] == pytest.approx(block.mlp(x).norm(dim=-1).mean().item(), rel=1e-5)
    pre = x @ block.mlp.W_in + block.mlp.b_in
    assert w["active_random"][1] == pytest.approx((pre > 0).float().mean().item())


def test_collect_runs_the_padding_batch_among_the_others(processed):
    """collect(padded=…) gives padding_norms' numbers for those prompts, and the same statistics as without it."""
    model, tokenizer = processed
    prompts = [[tokenizer.eot, *range(10, 10 + n)] for n in (3, 9, 1, 5, 14, 2)]
    padded = [1, 3, 5]
    with_padding = measures.collect(model, prompts, 2, tokenizer.eot, padded=padded, extra=3)
    expected = measures.padding_norms(model, [prompts[i] for i in padded], tokenizer.eot, extra=3)
    for key in ("bos", "padding", "ordinary"):
        np.testing.assert_allclose(with_padding.padding[key], expected[key], rtol=1e-6)
    plain = measures.collect(model, prompts, 2, tokenizer.eot)
    assert plain.padding is None and with_padding.count == plain.count
    for s in measures.STREAMS:
        np.testing.assert_allclose(with_padding.mean_norm(s), plain.mean_norm(s), rtol=1e-6)
    np.testing.assert_array_equal(with_padding.histogram.sum(1), plain.histogram.sum(1))


def test_batches_are_cut_by_prompt_count_and_by_padded_size():
    lengths = [3, 3, 4, 10, 10, 11, 40]
    order = list(range(len(lengths)))
    assert measures.by_length(order, lengths, 64, 32) == [[0, 1, 2], [3, 4], [5], [6]]  # 3 × 4 ≤ 32 < 4 × 10
    assert measures.by_length(order, lengths, 2, 1000) == [[0, 1], [2, 3], [4, 5], [6]]
    assert sum(measures.by_length(order, lengths, 64, 1), []) == order  # each alone, none lost


def test_the_weight_identities_match_the_products():
    torch.manual_seed(0)
    W_V, W_O, x = torch.randn(4, 32, 8), torch.randn(4, 8, 32), torch.randn(50, 32)
    per_head = measures.W_OV_apply(W_V, W_O, x)  # [n_heads, n, d_model]
    torch.testing.assert_close(measures.W_OV_sum_apply(W_V, W_O, x), per_head.sum(0), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(measures.W_OV_norms(W_V, W_O, x), per_head.norm(dim=-1), rtol=1e-5, atol=1e-4)


def test_figure_12_controls_count_the_mlps_own_activations(processed):
    """The pre-activations alone, counted, give what the MLP itself gives through its hook."""
    model, _ = processed
    torch.manual_seed(0)
    for resid in (torch.randn(7, model.cfg.d_model) * 30, torch.randn(12, model.cfg.d_model) * 3):
        pre, _ = measures.mlp_on(model, 1, model.blocks[1].ln2(resid))
        assert measures.active_count(model, 1, resid) == int((pre > 0).sum())
