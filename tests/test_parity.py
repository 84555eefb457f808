"""minigpt against Hugging Face's GPT2LMHeadModel (eager attention) on the same checkpoint files.

Tolerances (float32): logits and log-probs ≤ 1e-4 max abs; residual streams ≤ 1e-4 relative (per
position, ‖ours − theirs‖ / ‖theirs‖). Measured maxima are printed at the end of the run.
"""

import pytest
import torch
from conftest import record
from transformers import GPT2LMHeadModel

import instrument
import weights
from benchmarks.checkpoints import write_checkpoint
from minigpt import OFFICIAL, generate

TOL = 1e-4


def hf_model(directory):
    return GPT2LMHeadModel.from_pretrained(directory, attn_implementation="eager").eval()


def prompts(n_batch=2, n_pos=24, seed=0):
    return torch.randint(0, 50257, (n_batch, n_pos), generator=torch.Generator().manual_seed(seed))


def relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return ((ours - theirs).norm(dim=-1) / theirs.norm(dim=-1)).max().item()


def check_against_hf(directory, label: str):
    """Unprocessed logits and residuals, processed log-probs and centred residuals, all against HF."""
    tokens = prompts()
    with torch.no_grad():
        hf = hf_model(directory)(tokens, output_hidden_states=True)
    hf_log_probs = hf.logits.log_softmax(-1)
    n_layers = len(hf.hidden_states) - 1

    model, _ = weights.load(directory, processed=False)
    logits, cache = instrument.run_with_cache(model, tokens, names=lambda name: name.endswith("hook_resid_post"))
    record(f"{label}: unprocessed logits, max abs diff", (logits - hf.logits).abs().max().item(), TOL)
    # HF's last hidden state has ln_f applied, so the comparison stops one layer short.
    worst = max(relative(cache[f"blocks.{l}.hook_resid_post"], hf.hidden_states[l + 1]) for l in range(n_layers - 1))
    record(f"{label}: unprocessed resid_post vs hidden_states, relative", worst, TOL)

    processed, _ = weights.load(directory, processed=True)
    logits, cache = instrument.run_with_cache(processed, tokens, names=lambda name: name.endswith("hook_resid_post"))
    record(f"{label}: processed log-probs, max abs diff", (logits.log_softmax(-1) - hf_log_probs).abs().max().item(), TOL)
    worst = 0.0
    for l in range(n_layers - 1):
        centred = hf.hidden_states[l + 1] - hf.hidden_states[l + 1].mean(-1, keepdim=True)
        worst = max(worst, relative(cache[f"blocks.{l}.hook_resid_post"], centred))
    record(f"{label}: processed resid_post vs centred hidden_states, relative", worst, TOL)


def test_gpt2_full_shape_matches_hf(gpt2_checkpoint):
    check_against_hf(gpt2_checkpoint, "gpt2 (12x768)")


@pytest.mark.parametrize("name", ["gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2"])
def test_every_official_width_matches_hf(name, tmp_path):
    """The widths and head counts of the other four models, two layers deep to keep the suite fast."""
    cfg = OFFICIAL[name]
    directory = write_checkpoint(tmp_path, n_layers=2, d_model=cfg.d_model, n_heads=cfg.n_heads, seed=3)
    check_against_hf(directory, f"{name} width ({cfg.d_model}, {cfg.n_heads} heads, 2 layers)")


def test_twenty_greedy_tokens_match_hf_generate(small_checkpoint):
    model, tokenizer = weights.load(small_checkpoint, processed=False)
    prompt = tokenizer.encode("The residual stream of a transformer")
    ours = generate(model, prompt, 20)
    with torch.no_grad():
        theirs = hf_model(small_checkpoint).generate(
            torch.tensor([prompt]), max_new_tokens=20, do_sample=False, pad_token_id=tokenizer.eot
        )
    assert ours == theirs[0].tolist()


@pytest.mark.parametrize("rewrite", ["fold_layer_norm", "center_writing_weights", "center_unembed", "fold_value_biases"])
def test_each_rewrite_alone_leaves_log_probs_unchanged(small_checkpoint, rewrite):
    tokens = prompts(seed=1)
    reference, _ = weights.load(small_checkpoint, processed=False)
    rewritten, _ = weights.load(small_checkpoint, processed=False)
    getattr(weights, rewrite)(rewritten)
    with torch.no_grad():
        before, after = reference(tokens), rewritten(tokens)
    diff = (after.log_softmax(-1) - before.log_softmax(-1)).abs().max().item()
    record(f"{rewrite} alone: log-probs, max abs diff", diff, TOL)
    if rewrite != "center_unembed":  # the only rewrite that shifts logits (by a constant per position)
        record(f"{rewrite} alone: logits, max abs diff", (after - before).abs().max().item(), TOL)


@pytest.mark.parametrize("rewrite", ["center_writing_weights", "center_unembed", "fold_value_biases"])
def test_each_other_rewrite_applied_twice_changes_nothing_but_rounding(small_checkpoint, rewrite):
    once, _ = weights.load(small_checkpoint, processed=False)
    twice, _ = weights.load(small_checkpoint, processed=False)
    getattr(weights, rewrite)(once)
    getattr(weights, rewrite)(getattr(weights, rewrite)(twice))
    for (name, a), (_, b) in zip(once.named_parameters(), twice.named_parameters(), strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-6), f"{rewrite} twice moved {name} by {(a - b).abs().max():.2e}"


def test_folding_layer_norm_twice_says_it_is_already_folded(small_checkpoint):
    model, _ = weights.load(small_checkpoint, processed=False)
    weights.fold_layer_norm(model)
    with pytest.raises(ValueError, match="LayerNorm is already folded into the weights"):
        weights.fold_layer_norm(model)
    processed, _ = weights.load(small_checkpoint, processed=True, unembed=False)
    with pytest.raises(ValueError, match="LayerNorm is already folded into the weights"):
        weights.process(processed, unembed=False)


def test_processing_centres_every_residual_vector(small_checkpoint):
    model, _ = weights.load(small_checkpoint, processed=True)
    _, cache = instrument.run_with_cache(model, prompts(seed=2), names=lambda name: "hook_resid" in name)
    worst = max((t.mean(-1).abs() / t.norm(dim=-1)).max().item() for t in cache.values())
    record("processed: |mean| / norm of every residual vector", worst, 1e-5)


def test_processed_layer_norms_only_centre_and_normalise(small_checkpoint):
    model, _ = weights.load(small_checkpoint, processed=True)
    for ln in [*(b.ln1 for b in model.blocks), *(b.ln2 for b in model.blocks), model.ln_final]:
        assert ln.w is None and ln.b is None
    assert model.W_U is not None and model.b_U is not None
    assert torch.all(torch.stack([b.attn.b_V.abs().max() for b in model.blocks]) == 0)


def test_dropping_the_unembedding_leaves_every_residual_hook_unchanged(small_checkpoint):
    full, tokenizer = weights.load(small_checkpoint)
    stream_only, _ = weights.load(small_checkpoint, unembed=False)
    tokens = torch.tensor([[tokenizer.eot, 464, 2068, 7586, 21831]])
    _, expected = instrument.run_with_cache(full, tokens, unembed=False)
    _, found = instrument.run_with_cache(stream_only, tokens, unembed=False)
    assert found.keys() == expected.keys()
    for name in found:
        torch.testing.assert_close(found[name], expected[name], rtol=0, atol=0)
    assert stream_only.W_U is None and stream_only.ln_final is None
    assert sum(p.numel() for p in full.parameters()) - sum(p.numel() for p in stream_only.parameters()) == (
        full.cfg.d_model * full.cfg.d_vocab + full.cfg.d_vocab  # W_U and b_U (ln_final is folded into them)
    )
    with pytest.raises(ValueError, match="no unembedding.*unembed=True for logits"):
        stream_only(tokens)
