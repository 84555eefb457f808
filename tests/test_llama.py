"""Llama, Mistral, Qwen 2 and Qwen 3 against Hugging Face's own classes, and the RMSNorm rewrites' invariances.

The checkpoints are tests/llama_checkpoints.py's: built by LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM
and Qwen3ForCausalLM from config.json in the releases' form, saved as the releases are (model.safetensors, keys
under "model.", bfloat16 where released), with random RMSNorm gains and biases. The prompts (40 tokens) are longer
than the sliding windows (8).

Tolerances are tests/test_families.py's: logits and log-probs ≤ 1e-4 max abs; residual streams ≤ 1e-4 relative per
position. Measured maxima are printed at the end of the run.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import HubServer, commit_repo, record
from llama_checkpoints import KINDS, N_KV_HEADS, N_LAYERS, WINDOW, hf_class, write_llama
from safetensors.torch import load_file, save_file

import instrument
import weights
from minigpt import Llama, LlamaConfig
from minigpt.llama import llama3_frequencies
from weights import CheckpointError

TOL = 1e-4


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("llama")
    return {kind: write_llama(root / kind, kind, seed=7) for kind in KINDS}


def prompts(n_batch=2, n_pos=40, seed=0):
    return torch.randint(0, 50257, (n_batch, n_pos), generator=torch.Generator().manual_seed(seed))


def hf_reference(directory):
    config = json.loads((directory / "config.json").read_text())
    model, info = hf_class(config).from_pretrained(
        directory, dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["mismatched_keys"], info
    return model.eval()


def relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return ((ours - theirs).norm(dim=-1) / theirs.norm(dim=-1)).max().item()


def resid(name: str) -> bool:
    return name.endswith("hook_resid_post") or name.endswith("hook_resid_mid") or name == "blocks.0.hook_resid_pre"


@torch.no_grad()
def check_against_hf(directory, label: str) -> None:
    """Unprocessed logits and every residual; processed log-probs and residuals (RMSNorm folding centres nothing,
    so the processed residual stream is HF's own). Block outputs are taken by forward hooks on HF's layers: its last
    hidden_states entry is after the final norm."""
    tokens = prompts()
    hf, blocks = hf_reference(directory), []
    handles = [layer.register_forward_hook(lambda _m, _i, out: blocks.append(out)) for layer in hf.model.layers]
    theirs = hf(tokens, output_hidden_states=True)
    for handle in handles:
        handle.remove()
    assert len(blocks) == N_LAYERS
    for processed in (False, True):
        model, _ = weights.load(directory, processed=processed)
        logits, cache = instrument.run_with_cache(model, tokens, names=resid)
        if processed:
            diff = (logits.log_softmax(-1) - theirs.logits.log_softmax(-1)).abs().max().item()
            record(f"{label} processed: log-probs, max abs diff", diff, TOL)
        else:
            record(f"{label}: logits, max abs diff", (logits - theirs.logits).abs().max().item(), TOL)
        worst = relative(cache["blocks.0.hook_resid_pre"], theirs.hidden_states[0])
        for l in range(N_LAYERS):
            worst = max(worst, relative(cache[f"blocks.{l}.hook_resid_post"], blocks[l]))
        record(f"{label}{' processed' if processed else ''}: residuals (every block), relative", worst, TOL)


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_matches_hugging_face(checkpoints, kind):
    check_against_hf(checkpoints[kind], kind)


def test_each_kind_reads_its_release_s_settings(checkpoints):
    cfgs = {kind: weights.read_config(directory) for kind, directory in checkpoints.items()}
    assert all(type(cfg) is LlamaConfig for cfg in cfgs.values())
    assert {kind for kind, cfg in cfgs.items() if cfg.tied} == {"llama3", "qwen2", "qwen2-window", "qwen3"}
    assert (cfgs["mistral"].window_size, cfgs["mistral"].local_layers) == (WINDOW, (0, 1, 2, 3))
    assert (cfgs["qwen2-window"].window_size, cfgs["qwen2-window"].local_layers) == (WINDOW, (2, 3))
    assert all(cfgs[kind].window_size is None and not cfgs[kind].local_layers for kind in ("llama3", "llama", "qwen2", "qwen3"))
    assert [kind for kind, cfg in cfgs.items() if cfg.qkv_bias] == ["qwen2", "qwen2-window"]
    assert not any(cfg.o_bias for cfg in cfgs.values()) and [k for k, c in cfgs.items() if c.qk_norm] == ["qwen3"]
    assert cfgs["qwen3"].d_head == 32 and cfgs["llama"].d_head == 16 and all(c.n_kv_heads == N_KV_HEADS for c in cfgs.values())
    llama3 = cfgs["llama3"]
    assert (llama3.rope_type, llama3.rope_base, llama3.rope_factor, llama3.rope_original_context) == ("llama3", 5e5, 32.0, 32)
    # The stretch matters at this size: some pairs turn slower than the default rotation would turn them.
    default = LlamaConfig(**{**llama3.__dict__, "rope_type": "default"})
    inv_freq = 1.0 / (llama3.rope_base ** (torch.arange(0, 16, 2).float() / 16))
    assert (llama3_frequencies(inv_freq, llama3) < inv_freq).sum() >= 3 and default.rope_type == "default"


def test_each_kind_loads_as_llama_with_its_unembedding(checkpoints):
    for kind, directory in checkpoints.items():
        model, _ = weights.load(directory, processed=False)
        assert type(model) is Llama and model.W_pos is None, kind
        assert (model.W_U is None) == model.cfg.tied, kind
    untied, _ = weights.load(checkpoints["llama"], processed=False)
    assert untied.W_U.shape == (64, 50257) and not torch.equal(untied.W_U, untied.W_E.T)


@pytest.mark.parametrize("kind, dtype", [("qwen3", torch.bfloat16), ("llama3", torch.float16)])
def test_half_precision_follows_float32(checkpoints, kind, dtype):
    """As for the other families: half-precision log-probs close to float32's, every parameter in that dtype."""
    tokens = prompts(n_batch=1, n_pos=24, seed=6)
    reference, _ = weights.load(checkpoints[kind])
    half, _ = weights.load(checkpoints[kind], dtype=dtype)
    assert {p.dtype for p in half.parameters()} == {dtype}
    with torch.no_grad():
        expected, found = reference(tokens).log_softmax(-1), half(tokens).float().log_softmax(-1)
    assert (found - expected).abs().max() < 0.1


def hook_names(model) -> set[str]:
    return {re.sub(r"blocks\.\d+\.", "blocks.{l}.", name) for name in instrument.hook_points(model)}


def test_hook_names_are_gpt2s_with_the_gated_mlp_s_and_qwen3_s_norms(checkpoints, small_checkpoint):
    gpt2 = hook_names(weights.load(small_checkpoint, processed=False)[0])
    llama = hook_names(weights.load(checkpoints["llama"], processed=False)[0])
    qwen3, _ = weights.load(checkpoints["qwen3"], processed=False)
    assert gpt2 - llama == {"hook_pos_embed"}
    added = {"blocks.{l}.attn.hook_rot_q", "blocks.{l}.attn.hook_rot_k", "blocks.{l}.mlp.hook_pre_linear"}
    assert llama - gpt2 == added
    norms = {f"blocks.{{l}}.attn.{n}.hook_{h}" for n in ("q_norm", "k_norm") for h in ("scale", "normalized")}
    assert hook_names(qwen3) - gpt2 == added | norms
    _, cache = instrument.run_with_cache(qwen3, prompts(n_batch=1, n_pos=5))
    assert cache["blocks.0.attn.hook_q"].shape == (1, 5, 4, 32)  # n_heads query heads of head_dim 32
    assert cache["blocks.0.attn.hook_k"].shape == cache["blocks.0.attn.hook_v"].shape == (1, 5, N_KV_HEADS, 32)
    assert cache["blocks.0.attn.hook_z"].shape == (1, 5, 4, 32) and cache["blocks.0.mlp.hook_pre_linear"].shape == (1, 5, 96)


# ---------------------------------------------------------------------------------------------------------
# The rewrites: each alone, and `process`, for every kind.


@pytest.mark.parametrize("kind", KINDS)
def test_each_rewrite_alone_leaves_log_probs_unchanged(checkpoints, kind):
    tokens = prompts(n_batch=1, seed=1)
    reference, _ = weights.load(checkpoints[kind], processed=False)
    with torch.no_grad():
        before = reference(tokens)
    for rewrite in ("fold_layer_norm", "center_unembed", "fold_value_biases"):
        rewritten, _ = weights.load(checkpoints[kind], processed=False)
        getattr(weights, rewrite)(rewritten)
        with torch.no_grad():
            after = rewritten(tokens)
        diff = (after.log_softmax(-1) - before.log_softmax(-1)).abs().max().item()
        record(f"{kind}, {rewrite} alone: log-probs, max abs diff", diff, TOL)
        if rewrite != "center_unembed":  # the only rewrite that shifts logits (by a constant per position)
            record(f"{kind}, {rewrite} alone: logits, max abs diff", (after - before).abs().max().item(), TOL)


def test_processing_folds_the_pre_norms_and_keeps_what_cannot_fold(checkpoints):
    model, _ = weights.load(checkpoints["qwen3"])
    for norm in [*(b.ln1 for b in model.blocks), *(b.ln2 for b in model.blocks), model.ln_final]:
        assert norm.w is None
    assert all(b.attn.q_norm.w is not None and b.attn.k_norm.w is not None for b in model.blocks)  # after rotation: stays
    assert model.W_U is not None and model.b_U is None  # untied to be folded; RMSNorm has no bias to give it one
    assert model.W_U.mean(-1).abs().max() < 1e-6  # centred over the vocabulary
    qwen2, _ = weights.load(checkpoints["qwen2"])
    assert all(torch.all(b.attn.b_V == 0) for b in qwen2.blocks)
    released, _ = weights.load(checkpoints["qwen2"], processed=False)
    assert all(not torch.all(b.attn.b_V == 0) for b in released.blocks)  # the biases were there to fold
    with pytest.raises(ValueError, match="RMSNorm gains are already folded"):
        weights.fold_layer_norm(model)


def test_writing_weights_are_not_centred_for_rmsnorm_and_softcapped_logits_not_shifted(checkpoints):
    model, _ = weights.load(checkpoints["llama"], processed=False)
    with pytest.raises(ValueError) as error:
        weights.center_writing_weights(model)
    assert "reads its residual stream with RMSNorm" in str(error.value) and "\n" not in str(error.value)
    model.final_softcap = 30.0  # as Gemma 2's logits are: softcap · tanh(logits / softcap)
    with pytest.raises(ValueError, match=r"center_unembed: Llama softcaps its logits \(final_softcap 30.0\)"):
        weights.center_unembed(model)
    weights.process(model)  # skips both, folds the rest
    assert model.ln_final.w is None and model.b_U is None


def test_dropping_the_unembedding_leaves_every_residual_hook_unchanged(checkpoints):
    full, _ = weights.load(checkpoints["llama3"])
    stream_only, _ = weights.load(checkpoints["llama3"], unembed=False)
    tokens = prompts(n_batch=1, n_pos=12, seed=3)
    _, expected = instrument.run_with_cache(full, tokens, unembed=False)
    _, found = instrument.run_with_cache(stream_only, tokens, unembed=False)
    assert found.keys() == expected.keys()
    for name in found:
        torch.testing.assert_close(found[name], expected[name], rtol=0, atol=0)
    assert stream_only.W_U is None and stream_only.ln_final is None


# ---------------------------------------------------------------------------------------------------------
# Other settings the classes read, other forms of the same files, and what is refused.


@pytest.mark.parametrize(
    "kind, changes",
    [
        ("llama", {"attention_bias": True}),  # q, k, v and o biases (LlamaAttention)
        ("qwen3", {"attention_bias": True}),
        ("llama", {"rope_scaling": {"type": "linear", "factor": 4.0}}),  # transformers 4.x's "type"
        ("llama", {"pretraining_tp": 2}),  # only cut 4.x's products into slices: the same sums, read as 1
        ("llama", {"num_key_value_heads": None}),  # null: HF's default, one key-value head per query head
    ],
)
def test_other_settings_the_classes_read_match_hugging_face(tmp_path, kind, changes):
    directory = write_llama(tmp_path / kind, kind, seed=5, changes=changes)
    check_against_hf(directory, f"{kind} {changes}")


@pytest.mark.parametrize("kind, changes", [("mistral", {}), ("qwen2", {"use_sliding_window": True})])
def test_an_absent_sliding_window_is_hfs_default_of_4096_and_null_is_none(checkpoints, tmp_path, kind, changes):
    """HF's MistralConfig and Qwen2Config give sliding_window 4096 where config.json lacks it, and none where it is
    null: a config.json without the field must not read as a model without a window (silent past 4096 tokens)."""
    from transformers import AutoConfig

    directory = tmp_path / kind
    shutil.copytree(checkpoints[kind], directory)
    config = json.loads((directory / "config.json").read_text()) | changes
    config.pop("sliding_window", None)
    config.pop("layer_types", None)
    config["max_window_layers"] = 0
    (directory / "config.json").write_text(json.dumps(config))
    cfg = weights.read_config(directory)
    hf = AutoConfig.from_pretrained(directory)
    assert cfg.window_size == hf.sliding_window == 4096 and cfg.local_layers == tuple(range(cfg.n_layers))
    (directory / "config.json").write_text(json.dumps(config | {"sliding_window": None}))
    if kind == "mistral":
        assert weights.read_config(directory).window_size is None and not weights.read_config(directory).local_layers


def test_both_config_forms_and_save_pretrained_files_read_the_same(checkpoints, tmp_path):
    """transformers 5's save_pretrained writes rope_parameters (and Qwen's layer_types) in place of rope_theta and
    rope_scaling, drops a tied lm_head and writes float32: the same config, exactly the same model."""
    tokens = prompts(n_batch=1, n_pos=12, seed=4)
    for kind in KINDS:
        source, saved = checkpoints[kind], tmp_path / kind
        hf_reference(source).save_pretrained(saved)
        written = json.loads((saved / "config.json").read_text())
        assert "rope_parameters" in written and "rope_scaling" not in written and "rope_theta" not in written, kind
        assert ("layer_types" in written) == kind.startswith("qwen"), kind
        for name in ("vocab.json", "merges.txt"):
            shutil.copy(source / name, saved / name)
        assert weights.read_config(saved) == weights.read_config(source), kind
        with torch.no_grad():
            expected = weights.load(source, processed=False)[0](tokens)
            found = weights.load(saved, processed=False)[0](tokens)
        assert torch.equal(found, expected), kind


def test_a_tied_lm_head_in_the_file_is_checked_not_read(tmp_path):
    tied = write_llama(tmp_path / "tied", "qwen3", seed=2, with_tied_lm_head=True)
    assert "lm_head.weight" in load_file(tied / "model.safetensors")
    model, _ = weights.load(tied, processed=False)
    assert model.W_U is None
    state = load_file(tied / "model.safetensors")
    state["lm_head.weight"] = state["lm_head.weight"] + 1
    save_file(state, tied / "model.safetensors")
    with pytest.raises(CheckpointError, match="lm_head.weight differs from embed_tokens.weight; Llama ties them"):
        weights.load(tied)


def test_an_untied_model_without_its_lm_head_is_refused(checkpoints, tmp_path):
    directory = tmp_path / "llama"
    shutil.copytree(checkpoints["llama"], directory)
    state = load_file(directory / "model.safetensors")
    del state["lm_head.weight"]
    save_file(state, directory / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing \(1\): lm_head.weight"):
        weights.load(directory)


LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}


@pytest.mark.parametrize(
    "kind, change, message",
    [
        ("llama", {"hidden_act": "gelu"}, "hidden_act 'gelu'; minigpt's gated MLP is SwiGLU (silu)"),
        ("llama", {"mlp_bias": True}, "mlp_bias is true; minigpt's gated MLP has no biases"),
        ("llama", {"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling has rope_type 'yarn'"),
        ("llama", {"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "rope_scaling has rope_type 'dynamic'"),
        ("llama", {"rope_parameters": {"rope_type": "longrope"}}, "rope_parameters has rope_type 'longrope'"),
        ("llama", {"partial_rotary_factor": 0.5}, "partial_rotary_factor is 0.5; minigpt's Llama turns the whole head"),
        ("llama", {"rope_scaling": LLAMA3_ROPE | {"partial_rotary_factor": 0.5}}, "partial_rotary_factor is 0.5"),
        ("llama", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope_scaling: missing the field 'low_freq_factor'"),
        (
            "llama",
            {"rope_parameters": {"full_attention": {"rope_type": "default"}}},
            "rope_parameters holds one rotary embedding per layer type",
        ),
        ("llama", {"final_logit_softcapping": 30.0}, "final_logit_softcapping is 30.0; llama has no softcapping"),
        ("qwen3", {"attn_logit_softcapping": 50.0}, "attn_logit_softcapping is 50.0; qwen3 has no softcapping"),
        ("mistral", {"num_key_value_heads": 3}, "num_attention_heads 4 is not a multiple of num_key_value_heads 3"),
        (
            "qwen2",
            {"layer_types": ["full_attention"] * 3},
            "layer_types is ['full_attention', 'full_attention', 'full_attention']",
        ),
        ("qwen2", {"layer_types": ["full_attention", "chunked_attention"] * 2}, "expected 4 of 'sliding_attention'"),
        ("qwen2", {"layer_types": [["a"], {}, "full_attention", "full_attention"]}, "expected 4 of 'sliding_attention'"),
        ("qwen3", {"layer_types": ["sliding_attention"] * 4}, "layer_types names sliding_attention layers, but"),
        ("qwen3", {"head_dim": 15}, "d_head must be even for the rotary embedding's pairs, found 15"),
        ("qwen3", {"rms_norm_eps": 0}, "rms_norm_eps is 0; expected a positive number"),
        ("mistral", {"sliding_window": -1}, "sliding_window is -1; expected a positive integer"),
    ],
)
def test_unsupported_settings_are_refused_in_one_line_naming_the_field(checkpoints, tmp_path, kind, change, message):
    directory = tmp_path / kind
    shutil.copytree(checkpoints[kind], directory)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps(config | change))
    with pytest.raises(CheckpointError, match=re.escape(message)) as error:
        weights.load(directory)
    assert "\n" not in str(error.value) and str(error.value).startswith(str(directory / "config.json"))


# ---------------------------------------------------------------------------------------------------------
# The hub path: one repository per model_type through olah on 127.0.0.1, as tests/test_families.py does.

HUB_REPOS = {"llama3": "meta-llama/Llama-3.2-1B", "mistral": "mistralai/Mistral-7B-v0.1", "qwen2": "Qwen/Qwen2.5-0.5B"}
HUB_REPOS |= {"qwen3": "Qwen/Qwen3-0.6B"}

LOAD_FROM_HUB = """
import sys, torch, weights
found = {}
for repo in sys.argv[2:]:
    model, _ = weights.load(repo, processed=False)
    with torch.no_grad():
        found[repo] = model(torch.arange(12)[None] * 997)
torch.save(found, sys.argv[1])
"""


def test_each_model_type_downloads_through_the_hub_and_loads_as_from_its_directory(checkpoints, tmp_path):
    mirrors = tmp_path / "mirrors"
    for kind, repo in HUB_REPOS.items():
        commit_repo(mirrors, repo, {path.name: path for path in checkpoints[kind].iterdir()})
    (tmp_path / "olah").mkdir()
    server = HubServer(mirrors, tmp_path / "olah")
    try:
        command = [sys.executable, "-c", LOAD_FROM_HUB, str(tmp_path / "out.pt"), *HUB_REPOS.values()]
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
    found = torch.load(tmp_path / "out.pt", weights_only=True)
    for kind, repo in HUB_REPOS.items():
        with torch.no_grad():
            expected = weights.load(checkpoints[kind], processed=False)[0](torch.arange(12)[None] * 997)
        assert torch.equal(found[repo], expected), repo


def test_the_builder_s_gain_growth_is_stored_in_the_gains(tmp_path):
    """llama_checkpoints.write_llama(gain_growth=g) multiplies layer l's norm gains by g**l: a known answer for studies."""
    model, _ = weights.load(write_llama(tmp_path / "grown", "llama", seed=3, gain_growth=2.0), processed=False)
    rms = [float(block.ln1.w.pow(2).mean().sqrt()) for block in model.blocks]
    assert [b / a for a, b in zip(rms, rms[1:])] == pytest.approx([2.0] * (N_LAYERS - 1), rel=0.15)


def test_the_model_records_its_model_type_so_that_one_class_is_named_per_release(checkpoints):
    """Qwen and Mistral are minigpt.llama.Llama: weights.load records config.json's model_type, which names them."""
    from analysis import measures

    names = {kind: measures.family(weights.load(checkpoints[kind], processed=False)[0]) for kind in ("llama", "mistral", "qwen3")}
    assert names == {"llama": "Llama", "mistral": "Mistral", "qwen3": "Qwen 3"}
