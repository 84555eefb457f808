"""Each measure of analysis.measures, rates and weight_measures on inputs whose answer is known. The engine,
which runs the same measures at scale, is tested equal to these in test_engine.py."""

import numpy as np
import pytest
import torch

import instrument
import weights
from analysis import engine, measures, rates, weight_measures


def test_growth_rate_of_a_geometric_sequence():
    norms = 3.0 * 1.045 ** np.arange(48)
    g = rates.growth_rate(norms, 5, 41)
    assert g["rate"] == pytest.approx(1.045) and g["fit_rate"] == pytest.approx(1.045)
    assert g["r2"] == pytest.approx(1.0) and g["fit_intercept"] == pytest.approx(3.0)
    assert g["rate_first_half"] == pytest.approx(1.045) and g["rate_second_half"] == pytest.approx(1.045)


def test_growth_rate_sees_square_root_growth_slow_down():
    g = rates.growth_rate(np.sqrt(1 + np.arange(12)), 1, 10)
    assert g["rate_second_half"] - 1 < 0.6 * (g["rate_first_half"] - 1)


def test_growth_rate_refuses_layers_outside_the_model():
    with pytest.raises(ValueError, match="fit layers 5:41 must satisfy 0 <= first < last <= 11"):
        rates.growth_rate(np.ones(12), 5, 41)


@pytest.mark.parametrize("n_layers, expected", [(48, (5, 41)), (12, (1, 10)), (10, (1, 9)), (3, (0, 2)), (2, (0, 1))])
def test_default_fit_layers_scale_the_studys_5_to_41_of_48(n_layers, expected):
    assert rates.default_fit_layers(n_layers) == expected


def test_W_OV_frobenius_equals_the_explicit_product():
    g = torch.Generator().manual_seed(0)
    W_V, W_O = torch.randn(5, 40, 8, generator=g), torch.randn(5, 8, 40, generator=g)
    explicit = torch.stack([(W_V[h] @ W_O[h]).norm() for h in range(5)])
    torch.testing.assert_close(weight_measures.W_OV_frobenius(W_V, W_O), explicit, rtol=1e-5, atol=0)


def test_expected_squared_norm_of_Wx_is_the_squared_frobenius_norm():
    """E‖W x‖² = ‖W‖_F² for x with identity covariance (the study's footnote 5)."""
    g = torch.Generator().manual_seed(1)
    W_V, W_O = torch.randn(3, 64, 16, generator=g), torch.randn(3, 16, 64, generator=g)
    x = torch.randn(20000, 64, generator=g)
    mean_square = weight_measures.W_OV_apply(W_V, W_O, x).pow(2).sum(-1).mean(1)
    torch.testing.assert_close(mean_square, weight_measures.W_OV_frobenius(W_V, W_O) ** 2, rtol=0.03, atol=0)


def test_random_normalised_vectors_have_mean_0_and_variance_1():
    x = weight_measures.random_normalised(100, 256)
    torch.testing.assert_close(x.mean(-1), torch.zeros(100), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.pow(2).mean(-1), torch.ones(100))


def norms_of_vectors(streams: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """measures.values_per_prompt's form, {stream: [n_layers, n_pos] per prompt}, from the vectors
    themselves, {stream: [n_layers, batch, pos, d_model]}."""
    return {s: list(np.linalg.norm(v, axis=-1).transpose(1, 0, 2)) for s, v in streams.items()}


def test_appendix1_holds_on_consistent_vectors_and_flags_a_broken_one():
    rng = np.random.default_rng(0)
    pre, attn, mlp = rng.normal(size=(3, 4, 2, 7, 16))  # [n_layers, batch, pos, d_model] each
    streams = {"resid_pre": pre, "attn_out": attn, "resid_mid": pre + attn, "mlp_out": mlp, "resid_post": pre + attn + mlp}
    check = measures.appendix1(norms_of_vectors(streams))
    assert check["violations"] == 0 and np.all(check["growth_minus_1"] <= check["bound"])
    streams["resid_post"][2, 0, 3] *= 10  # a resid_post norm no sum of those vectors can reach
    assert measures.appendix1(norms_of_vectors(streams))["violations"] == 1


def test_the_mean_over_positions_leaves_out_bos_and_weighs_every_position_once():
    per_prompt = [np.array([[100.0, 1.0, 2.0, 3.0]]), np.array([[100.0, 6.0]])]  # one layer; BOS 100 in both
    assert measures.mean_over_positions(per_prompt).tolist() == [3.0]  # (1 + 2 + 3 + 6) / 4, not (2 + 6) / 2
    assert measures.bos_norm(per_prompt).tolist() == [100.0]
    assert measures.rms_over_positions(per_prompt)[0] == pytest.approx(np.sqrt((1 + 4 + 9 + 36) / 4))
    assert measures.averaged_positions([4, 2], 4).tolist() == [[False, True, True, True], [False, True, False, False]]


def test_per_position_is_every_hooks_reduction(processed):
    """measures.per_position, plainly: each stream's norm and the MLP's positive fraction at every position."""
    model, tokenizer = processed
    prompts = [[tokenizer.eot, 5, 6, 7], [tokenizer.eot, 8]]
    values, lengths = measures.per_position(model, prompts, tokenizer.eot)
    _, cache = instrument.run_with_cache(model, measures.pad_batch(prompts, tokenizer.eot)[0])
    assert lengths == [4, 2] and values["resid_mid"].shape == (model.cfg.n_layers, 2, 4)
    torch.testing.assert_close(torch.from_numpy(values["mlp_out"][1]), cache["blocks.1.hook_mlp_out"].norm(dim=-1))
    pre = cache["blocks.0.mlp.hook_pre"]
    torch.testing.assert_close(torch.from_numpy(values["active"][0]), (pre > 0).float().mean(-1))


@pytest.fixture(scope="module")
def processed(small_checkpoint):
    return weights.load(small_checkpoint)


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
    act = engine.collect(model, [[0, *range(1, 20)], [0, *range(30, 60)]], batch_size=2, pad=99)
    rate = rates.growth_rate(act.mean("resid_post"), 4, 11)
    assert rate["fit_rate"] == pytest.approx(g, rel=0.03)
    for stream in ("attn_out", "mlp_out"):
        assert rates.growth_rate(act.mean(stream), 4, 11)["fit_rate"] == pytest.approx(g, rel=0.1)


def test_weight_measures_match_direct_computation(processed):
    model, _ = processed
    w = weight_measures.weight_measures(model, n_random=64)
    block = model.blocks[1]
    assert w["W_in_norm"][1] == pytest.approx(block.mlp.W_in.norm().item(), rel=1e-6)
    explicit = torch.stack([(block.attn.W_V[h] @ block.attn.W_O[h]).norm() for h in range(model.cfg.n_heads)])
    np.testing.assert_allclose(w["W_OV_frobenius"][1], explicit.numpy(), rtol=1e-5)
    x = weight_measures.random_normalised(64, model.cfg.d_model)
    assert w["mlp_random_norm"][1] == pytest.approx(block.mlp(x).norm(dim=-1).mean().item(), rel=1e-5)
    pre = x @ block.mlp.W_in + block.mlp.b_in
    assert w["active_random"][1] == pytest.approx((pre > 0).float().mean().item())


def test_the_weight_identities_match_the_products():
    torch.manual_seed(0)
    W_V, W_O, x = torch.randn(4, 32, 8), torch.randn(4, 8, 32), torch.randn(50, 32)
    per_head = weight_measures.W_OV_apply(W_V, W_O, x)  # [n_heads, n, d_model]
    torch.testing.assert_close(weight_measures.W_OV_sum_apply(W_V, W_O, x), per_head.sum(0), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(weight_measures.W_OV_norms(W_V, W_O, x), per_head.norm(dim=-1), rtol=1e-5, atol=1e-4)


def test_figure_12_controls_count_the_mlps_own_activations(processed):
    """The pre-activations alone, counted, give what the MLP itself gives through its hook."""
    model, _ = processed
    torch.manual_seed(0)
    for resid in (torch.randn(7, model.cfg.d_model) * 30, torch.randn(12, model.cfg.d_model) * 3):
        pre, _ = weight_measures.mlp_on(model, 1, model.blocks[1].ln2(resid))
        assert measures.active_count(model, 1, resid) == int((pre > 0).sum())


def test_growth_sentence_reads_its_verdict_from_steady_growth():
    """The sentence's "steady" is rates.steady_growth's, so its bar is rates.STEADY's, not literals of its own."""
    layers = np.arange(12)
    steady = rates.growth_rate(10 * 1.05**layers, 1, 10)
    assert "A steady rate" in rates.growth_sentence("m", steady, 12)
    assert rates.steady_growth(steady, 12)["steady"]
    too_short = rates.growth_rate(10 * 1.05**layers, 4, 8)  # 5 of 12 layers: under STEADY's two thirds
    assert "A steady rate" not in rates.growth_sentence("m", too_short, 12)


def test_growth_sentence_when_the_first_half_shrinks():
    """A first half that shrinks (rate < 1) has a negative log-rate: the second half growing is a rise,
    not a fall (a ratio of the two log-rates would flip its sign)."""
    n = np.concatenate([10 * 0.98 ** np.arange(6), 10 * 0.98**5 * 1.05 ** np.arange(1, 6)])  # 11 layers
    g = rates.growth_rate(n, 0, 10)
    assert g["rate_first_half"] < 1 < g["rate_second_half"]
    sentence = rates.growth_sentence("m", g, 11)
    assert "rises with depth" in sentence and "falls" not in sentence
