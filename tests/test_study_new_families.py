"""The study on RMSNorm models (issue 29, item 5): Llama-, Qwen 3- and OLMo 2-shaped models measured beside GPT-2.

The measures and the weight measures are checked on tiny models with random weights against their plain
definitions: ‖x − mean(x)‖ beside ‖x‖ (the residual is not mean-zero), W_OV per query head with grouped key-value
heads, the gate > 0 fraction of a gated MLP (figure 12), the gains of pre- and post-sublayer norms, and the
BOS position's ratio to the median."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from olmo_gemma_checkpoints import write_released

import instrument
import weights
from analysis import architecture, engine, measures, weight_measures
from minigpt.llama import Llama, LlamaConfig, RMSNorm


def randomised(model, seed: int = 0, gain_growth: float = 1.0):
    """Every weight random (std 0.1), every RMSNorm gain around 1, times gain_growth**layer in block `layer`."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".w") or name == "ln_final.w":
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=generator))
                if name.startswith("blocks."):
                    p.mul_(gain_growth ** int(name.split(".")[1]))
            elif not name.split(".")[-1].startswith("b_"):
                p.copy_(0.1 * torch.randn(p.shape, generator=generator))
    return model.eval()


def tiny_llama(qk_norm: bool = False, seed: int = 0) -> Llama:
    """4 layers, d_model 64, 4 query heads sharing 2 key-value heads, SwiGLU; Qwen 3's per-head q/k norm if asked."""
    sizes = {"n_layers": 4, "d_model": 64, "n_heads": 4, "d_head": 16, "d_mlp": 96, "d_vocab": 300, "n_ctx": 64}
    cfg = LlamaConfig(**sizes, n_kv_heads=2, qk_norm=qk_norm)
    return randomised(Llama(cfg), seed)


@pytest.fixture(scope="module")
def llama():
    return tiny_llama().requires_grad_(False)


@pytest.fixture(scope="module")
def olmo2(tmp_path_factory):
    """OLMo 2 as its released files hold it (og29's builder), read as trained: no norm before a sublayer."""
    directory = write_released(tmp_path_factory.mktemp("olmo2"), "olmo2", seed=3)
    return weights.checkpoint.read_model(directory).eval().requires_grad_(False)


PROMPTS = [[1, 5, 9, 200, 17, 3], [1, 44, 2, 8], [1, 250, 251, 252, 253, 254, 255, 256, 7]]


def test_the_centred_norm_is_measured_for_rmsnorm_models_only_and_is_the_plain_definition(llama, small_checkpoint):
    gpt2, _ = weights.load(small_checkpoint)
    assert not any(q.startswith("centred_") for q in measures.quantities(gpt2))  # LayerNorm: ‖x − mean(x)‖ is ‖x‖
    assert {f"centred_{s}" for s in measures.STREAMS} <= measures.quantities(llama).keys()
    values, lengths = measures.per_position(llama, PROMPTS, pad=0)
    _, cache = instrument.run_with_cache(llama, measures.pad_batch(PROMPTS, 0)[0], unembed=False)
    for layer in (0, 3):
        x = cache[measures.hook_name(layer, "resid_post")].double()
        centred = (x - x.mean(-1, keepdim=True)).norm(dim=-1)
        np.testing.assert_allclose(values["centred_resid_post"][layer], centred.numpy(), rtol=1e-5)
        assert not np.allclose(values["centred_resid_post"][layer], values["resid_post"][layer], rtol=1e-3)  # a mean is there
    # The engine sums it as every other per-position quantity: its means equal the plain ones of each prompt alone.
    stats = engine.collect(llama, PROMPTS, batch_size=2, pad=0)
    alone = [measures.values_per_prompt(llama, [p], 0) for p in PROMPTS]
    for quantity in ("resid_post", "centred_resid_post", "centred_attn_out", "centred_mlp_out"):
        plain = measures.mean_over_positions([a[quantity][0] for a in alone])
        np.testing.assert_allclose(stats.mean(quantity), plain, rtol=1e-5)
        np.testing.assert_allclose(stats.bos(quantity), measures.bos_norm([a[quantity][0] for a in alone]), rtol=1e-5)


def test_the_bos_ratio_read_from_the_histogram_is_the_plain_one_within_a_bin(llama):
    """measures.bos_ratio (the BOS norm over the median of the other positions) equals NormStats.bos_ratio, whose
    median is read from figure 1's histogram: within its bins of 0.005 in log10 (1.2%)."""
    stats = engine.collect(llama, PROMPTS, batch_size=3, pad=0)
    plain = measures.bos_ratio(measures.values_per_prompt(llama, PROMPTS, 0)["resid_post"])
    np.testing.assert_allclose(stats.bos_ratio(), plain, rtol=0.012)


def test_gated_mlps_count_gates_with_the_norm_their_mlp_reads_through(llama, olmo2):
    """Figure 12 with a gated MLP: the fraction of gates x @ W_gate > 0 (hook_pre), through ln2 in Llama and
    through nothing in OLMo 2, whose MLP reads resid_mid raw; measures.active_count must count what hook_pre holds."""
    for model in (llama, olmo2):
        assert measures.gated(model) and measures.nonlinearity(model) == "SwiGLU"
        _, cache = instrument.run_with_cache(model, torch.tensor([PROMPTS[2]]), unembed=False)
        for layer in range(model.cfg.n_layers):
            resid_mid = cache[measures.hook_name(layer, "resid_mid")][0]
            gate = cache[f"blocks.{layer}.mlp.hook_pre"][0]
            torch.testing.assert_close(measures.mlp_pre(model.blocks[layer], resid_mid), gate, rtol=1e-5, atol=1e-5)
            assert measures.active_count(model, layer, resid_mid) == int((gate > 0).sum())
    assert not hasattr(olmo2.blocks[0], "ln2")  # the case the norm-less path exists for


def test_weight_measures_take_w_ov_per_query_head_through_its_key_value_group(llama):
    w = weight_measures.weight_measures(llama, n_random=64)
    group = llama.cfg.n_heads // llama.cfg.n_kv_heads
    for layer, block in enumerate(llama.blocks):
        attn = block.attn
        expected = [float((attn.W_V[h // group] @ attn.W_O[h]).norm()) for h in range(llama.cfg.n_heads)]
        np.testing.assert_allclose(w["W_OV_frobenius"][layer], expected, rtol=1e-5)
        # Attention on random inputs, each head reading its own position: Σ_h x @ W_V[h // group] @ W_O[h].
        x = weight_measures.random_inputs(llama, 64)
        out = sum(x @ attn.W_V[h // group] @ attn.W_O[h] for h in range(llama.cfg.n_heads))
        assert w["ov_random_norm"][layer] == pytest.approx(float(out.norm(dim=-1).mean()), rel=1e-5)
        gate = x @ block.mlp.W_gate  # the inputs stand for ln2's output, which processing leaves without its gain
        assert w["active_random"][layer] == pytest.approx(float((gate > 0).float().mean()), abs=2 / gate.numel())
    assert w["W_OV_frobenius"].shape == (4, 4) and w["W_V_norm"].shape == (4,)


def test_random_inputs_are_what_the_model_s_norm_hands_on(llama, small_checkpoint):
    """RMSNorm's output has root mean square 1 and keeps a mean; LayerNorm's has mean 0 and variance 1."""
    x = weight_measures.random_inputs(llama, 256)
    torch.testing.assert_close(x.pow(2).mean(-1), torch.ones(256))
    assert float(x.mean(-1).abs().mean()) > 0.02  # not centred: a Gaussian mean over 64 entries, about 0.1
    gpt2, _ = weights.load(small_checkpoint)
    x = weight_measures.random_inputs(gpt2, 256)
    torch.testing.assert_close(x.mean(-1), torch.zeros(256), atol=1e-6, rtol=0)


def test_as_trained_reads_the_gains_each_block_has_under_their_own_names(llama, olmo2):
    grown = randomised(tiny_llama(seed=1), seed=1, gain_growth=1.2)
    trained = weight_measures.as_trained(grown)
    assert {"ln1_gain_rms", "ln2_gain_rms"} <= trained.keys() and "ln1_post_gain_rms" not in trained
    assert trained["ln1_gain_rms"][3] / trained["ln1_gain_rms"][0] == pytest.approx(1.2**3, rel=0.05)
    trained = weight_measures.as_trained(olmo2)  # OLMo 2: post-sublayer norms only
    assert "ln1_gain_rms" not in trained and {"ln1_post_gain_rms", "ln2_post_gain_rms"} <= trained.keys()
    rms = [float(b.ln2_post.w.pow(2).mean().sqrt()) for b in olmo2.blocks]
    np.testing.assert_allclose(trained["ln2_post_gain_rms"], rms, rtol=1e-6)
    w = weight_measures.weight_measures(olmo2, n_random=64)  # no ln2 before the MLP, kv-shaped W_V: no crash
    # mlp_out is ln2_post's output: a unit-RMS vector times the gain, whatever the MLP's input.
    expected = [float(np.sqrt(64) * r) for r in rms]
    np.testing.assert_allclose(w["mlp_random_norm"], expected, rtol=0.15)


def test_architecture_says_what_processing_folded_and_what_each_model_has(llama, olmo2):
    qwen = tiny_llama(qk_norm=True)
    qwen.source = {"model_type": "qwen3"}
    assert measures.family(qwen) == "Qwen 3" and measures.family(llama) == "Llama" and measures.family(olmo2) == "OLMo 2"
    a = architecture.architecture(qwen)
    assert (a.norm, a.qk_norm, a.n_heads, a.n_kv_heads, a.position_embedding) == ("RMSNorm", "per head", 4, 2, False)
    assert (a.pre_norms, a.post_norms) == (True, False)
    o = architecture.architecture(olmo2)
    assert (o.qk_norm, o.pre_norms, o.post_norms) == ("whole width", False, True)
    assert "ln1_post" in o.left and "ln2_post" in o.left and "nothing centred" in o.processing
    # Folding a gain sets it to None (weights.process): the sentence follows what the model holds.
    folded = tiny_llama()
    for block in folded.blocks:
        block.ln1.w = block.ln2.w = None
    assert architecture.architecture(folded).processing == (
        "ln1, ln2 gains folded into the weights that read them, nothing centred (RMSNorm does not subtract the mean)"
    )
    assert isinstance(folded.blocks[0].ln1, RMSNorm)


# ---------------------------------------------------------------------------------------------
# One study over GPT-2 and tiny Llama-, Qwen 3- and OLMo 2-shaped checkpoints in their released forms (issue 29's
# acceptance line): it runs, and its report names what each model cannot have.

GAIN_GROWTH = 1.1  # the Llama checkpoint's RMSNorm gains grow ×1.1 per layer: growth stored in the gains, a known answer


def with_released_tokenizer(directory: Path, name: str) -> Path:
    """The checkpoint's GPT-2 vocabulary files replaced by a tiny tokenizer.json in the released form (Llama 3.2's, with
    <|begin_of_text|> named as BOS; Qwen 3's, naming none, config.json's bos_token_id its <|endoftext|>), as
    tests/test_tokenizer_families.py builds them with `tokenizers`."""
    from test_tokenizer_families import FILES

    text = FILES[name]()
    ids = {token["content"]: token["id"] for token in json.loads(text)["added_tokens"]}
    for old in ("vocab.json", "merges.txt"):
        (directory / old).unlink()
    (directory / "tokenizer.json").write_text(text, encoding="utf-8")
    if name.startswith("llama"):
        said = {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}
        ids_in_config = {"bos_token_id": ids["<|begin_of_text|>"], "eos_token_id": ids["<|end_of_text|>"]}
    else:
        said = {"bos_token": None, "add_bos_token": False, "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
        ids_in_config = {"bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|endoftext|>"]}
    (directory / "tokenizer_config.json").write_text(json.dumps(said))
    config = json.loads((directory / "config.json").read_text()) | ids_in_config
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.fixture(scope="module")
def new_family_report(small_checkpoint, tmp_path_factory):
    from llama_checkpoints import write_llama

    from analysis import growth

    root = tmp_path_factory.mktemp("new-families")
    checkpoints = {
        "gpt2": small_checkpoint,
        "llama3": with_released_tokenizer(write_llama(root / "llama3", "llama3", seed=5, gain_growth=GAIN_GROWTH), "llama3.2"),
        "qwen3": with_released_tokenizer(write_llama(root / "qwen3", "qwen3", seed=6), "qwen3"),
        "olmo2": write_released(root / "olmo2", "olmo2", seed=7),
    }
    prompts = root / "prompts.txt"
    shipped = (Path(__file__).parent.parent / "analysis" / "prompts.txt").read_text(encoding="utf-8")
    prompts.write_text("\n".join(shipped.splitlines()[:16]), encoding="utf-8")  # 16 of the shipped prompts: quick
    out = root / "report"
    models = [arg for path in checkpoints.values() for arg in ("--model", str(path))]
    assert growth.main([*models, "--prompts-file", str(prompts), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    return checkpoints, out, {kind: summary["models"][str(path)] for kind, path in checkpoints.items()}


def test_one_study_runs_gpt2_llama_qwen3_and_olmo2_and_says_what_each_cannot_have(new_family_report):
    checkpoints, out, models = new_family_report
    report = (out / "report.md").read_text()
    new = {kind: checkpoints[kind].name for kind in ("llama3", "qwen3", "olmo2")}
    families = {"gpt2": "GPT-2", "llama3": "Llama", "qwen3": "Qwen 3", "olmo2": "OLMo 2"}
    assert {kind: m["family"] for kind, m in models.items()} == families
    assert {kind: m["nonlinearity"] for kind, m in models.items()} == {"gpt2": "GELU"} | dict.fromkeys(new, "SwiGLU")
    section = report.split("## What each model cannot have")[1].split("\n## ")[0]
    for kind, name in new.items():
        for said in ("‖x‖ includes the mean", "no W_pos", "grouped key-value heads", "figure 12 counts gates"):
            assert f"- {name}, {said}" in section, (kind, said)
        assert models[kind]["norm"] == "RMSNorm" and "nothing centred" in models[kind]["processed"]
        figures = {png.stem for png in (out / name).glob("*.png")}
        assert {"12-swiglu-gate-fraction", "17-centred-norm"} <= figures and "12-gelu-activation-rate" not in figures
        # ‖x − mean(x)‖ beside ‖x‖: never larger, and for these random models not the same
        norm, centred = np.array(models[kind]["mean_norm"]["resid_post"]), np.array(models[kind]["centred_norm"]["resid_post"])
        assert (centred <= norm * (1 + 1e-6)).all() and not np.allclose(centred, norm, rtol=1e-4)
        assert len(models[kind]["mlp_gate_positive_fraction"]) == models[kind]["n_layers"]
    assert f"- {new['olmo2']}, post-sublayer norms unfolded" in section
    assert (
        f"- {new['qwen3']}, q and k normalised per head" in section
        and f"- {new['olmo2']}, q and k normalised whole width" in section
    )
    qwen_bos = models["qwen3"]["bos"]
    assert qwen_bos["text"] == "<|endoftext|>" and qwen_bos["id"] != 50256  # its own tokenizer's, named by config.json
    assert f"- {new['qwen3']}, no BOS token of its own" in section and f"`<|endoftext|>` (id {qwen_bos['id']})" in section
    assert models["llama3"]["bos"]["text"] == "<|begin_of_text|>"
    gpt2 = checkpoints["gpt2"].name
    assert f"- {gpt2}," not in section and "centred_norm" not in models["gpt2"] and models["gpt2"]["norm"] == "LayerNorm"
    assert models["gpt2"]["processed"] == "LayerNorm folded, writing weights centred"
    assert models["llama3"]["processed"].startswith("ln1, ln2 gains folded into the weights that read them, nothing centred")
    assert "ln1_post, ln2_post gains left as trained" in models["olmo2"]["processed"]
    bos = report.split("## The BOS position")[1].split("\n## ")[0]
    for kind, path in checkpoints.items():
        ratio, token = models[kind]["bos_over_median_resid_post"], models[kind]["bos"]
        assert f"- **{path.name}** (`{token['text']}`, id {token['id']}): ×{ratio[-1]:.3g} at the last layer" in bos
    assert all(m["appendix1"]["violations"] == 0 for m in models.values())


def test_the_weights_table_finds_growth_stored_in_rmsnorm_gains_and_names_post_norm_gains(new_family_report):
    """The Llama checkpoint's gains grow ×1.1 per layer: its ln1 and ln2 gains, and its processed W_OV and W_in (the
    gains folded in), grow ×1.1 more than as trained. OLMo 2's gains are its post-sublayer norms', under their names."""
    checkpoints, out, models = new_family_report
    g = models["llama3"]["weights_growth_per_layer"]
    for ln in ("ln1_gain_rms", "ln2_gain_rms"):
        assert g[ln] == pytest.approx(GAIN_GROWTH, abs=0.03), ln
    assert g["W_OV_frobenius"] / g["W_OV_as_trained"] == pytest.approx(GAIN_GROWTH, abs=0.03)
    assert g["W_in_norm"] / g["W_in_as_trained"] == pytest.approx(GAIN_GROWTH, abs=0.03)
    olmo2 = models["olmo2"]["weights_growth_per_layer"]
    assert {"ln1_post_gain_rms", "ln2_post_gain_rms"} <= olmo2.keys() and "ln1_gain_rms" not in olmo2
    table = (out / "report.md").read_text().split("## Where the growth is stored")[1]
    assert "| ln1_post gain | ln2_post gain |" in table and "per key-value group" in table
    figure_8 = table.split(f"# {checkpoints['llama3'].name}\n")[1].split("## 9.")[0]
    assert "head h's W_OV is W_V[h // 2] @ W_O[h]: W_V per key-value group" in figure_8
    assert f"\n| {checkpoints['olmo2'].name} | unknown | ×" in table


def test_the_gpu_batch_size_counts_what_an_rmsnorm_model_keeps_and_its_gated_mlp(llama, monkeypatch):
    """A pass keeps 11 quantities per layer for an RMSNorm model (CENTRED's five beside PER_POSITION's six), and a
    gated MLP holds one more d_mlp-wide product: the memory estimate per position counts both, and Qwen 3's heads
    wider than d_model."""
    asked = {}
    monkeypatch.setattr(engine.batching, "batch_positions", lambda *args, **kinds: asked.update(kinds) or 512)
    engine.positions_per_pass(llama, PROMPTS)
    assert asked == {"n_quantities": 11, "gated": True}
    cfg, e = llama.cfg, 4
    plain = engine.batching.bytes_per_position(cfg, torch.float32, 32)
    assert engine.batching.bytes_per_position(cfg, torch.float32, 32, gated=True) == plain + cfg.d_mlp * e
    assert engine.batching.bytes_per_position(cfg, torch.float32, 32, n_quantities=11) == plain + 5 * cfg.n_layers * 4
    wide = LlamaConfig(n_layers=4, d_model=64, n_heads=4, d_head=32, d_mlp=96, d_vocab=300, n_ctx=64, n_kv_heads=2)
    assert engine.batching.bytes_per_position(wide, torch.float32, 32) == plain + 12 * (128 - 64) * e


def test_the_weight_decay_of_llama_qwen_and_olmo_releases_is_unknown_until_a_source_states_it():
    """Decided for issue 29: no source at hand states the pretraining weight decay of these released sizes."""
    from types import SimpleNamespace

    from analysis import report

    for repo in ("meta-llama/Llama-3.2-1B", "Qwen/Qwen3-0.6B", "allenai/OLMo-2-0425-1B"):
        assert report.weight_decay(SimpleNamespace(source={"repo": repo})) == "unknown", repo


def test_a_gemma_study_says_what_gemma_adds(tmp_path):
    """Gemma 2 (tiny, GPT-2's vocabulary files as its tokenizer, since Gemma's own is refused): the report says its
    embedding is scaled by √d_model, its soft caps, its window, and that its gates are GELU's."""
    import shutil

    from olmo_gemma_checkpoints import gpt2_vocab_files

    from analysis import growth

    directory = write_released(tmp_path / "gemma2", "gemma2", seed=4, change={"vocab_size": 50304})
    for name, path in zip(("vocab.json", "merges.txt"), gpt2_vocab_files()):
        shutil.copy(path, directory / name)
    prompts = tmp_path / "prompts.txt"
    shipped = (Path(__file__).parent.parent / "analysis" / "prompts.txt").read_text(encoding="utf-8")
    prompts.write_text("\n".join(shipped.splitlines()[:6]), encoding="utf-8")
    out = tmp_path / "report"
    assert growth.main(["--model", str(directory), "--prompts-file", str(prompts), "--out", str(out), "--truncate"]) == 0
    section = (out / "report.md").read_text().split("## What each model cannot have")[1].split("\n## ")[0]
    assert "- gemma2, a scaled embedding: each token's row of W_E is multiplied by √d_model = 8 " in section
    assert "it caps the attention scores at ±5 and the logits at ±5 (which the study does not read)" in section
    assert "layer 0's resid_pre is its row of W_E times √d_model" in section
    assert "gelu(g) > 0 iff g > 0" in section and "silu" not in section


def test_the_bos_peak_is_taken_over_the_finite_layers_and_says_so():
    """A float16 overflow leaves NaN ratios at the deep layers: the peak is the finite layers', named as such."""
    from types import SimpleNamespace

    from analysis.differences import bos_section

    ratio = np.array([2.0, 5.0, 3.0, np.nan, np.nan])
    r = SimpleNamespace(act=SimpleNamespace(bos_ratio=lambda: ratio), slug="m", bos=(0, "<s>"), cfg=SimpleNamespace(n_layers=5))
    line = bos_section([r])[4]
    assert line == "- **m** (`<s>`, id 0): ×NaN at the last layer (layer 4); largest of the finite layers (0–2) at layer 1, ×5."
