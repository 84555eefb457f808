"""Llama, Mistral, Qwen 2 and Qwen 3 against Hugging Face's own classes, and the RMSNorm rewrites' invariances.

The checkpoints are tests/llama_checkpoints.py's: built by LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM
and Qwen3ForCausalLM from config.json in the releases' form, saved as the releases are (model.safetensors, keys
under "model.", bfloat16 where released), with random RMSNorm gains and biases. The prompts (40 tokens) are longer
than the sliding windows (8).

Tolerances are tests/test_families.py's: logits and log-probs ≤ 1e-4 max abs; residual streams ≤ 1e-4 relative per
position. Measured maxima are printed at the end of the run.
"""

import json

import pytest
import torch
from conftest import record
from llama_checkpoints import KINDS, N_KV_HEADS, N_LAYERS, WINDOW, hf_class, write_llama

import instrument
import weights
from minigpt import Llama, LlamaConfig
from minigpt.llama import llama3_frequencies

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
    for processed in (False,):  # processed: with the RMSNorm rewrites (next commit)
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
