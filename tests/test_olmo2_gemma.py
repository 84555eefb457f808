"""OLMo 2, Gemma 2 and Gemma 3 against Hugging Face's own classes, the rewrites on them, and what is refused.

The checkpoints are tests/olmo_gemma_checkpoints.py's: built by Olmo2ForCausalLM, Gemma2ForCausalLM and
Gemma3ForCausalLM from config.json in the released form and written as released (keys, dtype), every weight and
every norm gain random. The prompts (40 tokens) are longer than the window (8), so sliding layers matter.
Tolerances are tests/test_families.py's: logits and log-probs ≤ 1e-4 max abs; residual streams ≤ 1e-4 relative
per position. Measured maxima are printed at the end of the run.

Gemma's tokenizer (SentencePiece-style BPE) is refused by minigpt's reader, so Gemma is read with
weights.read_model and fed token ids; OLMo 2 also goes through weights.load and the hub, with GPT-2's vocabulary.
"""

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import HubServer, commit_repo, record
from olmo_gemma_checkpoints import D_VOCAB, HF_CLASSES, N_LAYERS, WINDOW, hf_run, write_released

import instrument
import weights
from minigpt.gemma import Gemma, GemmaConfig
from minigpt.olmo2 import OLMo2
from weights import CheckpointError

TOL = 1e-4
# gemma3_linear: Gemma 3 with the linear stretch of the global layers that the larger Gemma 3s set (rope_scaling).
CHECKPOINTS = {
    "olmo2": ("olmo2", {}),
    "gemma2": ("gemma2", {}),
    "gemma3_text": ("gemma3_text", {}),
    "gemma3_linear": ("gemma3_text", {"rope_scaling": {"rope_type": "linear", "factor": 8.0}}),
}
FAMILIES = ["olmo2", "gemma2", "gemma3_text"]


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("olmo-gemma")
    return {name: write_released(root / name, family, seed=5, change=change) for name, (family, change) in CHECKPOINTS.items()}


def prompts(name: str, n_batch=2, n_pos=40, seed=0) -> torch.Tensor:
    d_vocab = D_VOCAB[CHECKPOINTS[name][0]]
    return torch.randint(0, d_vocab, (n_batch, n_pos), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="session")
def hf_outputs(checkpoints):
    """HF's logits, embedding and block outputs for each checkpoint on its prompts, computed once."""
    return {name: hf_run(checkpoints[name], CHECKPOINTS[name][0], prompts(name)) for name in CHECKPOINTS}


def relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return ((ours - theirs).norm(dim=-1) / theirs.norm(dim=-1)).max().item()


def is_resid(name: str) -> bool:
    return name.endswith("hook_resid_post") or name == "blocks.0.hook_resid_pre"


def worst_residual(cache, hf_embedded, hf_blocks) -> float:
    worst = relative(cache["blocks.0.hook_resid_pre"], hf_embedded)
    return max(worst, *(relative(cache[f"blocks.{l}.hook_resid_post"], block) for l, block in enumerate(hf_blocks)))


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_each_family_matches_hugging_face(checkpoints, hf_outputs, name):
    """Logits and every residual as released; processed, the log-probs, and the residual stream unchanged (RMSNorm
    centres nothing, so no rewrite moves the stream: folding gains changes only the weights that read it)."""
    hf_logits, hf_embedded, hf_blocks = hf_outputs[name]
    assert len(hf_blocks) == N_LAYERS[CHECKPOINTS[name][0]]
    tokens = prompts(name)
    model = weights.read_model(checkpoints[name])
    logits, cache = instrument.run_with_cache(model, tokens, names=is_resid)
    record(f"{name}: unprocessed logits, max abs diff", (logits - hf_logits).abs().max().item(), TOL)
    record(f"{name}: unprocessed residuals (every block), relative", worst_residual(cache, hf_embedded, hf_blocks), TOL)

    weights.process(model)
    logits, cache = instrument.run_with_cache(model, tokens, names=is_resid)
    diff = (logits.log_softmax(-1) - hf_logits.log_softmax(-1)).abs().max().item()
    record(f"{name}: processed log-probs, max abs diff", diff, TOL)
    record(f"{name}: processed residuals (every block), relative", worst_residual(cache, hf_embedded, hf_blocks), TOL)


def test_olmo2_loads_with_its_tokenizer_as_its_own_model(checkpoints, hf_outputs):
    model, tokenizer = weights.load(checkpoints["olmo2"], processed=False)
    assert type(model) is OLMo2 and tokenizer.bos == 50256
    assert model.W_pos is None and model.W_U.shape == (64, D_VOCAB["olmo2"]) and not torch.equal(model.W_U, model.W_E.T)
    assert not hasattr(model.blocks[0], "ln1") and not hasattr(model.blocks[0], "ln2")
    assert model.blocks[0].attn.q_norm.w.shape == (64,) and model.blocks[0].attn.k_norm.w.shape == (32,)  # whole width
    with torch.no_grad():
        logits = model(prompts("olmo2"))
    assert (logits - hf_outputs["olmo2"][0]).abs().max() <= TOL
    stream_only, _ = weights.load(checkpoints["olmo2"], processed=False, unembed=False)  # ln_final and lm_head unread
    assert stream_only.W_U is None and stream_only.ln_final is None
    with torch.no_grad():
        assert torch.equal(stream_only(prompts("olmo2"), unembed=False), model(prompts("olmo2"), unembed=False))


def test_gemma_reads_its_config(checkpoints):
    gemma2, gemma3, linear = (weights.read_model(checkpoints[n]) for n in ("gemma2", "gemma3_text", "gemma3_linear"))
    assert type(gemma2) is Gemma and gemma2.W_U is None  # tied
    assert gemma2.cfg.local_layers == (0, 2) and gemma2.cfg.window_size == WINDOW  # every other layer, from layer 0
    assert (gemma2.cfg.attn_softcap, gemma2.final_softcap, gemma2.cfg.query_pre_attn_scalar) == (5.0, 5.0, 32.0)
    assert gemma3.cfg.local_layers == (0, 1, 2, 3, 4) and gemma3.final_softcap is None and gemma3.cfg.qk_norm
    assert (gemma3.cfg.rope_local_base, gemma3.cfg.rope_base, gemma3.cfg.rope_type) == (10000.0, 1e6, "default")
    assert (linear.cfg.rope_type, linear.cfg.rope_factor) == ("linear", 8.0)


@pytest.mark.parametrize("name", ["gemma2", "gemma3_text"])
def test_gemma_fields_config_json_lacks_take_hfs_defaults(checkpoints, tmp_path, name):
    """Gemma's head_dim defaults to 256 (not d_model / n_heads) and sliding_window to 4096, as in HF's configs."""
    from transformers import AutoConfig

    directory = tmp_path / name
    shutil.copytree(checkpoints[name], directory)
    config = json.loads((directory / "config.json").read_text())
    for field in ("head_dim", "sliding_window"):
        config.pop(field, None)
    (directory / "config.json").write_text(json.dumps(config))
    cfg, hf = weights.read_config(directory), AutoConfig.from_pretrained(directory)
    assert (cfg.d_head, cfg.window_size) == (hf.head_dim, hf.sliding_window) == (256, 4096)


def test_gemma2_alternates_its_layers_whatever_sliding_window_pattern_says(checkpoints, tmp_path):
    """Gemma2Config does not read sliding_window_pattern (Gemma 3's field): its layers alternate from layer 0."""
    from transformers import AutoConfig

    directory = tmp_path / "gemma2"
    shutil.copytree(checkpoints["gemma2"], directory)
    config = json.loads((directory / "config.json").read_text()) | {"sliding_window_pattern": 3}
    config.pop("layer_types", None)
    (directory / "config.json").write_text(json.dumps(config))
    hf = AutoConfig.from_pretrained(directory)
    expected = tuple(i for i, kind in enumerate(hf.layer_types) if kind == "sliding_attention")
    assert weights.read_config(directory).local_layers == expected == (0, 2)


def test_gemma_gains_are_read_as_one_plus_the_stored_value(checkpoints):
    from safetensors.torch import load_file

    stored = load_file(checkpoints["gemma3_text"] / "model.safetensors")
    model = weights.read_model(checkpoints["gemma3_text"])
    for ours, theirs in (("blocks.1.ln2_post.w", "layers.1.post_feedforward_layernorm"), ("ln_final.w", "norm")):
        expected = 1 + stored[f"model.{theirs}.weight"].float()
        assert torch.equal(model.get_parameter(ours), expected)
    assert torch.equal(model.blocks[2].attn.k_norm.w, 1 + stored["model.layers.2.self_attn.k_norm.weight"].float())


def test_gemma_embedding_scale_is_rounded_to_the_models_dtype_as_hf_does():
    """gemma-3-1b-pt's √1152 = 33.94 is 34.0 in bfloat16, and HF multiplies by that: so does minigpt, exactly.
    (At the tests' d_model of 64, √64 = 8 is exact in every dtype, so the comparisons above cannot see it.)"""
    from transformers.models.gemma3.modeling_gemma3 import Gemma3TextScaledWordEmbedding

    d_model = 1152
    theirs = Gemma3TextScaledWordEmbedding(16, d_model, 0, embed_scale=d_model**0.5)
    torch.nn.init.normal_(theirs.weight, generator=torch.Generator().manual_seed(0))
    theirs = theirs.to(torch.bfloat16)
    cfg = GemmaConfig(n_layers=1, d_model=d_model, n_heads=4, d_head=256, d_mlp=8, d_vocab=16, n_ctx=8, n_kv_heads=1)
    with torch.device("meta"):
        model = Gemma(cfg)
    model.W_E = torch.nn.Parameter(theirs.weight.detach().clone(), requires_grad=False)
    tokens = torch.arange(16)[None]
    with torch.no_grad():
        assert torch.equal(model.embed(tokens), theirs(tokens))
        scaled_in_float32 = (model.W_E.float()[tokens] * d_model**0.5).to(torch.bfloat16)
        assert not torch.equal(scaled_in_float32, theirs(tokens))  # the rounding the test is about


def test_transformers_5_config_reads_the_same(checkpoints, tmp_path):
    """transformers 5 writes rope_parameters (Gemma 3's per layer type, {sliding_attention, full_attention}) and
    layer_types (beside sliding_window_pattern) instead of rope_theta, rope_local_base_freq and rope_scaling."""
    written = {}
    for name in ("olmo2", "gemma2", "gemma3_linear"):
        HF_CLASSES[CHECKPOINTS[name][0]].config_class.from_pretrained(checkpoints[name]).save_pretrained(tmp_path / name)
        written[name] = json.loads((tmp_path / name / "config.json").read_text())
        assert "rope_parameters" in written[name] and "rope_theta" not in written[name]
        assert weights.read_config(tmp_path / name) == weights.read_config(checkpoints[name])
    assert written["gemma3_linear"]["rope_parameters"]["full_attention"]["rope_type"] == "linear"
    assert written["gemma3_linear"]["rope_parameters"]["sliding_attention"]["rope_theta"] == 10000
    assert written["gemma3_linear"]["layer_types"] == ["sliding_attention"] * 5 + ["full_attention"]


def test_sliding_layers_read_only_the_window(checkpoints):
    model = weights.read_model(checkpoints["gemma2"])
    _, cache = instrument.run_with_cache(model, prompts("gemma2", n_batch=1), names=lambda name: name.endswith("hook_pattern"))
    back = torch.arange(40)[:, None] - torch.arange(40)[None, :]  # [query_pos, key_pos]
    for l in range(N_LAYERS["gemma2"]):
        pattern = cache[f"blocks.{l}.attn.hook_pattern"][0]  # [n_heads, query_pos, key_pos]
        readable = (back >= 0) & (back < WINDOW) if l in model.cfg.local_layers else back >= 0
        assert torch.all(pattern[:, ~readable] == 0) and torch.all(pattern[:, readable] > 0)


def test_gemma2s_soft_caps_are_reached(checkpoints, hf_outputs):
    """The tiny Gemma 2's caps bite: without either one, the logits move far past the tolerance."""
    tokens, hf_logits = prompts("gemma2"), hf_outputs["gemma2"][0]
    assert hf_logits.abs().max() < 5.0  # final_logit_softcapping
    no_final_cap, no_attention_cap = weights.read_model(checkpoints["gemma2"]), weights.read_model(checkpoints["gemma2"])
    no_final_cap.final_softcap = None
    for block in no_attention_cap.blocks:
        block.attn.cfg = dataclasses.replace(block.attn.cfg, attn_softcap=None)
    with torch.no_grad():
        assert (no_final_cap(tokens) - hf_logits).abs().max() > 1.0
        assert (no_attention_cap(tokens) - hf_logits).abs().max() > 1e-2


# ---------------------------------------------------------------------------------------------------------
# The rewrites: each alone keeps the log-probs, or is refused in one line; what process leaves unfolded.

REFUSED = {
    ("olmo2", "center_writing_weights"): "center_writing_weights",
    ("gemma2", "center_writing_weights"): "center_writing_weights",
    ("gemma3_text", "center_writing_weights"): "center_writing_weights",
    ("gemma2", "center_unembed"): "center_unembed",
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("rewrite", ["fold_layer_norm", "center_writing_weights", "center_unembed", "fold_value_biases"])
def test_each_rewrite_alone_leaves_log_probs_unchanged_or_is_refused(checkpoints, hf_outputs, family, rewrite):
    model = weights.read_model(checkpoints[family])
    if (family, rewrite) in REFUSED:
        with pytest.raises(ValueError) as error:
            getattr(weights, rewrite)(model)
        assert "\n" not in str(error.value) and REFUSED[family, rewrite] in str(error.value)
        return
    getattr(weights, rewrite)(model)
    with torch.no_grad():
        after = model(prompts(family))
    before = hf_outputs[family][0]
    diff = (after.log_softmax(-1) - before.log_softmax(-1)).abs().max().item()
    record(f"{family}, {rewrite} alone: log-probs, max abs diff", diff, TOL)
    if rewrite != "center_unembed":  # the only one that shifts the logits (by a constant per position)
        record(f"{family}, {rewrite} alone: logits, max abs diff", (after - before).abs().max().item(), TOL)


@pytest.mark.parametrize("family", FAMILIES)
def test_processing_folds_the_pre_norms_and_leaves_the_post_norms(checkpoints, family):
    model = weights.process(weights.read_model(checkpoints[family]))
    assert model.ln_final.w is None
    for block in model.blocks:
        assert block.ln1_post.w is not None and block.ln2_post.w is not None  # nothing reads them but the stream
        if family != "olmo2":
            assert block.ln1.w is None and block.ln2.w is None
        if family != "gemma2":
            assert block.attn.q_norm.w is not None and block.attn.k_norm.w is not None  # read by the rotation, not folded


# ---------------------------------------------------------------------------------------------------------
# Hook names: GPT-2's, less what the family lacks, plus its own norms and the gated MLP's second input.


def hook_names(model) -> set[str]:
    return {re.sub(r"blocks\.\d+\.", "blocks.{l}.", name) for name in instrument.hook_points(model)}


def test_hook_names(checkpoints, small_checkpoint):
    gpt2 = hook_names(weights.read_model(small_checkpoint))
    found = {family: hook_names(weights.read_model(checkpoints[family])) for family in FAMILIES}
    pre_norms = {f"blocks.{{l}}.{ln}.hook_{h}" for ln in ("ln1", "ln2") for h in ("scale", "normalized")}
    post_norms = {f"blocks.{{l}}.{ln}.hook_{h}" for ln in ("ln1_post", "ln2_post") for h in ("scale", "normalized")}
    qk_norms = {f"blocks.{{l}}.attn.{n}.hook_{h}" for n in ("q_norm", "k_norm") for h in ("scale", "normalized")}
    rotary_and_gate = {"blocks.{l}.attn.hook_rot_q", "blocks.{l}.attn.hook_rot_k", "blocks.{l}.mlp.hook_pre_linear"}
    assert gpt2 - found["olmo2"] == {"hook_pos_embed"} | pre_norms
    assert found["olmo2"] - gpt2 == rotary_and_gate | post_norms | qk_norms
    assert gpt2 - found["gemma2"] == gpt2 - found["gemma3_text"] == {"hook_pos_embed"}
    assert found["gemma2"] - gpt2 == rotary_and_gate | post_norms
    assert found["gemma3_text"] - gpt2 == rotary_and_gate | post_norms | qk_norms


def test_resid_mid_and_post_are_the_sums_of_the_hooked_outputs(checkpoints):
    """The post-norms sit before hook_attn_out and hook_mlp_out: the residual stream is still their sum."""
    for family in ("olmo2", "gemma3_text"):
        model = weights.read_model(checkpoints[family])
        _, cache = instrument.run_with_cache(model, prompts(family, n_batch=1))
        for l in range(model.cfg.n_layers):
            mid = cache[f"blocks.{l}.hook_resid_pre"] + cache[f"blocks.{l}.hook_attn_out"]
            assert torch.equal(cache[f"blocks.{l}.hook_resid_mid"], mid)
            assert torch.equal(cache[f"blocks.{l}.hook_resid_post"], mid + cache[f"blocks.{l}.hook_mlp_out"])


# ---------------------------------------------------------------------------------------------------------
# What is refused, in one line naming the field.


@pytest.mark.parametrize(
    "name, change, message",
    [
        ("olmo2", {"hidden_act": "gelu"}, "hidden_act 'gelu'; OLMo 2's MLP is SwiGLU (silu)"),
        ("olmo2", {"attention_bias": True}, "attention_bias is true; minigpt's OLMo 2 has no biases"),
        ("olmo2", {"tie_word_embeddings": True}, "tie_word_embeddings is true; OLMo 2 unembeds with its own lm_head"),
        ("olmo2", {"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling has rope_type 'yarn'"),
        ("olmo2", {"num_key_value_heads": 3}, "n_heads (4) must be a multiple of n_kv_heads (3)"),
        ("gemma2", {"hidden_activation": "silu"}, "hidden_activation 'silu'; Gemma uses gelu_pytorch_tanh"),
        ("gemma2", {"tie_word_embeddings": False}, "tie_word_embeddings is false; Gemma unembeds with its embedding"),
        ("gemma2", {"use_bidirectional_attention": True}, "use_bidirectional_attention is true"),
        ("gemma2", {"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_type 'linear'; Gemma 2 turns unscaled"),
        ("gemma2", {"layer_types": ["sliding_attention"] * 3}, "layer_types gives 3 layers, num_hidden_layers is 4"),
        ("gemma2", {"layer_types": ["chunked_attention"] * 4}, "layer_types ['chunked_attention']"),
        ("gemma2", {"attn_logit_softcapping": -1}, "attn_logit_softcapping is -1; expected a positive number"),
        ("gemma3_text", {"attn_logit_softcapping": 50.0}, "attn_logit_softcapping is set, and HF's Gemma 3 does not"),
        (
            "gemma3_text",
            {"rope_parameters": {"sliding_attention": {"rope_type": "linear", "factor": 2.0}, "full_attention": {}}},
            "the sliding layers' rope_type is 'linear'",
        ),
        ("gemma3_text", {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "rope_scaling has rope_type 'dynamic'"),
        ("gemma3_text", {"model_type": "gemma3"}, "model_type is 'gemma3'; minigpt reads the model types"),
    ],
)
def test_unsupported_settings_are_refused_in_one_line_naming_the_field(checkpoints, tmp_path, name, change, message):
    directory = tmp_path / name
    shutil.copytree(checkpoints[name], directory)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps(config | change))
    with pytest.raises(CheckpointError, match=re.escape(message)) as error:
        weights.read_model(directory)
    assert "\n" not in str(error.value) and str(error.value).startswith(str(directory / "config.json"))


def test_a_checkpoint_that_does_not_match_its_config_lists_every_problem(checkpoints, tmp_path):
    from safetensors.torch import load_file, save_file

    directory = tmp_path / "olmo2"
    shutil.copytree(checkpoints["olmo2"], directory)
    state = load_file(directory / "model.safetensors")
    del state["model.layers.1.self_attn.k_norm.weight"]
    state["model.layers.0.self_attn.q_norm.weight"] = torch.ones(16)  # per head, as Qwen 3's: not OLMo 2's
    save_file(state, directory / "model.safetensors")
    with pytest.raises(CheckpointError) as error:
        weights.read_model(directory)
    message = str(error.value)
    assert "missing (1): layers.1.self_attn.k_norm.weight" in message
    assert "wrong shape (1): layers.0.self_attn.q_norm.weight [16] (expected [64])" in message


# ---------------------------------------------------------------------------------------------------------
# The hub path: OLMo 2's repository through olah on 127.0.0.1, as tests/test_families.py does for the others.
# (Gemma's repositories ship a SentencePiece tokenizer that weights.load refuses; its files are read above.)

LOAD_FROM_HUB = """
import sys, torch, weights
model, tokenizer = weights.load(sys.argv[1], processed=False)
with torch.no_grad():
    logits = model(torch.tensor([[int(t) for t in sys.argv[3:]]]))
torch.save({"logits": logits, "type": type(model).__name__}, sys.argv[2])
"""


def test_olmo2_downloads_through_the_hub_and_loads_as_from_its_directory(checkpoints, tmp_path):
    repo, tokens = "allenai/OLMo-2-0425-1B", [str(t) for t in prompts("olmo2", n_batch=1, n_pos=12, seed=5)[0].tolist()]
    commit_repo(tmp_path / "mirrors", repo, {path.name: path for path in checkpoints["olmo2"].iterdir()})
    (tmp_path / "olah").mkdir()
    server = HubServer(tmp_path / "mirrors", tmp_path / "olah")
    try:
        command = [sys.executable, "-c", LOAD_FROM_HUB, repo, str(tmp_path / "out.pt"), *tokens]
        result = subprocess.run(
            command,
            env=server.env(tmp_path / "hf"),
            cwd=Path(__file__).parent.parent,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    (snapshot,) = (tmp_path / "hf" / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots").iterdir()
    assert sorted(p.name for p in snapshot.iterdir()) == sorted(p.name for p in checkpoints["olmo2"].iterdir())
    found = torch.load(tmp_path / "out.pt", weights_only=True)
    with torch.no_grad():
        expected = weights.read_model(checkpoints["olmo2"])(torch.tensor([[int(t) for t in tokens]]))
    assert found["type"] == "OLMo2" and torch.equal(found["logits"], expected)


@pytest.mark.parametrize("setting", [{"qk_norm": True}, {"window_size": 8, "local_layers": (0,)}])
def test_olmo2s_config_refuses_llamas_settings_it_has_no_use_for(setting):
    """Qwen 3's per-head q/k norms would be applied to OLMo 2's whole-width gains; a window would be silently ignored."""
    from minigpt.olmo2 import OLMo2Config

    with pytest.raises(ValueError, match="qk_norm and local_layers must be unset"):
        OLMo2Config(n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=96, d_vocab=100, n_ctx=32, n_kv_heads=2, **setting)
