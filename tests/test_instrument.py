"""Hook points by name: capture, reduce while running, edit, and clean up."""

import re
from pathlib import Path

import pytest
import torch

import instrument
import weights
from minigpt import GPT2, Config

TOKENS = torch.arange(2 * 12).reshape(2, 12) * 101


@pytest.fixture(scope="module")
def model(small_checkpoint):
    return weights.load(small_checkpoint, processed=False)[0]


def test_hook_names_are_transformer_lens_names(model):
    names = list(instrument.hook_points(model))
    per_block = [
        "hook_resid_pre",
        "ln1.hook_scale",
        "ln1.hook_normalized",
        "attn.hook_q",
        "attn.hook_k",
        "attn.hook_v",
        "attn.hook_attn_scores",
        "attn.hook_pattern",
        "attn.hook_z",
        "hook_attn_out",
        "hook_resid_mid",
        "ln2.hook_scale",
        "ln2.hook_normalized",
        "mlp.hook_pre",
        "mlp.hook_post",
        "hook_mlp_out",
        "hook_resid_post",
    ]
    expected = ["hook_embed", "hook_pos_embed"]
    expected += [f"blocks.{l}.{name}" for l in range(model.cfg.n_layers) for name in per_block]
    expected += ["ln_final.hook_scale", "ln_final.hook_normalized"]
    assert sorted(names) == sorted(expected)


def test_cache_holds_every_tensor_with_its_shape_and_meaning(model):
    logits, cache = instrument.run_with_cache(model, TOKENS)
    cfg, (b, p) = model.cfg, TOKENS.shape
    assert len(cache) == len(instrument.hook_points(model))
    assert cache["blocks.0.attn.hook_q"].shape == (b, p, cfg.n_heads, cfg.d_head)
    assert cache["blocks.0.attn.hook_pattern"].shape == (b, cfg.n_heads, p, p)
    assert cache["blocks.1.mlp.hook_post"].shape == (b, p, cfg.d_mlp)
    assert cache["blocks.2.ln2.hook_scale"].shape == (b, p, 1)
    pattern = cache["blocks.1.attn.hook_pattern"]
    torch.testing.assert_close(pattern.sum(-1), torch.ones(b, cfg.n_heads, p))
    future = torch.ones(p, p, dtype=torch.bool).triu(1)  # keys after the query
    assert (pattern[..., future] == 0).all() and torch.isinf(cache["blocks.1.attn.hook_attn_scores"][..., future]).all()
    for l in range(cfg.n_layers):  # the residual additions, read back from the cache
        torch.testing.assert_close(
            cache[f"blocks.{l}.hook_resid_mid"], cache[f"blocks.{l}.hook_resid_pre"] + cache[f"blocks.{l}.hook_attn_out"]
        )
        torch.testing.assert_close(
            cache[f"blocks.{l}.hook_resid_post"], cache[f"blocks.{l}.hook_resid_mid"] + cache[f"blocks.{l}.hook_mlp_out"]
        )
    with torch.no_grad():
        assert torch.equal(logits, model(TOKENS))


def test_cached_tensors_are_not_changed_by_the_rest_of_the_pass(model):
    """The cache keeps references, not copies; a later in-place operation would corrupt them."""
    _, everything = instrument.run_with_cache(model, TOKENS)
    for name in ["blocks.0.hook_resid_pre", "blocks.1.attn.hook_attn_scores", "blocks.2.mlp.hook_pre", "ln_final.hook_scale"]:
        _, alone = instrument.run_with_cache(model, TOKENS, names=[name])
        assert torch.equal(alone[name], everything[name]), name


def test_names_by_list_or_predicate_and_reduce_while_running(model):
    _, by_list = instrument.run_with_cache(model, TOKENS, names=["blocks.1.hook_resid_post"])
    assert list(by_list) == ["blocks.1.hook_resid_post"]
    _, norms = instrument.run_with_cache(
        model, TOKENS, names=lambda name: name.endswith("resid_post"), reduce=lambda t, name: t.norm(dim=-1)
    )
    assert list(norms) == [f"blocks.{l}.hook_resid_post" for l in range(model.cfg.n_layers)]
    torch.testing.assert_close(norms["blocks.1.hook_resid_post"], by_list["blocks.1.hook_resid_post"].norm(dim=-1))


# transformer_lens.utils.get_act_name's documented examples and the aliases it reads, with what it returns
ACT_NAMES = {
    ("resid_pre", 5): "blocks.5.hook_resid_pre",
    ("resid_mid", 5): "blocks.5.hook_resid_mid",
    ("resid_post", 0): "blocks.0.hook_resid_post",
    ("attn_out", 1): "blocks.1.hook_attn_out",
    ("mlp_out", 1): "blocks.1.hook_mlp_out",
    ("pattern", 2): "blocks.2.attn.hook_pattern",
    ("attn", 2): "blocks.2.attn.hook_pattern",
    ("attn_scores", 2): "blocks.2.attn.hook_attn_scores",
    ("attn_logits", 2): "blocks.2.attn.hook_attn_scores",
    ("k", 6, "a"): "blocks.6.attn.hook_k",
    ("q", 1): "blocks.1.attn.hook_q",
    ("value", 1): "blocks.1.attn.hook_v",
    ("z", 1): "blocks.1.attn.hook_z",
    ("pre", 2): "blocks.2.mlp.hook_pre",
    ("mlp_post", 2): "blocks.2.mlp.hook_post",
    ("normalized", 27, "ln2"): "blocks.27.ln2.hook_normalized",
    ("scale", 4, "ln1"): "blocks.4.ln1.hook_scale",
    ("scale",): "ln_final.hook_scale",
    ("normalized",): "ln_final.hook_normalized",
    ("embed",): "hook_embed",
    ("pos_embed",): "hook_pos_embed",
    ("k6",): "blocks.6.attn.hook_k",
    ("scale4ln1",): "blocks.4.ln1.hook_scale",
    ("pre5",): "blocks.5.mlp.hook_pre",
    ("blocks.3.hook_resid_post",): "blocks.3.hook_resid_post",
    ("hook_embed",): "hook_embed",
}


@pytest.mark.parametrize("args, full", ACT_NAMES.items(), ids=["-".join(map(str, a)) for a in ACT_NAMES])
def test_get_act_name_builds_transformer_lens_names(args, full):
    assert instrument.get_act_name(*args) == full


def test_get_act_names_are_the_models_hook_points_and_the_caches_short_keys(model):
    points = instrument.hook_points(model)
    for args in [("resid_pre", 1), ("pattern", 0), ("post", 1), ("scale", 1, "ln2"), ("normalized",), ("embed",)]:
        assert instrument.get_act_name(*args) in points, args
    _, cache = instrument.run_with_cache(model, TOKENS, names=[instrument.get_act_name("resid_pre", 1)])
    assert torch.equal(cache[instrument.get_act_name("resid_pre", 1)], cache["resid_pre", 1])
    with pytest.raises(KeyError, match="'blocks.1.hook_scale' is not a hook point"):  # no sublayer named: refused where used
        instrument.run_with_cache(model, TOKENS, names=[instrument.get_act_name("scale", 1)])


def test_names_filter_is_names_by_transformer_lens_s_word(model):
    keep = lambda name: name.endswith("hook_resid_post")  # noqa: E731
    logits, by_filter = instrument.run_with_cache(model, TOKENS, names_filter=keep)
    _, by_names = instrument.run_with_cache(model, TOKENS, names=keep)
    assert list(by_filter) == list(by_names) == [f"blocks.{l}.hook_resid_post" for l in range(model.cfg.n_layers)]
    assert all(torch.equal(by_filter[n], by_names[n]) for n in by_names) and logits.shape[-1] == model.cfg.d_vocab
    _, one = instrument.run_with_cache(model, TOKENS, names_filter="blocks.0.hook_resid_pre")
    assert list(one) == ["blocks.0.hook_resid_pre"]
    with pytest.raises(TypeError, match="names= or names_filter="):
        instrument.run_with_cache(model, TOKENS, names=keep, names_filter=keep)


def test_unknown_hook_name_suggests_the_close_ones(model):
    with pytest.raises(KeyError, match="'blocks.1.hook_resid_pots' is not a hook point .* did you mean blocks.1.hook_resid_post"):
        instrument.run_with_cache(model, TOKENS, names=["blocks.1.hook_resid_pots"])


def test_the_cache_takes_transformer_lens_short_names(model):
    _, cache = instrument.run_with_cache(model, TOKENS)
    last = model.cfg.n_layers - 1
    assert isinstance(cache, dict) and all("hook_" in name for name in cache)  # iteration: the full names
    same = {
        ("resid_post", 2): "blocks.2.hook_resid_post",
        ("resid_pre", 0): "blocks.0.hook_resid_pre",
        ("pattern", 1): "blocks.1.attn.hook_pattern",
        ("q", 0): "blocks.0.attn.hook_q",
        ("post", 1): "blocks.1.mlp.hook_post",
        ("resid_post", -1): f"blocks.{last}.hook_resid_post",
        ("pattern", -last - 1): "blocks.0.attn.hook_pattern",
        ("scale", 2, "ln1"): "blocks.2.ln1.hook_scale",
        ("normalized", 0, "ln2"): "blocks.0.ln2.hook_normalized",
        ("hook_attn_out", 1): "blocks.1.hook_attn_out",
        "embed": "hook_embed",
        "pos_embed": "hook_pos_embed",
        "scale": "ln_final.hook_scale",
        "normalized": "ln_final.hook_normalized",
    }
    for short, full in same.items():
        assert cache[short] is cache[full], short


@pytest.mark.parametrize(
    "key, expected",
    [
        (("resid_pots", 1), "this model has no hook blocks.1.hook_resid_pots; did you mean blocks.1.hook_resid_post"),
        ("blocks.1.hook_resid_pots", "this model has no hook blocks.1.hook_resid_pots; did you mean blocks.1.hook_resid_post"),
        (("resid_post", 3), "layer 3 is out of range for this 3-layer model \\(0 to 2, or -1 to -3 from the end\\)"),
        (("resid_post", -4), "layer -4 is out of range"),
        (("scale", 0), "could be blocks.0.ln1.hook_scale or blocks.0.ln2.hook_scale; name the sublayer"),
        ("resid_post", "every block has 'resid_post'; give the layer"),
    ],
)
def test_an_unknown_cache_key_names_the_close_ones(model, key, expected):
    _, cache = instrument.run_with_cache(model, TOKENS)
    with pytest.raises(KeyError, match=expected):
        cache[key]


def test_a_short_name_the_cache_did_not_keep_is_a_clear_error(model):
    _, cache = instrument.run_with_cache(model, TOKENS, names=lambda name: "resid_post" in name)
    assert cache["resid_post", 1] is cache["blocks.1.hook_resid_post"]
    with pytest.raises(KeyError, match=r"blocks.1.attn.hook_pattern was not kept \(run_with_cache's names= kept 3 of 55 "):
        cache["pattern", 1]
    with pytest.raises(KeyError, match=r"blocks.1.attn.hook_pattern was not kept"):
        cache["blocks.1.attn.hook_pattern"]


def test_hooks_replace_tensors_and_are_removed_afterwards(model):
    with torch.no_grad():
        clean = model(TOKENS)
    seen = []

    def zero_head_0(pattern, name):
        seen.append(name)
        pattern = pattern.clone()
        pattern[:, 0] = 0
        return pattern

    with torch.no_grad(), instrument.hooks(model, {"blocks.0.attn.hook_pattern": zero_head_0}):
        ablated = model(TOKENS)
    assert seen == ["blocks.0.attn.hook_pattern"]
    assert not torch.allclose(ablated, clean)
    with torch.no_grad():
        assert torch.equal(model(TOKENS), clean)


def test_hooks_are_removed_when_the_block_raises(model):
    with pytest.raises(RuntimeError, match="boom"), instrument.hooks(model, {"hook_embed": lambda t, name: t * 0}):
        raise RuntimeError("boom")
    assert all(not point._forward_hooks for point in instrument.hook_points(model).values())


def test_patching_a_residual_from_another_prompt_at_the_last_layer_gives_its_logits(model):
    """Activation patching: replace the final residual with another run's, and the logits follow it."""
    other = TOKENS.flip(-1)
    last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    other_logits, other_cache = instrument.run_with_cache(model, other, names=[last])
    with torch.no_grad(), instrument.hooks(model, {last: lambda t, name: other_cache[last]}):
        patched = model(TOKENS)
    assert torch.equal(patched, other_logits)


def test_unembed_false_returns_the_final_residual(model):
    residual, cache = instrument.run_with_cache(
        model, TOKENS, names=lambda n: "resid_post" in n or "ln_final" in n, unembed=False
    )
    assert torch.equal(residual, cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"])
    assert not any(name.startswith("ln_final") for name in cache)


def readme_hook_table() -> dict[str, list[str]]:
    """{hook name with {l}: [axis names]} from the README's "Hook names" table, so the README cannot drift."""
    text = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    table = text.split("## Hook names", 1)[1].split("\n\n")[1]
    shapes = {}
    for row in table.splitlines()[2:]:  # after the header and the |---| line
        names_cell, shape_cell, _ = row.strip("|").split("|")
        first, *others = re.findall(r"`([^`]+)`", names_cell)
        prefix = first.rpartition(".")[0]
        for name in [first, *(f"{prefix}.{other}" if prefix else other for other in others)]:
            shapes[name] = [axis.strip() for axis in shape_cell.split(",")]
    return shapes


def test_every_hook_has_the_shape_the_readme_gives_for_a_batch_of_3():
    """Every dimension distinct, so a swapped or missing axis cannot pass; batch 3."""
    cfg = Config(n_layers=2, d_model=48, n_heads=4, d_head=12, d_mlp=80, d_vocab=97, n_ctx=16)
    model = GPT2(cfg)
    for param in model.parameters():
        torch.nn.init.normal_(param, std=0.1)
    batch, n_pos = 3, 7
    _, cache = instrument.run_with_cache(model, torch.randint(0, cfg.d_vocab, (batch, n_pos)))
    sizes = {
        "batch": batch,
        "pos": n_pos,
        "query_pos": n_pos,
        "key_pos": n_pos,
        "1": 1,
        "d_model": cfg.d_model,
        "n_heads": cfg.n_heads,
        "d_head": cfg.d_head,
        "d_mlp": cfg.d_mlp,
    }
    documented = {name.replace("{l}", str(l)): axes for name, axes in readme_hook_table().items() for l in range(cfg.n_layers)}
    assert documented.keys() == cache.keys()
    for name, axes in documented.items():
        assert tuple(cache[name].shape) == tuple(sizes[axis] for axis in axes), f"{name}: README says [{', '.join(axes)}]"


def test_gradients_at_a_hook_point_for_attribution_patching_come_from_hooks_not_run_with_cache(model):
    # run_with_cache runs under no_grad (as the README says); a hook that makes its tensor a leaf gives its gradient
    name = "blocks.1.hook_resid_mid"
    _, cache = instrument.run_with_cache(model, TOKENS, names=[name])
    assert not cache[name].requires_grad
    kept = {}

    def leaf(tensor, name):
        kept[name] = tensor.detach().requires_grad_(True)
        return kept[name]

    with torch.enable_grad(), instrument.hooks(model, {name: leaf}):
        logits = model(TOKENS)
        logits[:, -1, 7].sum().backward()
    grad = kept[name].grad
    assert grad.shape == cache[name].shape and bool(grad[:, -1].abs().sum() > 0)
    with torch.no_grad():  # the gradient is the logit's first-order change: nudge the stream along it and compare
        step = 1e-3 * grad / grad.norm()
        with instrument.hooks(model, {name: lambda t, n: t + step}):
            nudged = model(TOKENS)[:, -1, 7].sum()
    assert abs(float(nudged - logits.detach()[:, -1, 7].sum()) - float((grad * step).sum())) < 1e-4
