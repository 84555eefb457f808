"""GPT-Neo, OPT and Pythia (GPT-NeoX) against Hugging Face's own classes, and the rewrites' invariances for each.

Each family's tiny checkpoint is built with transformers' own class (GPTNeoForCausalLM, OPTForCausalLM,
GPTNeoXForCausalLM) from a config.json in the form the released repositories carry, and written as they are:
GPT-Neo's model.safetensors with its causal-mask buffers, OPT's float16 tensors under "decoder.", Pythia's
float16 model.safetensors with its buffers and embed_out, padded beyond the tokenizer's vocabulary, each with
its released tokenizer files (`write_released_tokenizer`: OPT's </s> BOS, Pythia's tokenizer.json). Every
LayerNorm gain and bias and every linear bias is random, as in benchmarks/checkpoints.py. The prompts (40
tokens) are longer than GPT-Neo's local window (8 here), so local attention changes the result.

Tolerances are GPT-2's (tests/test_parity.py): logits and log-probs ≤ 1e-4 max abs; residual streams ≤ 1e-4
relative per position. Measured maxima are printed at the end of the run.
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
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import GPTNeoForCausalLM, GPTNeoXConfig, GPTNeoXForCausalLM, OPTForCausalLM

import instrument
import weights
from benchmarks.checkpoints import gpt2_vocab_files, save_weights
from minigpt import GPT2, OPT, GPTNeo, GPTNeoX
from weights import CheckpointError

TOL = 1e-4
N_LAYERS, D_MODEL, N_CTX, WINDOW = 4, 64, 64, 8


def released_config(family: str, *, n_layers=N_LAYERS, d_model=D_MODEL, n_heads=4, n_ctx=N_CTX) -> dict:
    """config.json as EleutherAI/gpt-neo-125m, facebook/opt-125m and EleutherAI/pythia-70m carry it, at this size."""
    if family == "gpt_neo":
        kinds = [["global", "local"], n_layers // 2]
        return {
            "activation_function": "gelu_new",
            "architectures": ["GPTNeoForCausalLM"],
            "attention_dropout": 0,
            "attention_layers": ["global", "local"] * (n_layers // 2),
            "attention_types": [kinds],
            "bos_token_id": 50256,
            "embed_dropout": 0,
            "eos_token_id": 50256,
            "gradient_checkpointing": False,
            "hidden_size": d_model,
            "initializer_range": 0.02,
            "intermediate_size": None,
            "layer_norm_epsilon": 1e-05,
            "max_position_embeddings": n_ctx,
            "model_type": "gpt_neo",
            "num_heads": n_heads,
            "num_layers": n_layers,
            "resid_dropout": 0,
            "summary_activation": None,
            "summary_first_dropout": 0.1,
            "summary_proj_to_labels": True,
            "summary_type": "cls_index",
            "summary_use_proj": True,
            "torch_dtype": "float32",
            "transformers_version": "4.9.0.dev0",
            "use_cache": True,
            "vocab_size": 50257,
            "window_size": WINDOW,
        }
    if family == "opt":
        return {
            "_name_or_path": "facebook/opt-125m",
            "activation_dropout": 0.0,
            "activation_function": "relu",
            "architectures": ["OPTForCausalLM"],
            "attention_dropout": 0.0,
            "bos_token_id": 2,
            "do_layer_norm_before": True,
            "dropout": 0.1,
            "eos_token_id": 2,
            "ffn_dim": 4 * d_model,
            "hidden_size": d_model,
            "init_std": 0.02,
            "layerdrop": 0.0,
            "max_position_embeddings": n_ctx,
            "model_type": "opt",
            "num_attention_heads": n_heads,
            "num_hidden_layers": n_layers,
            "pad_token_id": 1,
            "prefix": "</s>",
            "torch_dtype": "float16",
            "transformers_version": "4.21.0.dev0",
            "use_cache": True,
            "vocab_size": 50272,
            "word_embed_proj_dim": d_model,
        }
    return {
        "architectures": ["GPTNeoXForCausalLM"],
        "bos_token_id": 0,
        "eos_token_id": 0,
        "hidden_act": "gelu",
        "hidden_size": d_model,
        "initializer_range": 0.02,
        "intermediate_size": 4 * d_model,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": n_ctx,
        "model_type": "gpt_neox",
        "num_attention_heads": n_heads,
        "num_hidden_layers": n_layers,
        "rotary_emb_base": 10000,
        "rotary_pct": 0.25,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "transformers_version": "4.24.0",
        "use_cache": True,
        "use_parallel_residual": True,
        "vocab_size": 50304,
    }


HF_CLASSES = {"gpt_neo": GPTNeoForCausalLM, "opt": OPTForCausalLM, "gpt_neox": GPTNeoXForCausalLM}


@torch.no_grad()
def randomise(model: nn.Module, seed: int) -> None:
    """Every weight random, LayerNorm gains around 1 and every bias around 0 but not at it."""
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        params = dict(module.named_parameters(recurse=False))
        for name, p in params.items():
            if isinstance(module, nn.LayerNorm):
                p.copy_(torch.randn(p.shape, generator=g) * (0.2 if name == "weight" else 0.1) + (name == "weight"))
            elif name == "bias":
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def released_state(family: str, hf_model: nn.Module) -> dict[str, torch.Tensor]:
    """The HF model's tensors under the keys, and in the dtype, of the released files, with their buffers."""
    state = {key: t.detach().clone() for key, t in hf_model.state_dict().items() if key != "lm_head.weight"}
    cfg = hf_model.config
    n = cfg.max_position_embeddings
    if family == "gpt_neo":  # the old GPTNeoSelfAttention's persistent buffers, as gpt-neo-125m's files keep them
        for i in range(cfg.num_layers):
            state[f"transformer.h.{i}.attn.attention.bias"] = torch.ones(n, n, dtype=torch.bool).tril().view(1, 1, n, n)
            state[f"transformer.h.{i}.attn.attention.masked_bias"] = torch.tensor(-1e9)
    if family == "opt":  # OPTModel's keys ("decoder."), float16
        state = {key.removeprefix("model."): t.half() for key, t in state.items()}
    if family == "gpt_neox":
        state["embed_out.weight"] = hf_model.lm_head.weight.detach().clone()
        d_rot = int(cfg.hidden_size // cfg.num_attention_heads * 0.25)
        for i in range(cfg.num_hidden_layers):
            at = f"gpt_neox.layers.{i}.attention"
            state[f"{at}.bias"] = torch.ones(n, n, dtype=torch.bool).tril().view(1, 1, n, n)
            state[f"{at}.masked_bias"] = torch.tensor(-1e9)
            state[f"{at}.rotary_emb.inv_freq"] = 1.0 / (10000 ** (torch.arange(0, d_rot, 2).float() / d_rot))
        state = {key: t.half() if t.is_floating_point() else t for key, t in state.items()}
    return state


# How each family's main branch ships its weights: OPT's only as pytorch_model.bin.
RELEASED_FORMAT = {"gpt_neo": "safetensors", "opt": "bin", "gpt_neox": "safetensors"}


def write_family(
    directory,
    family: str,
    *,
    seed=0,
    weights_format=None,
    max_shard_bytes=None,
    released_tokenizer=False,
    gain_growth=1.0,
    d_vocab=None,
    **size,
):
    """A tiny random checkpoint of the family, as its released repository holds one: config.json, the weights
    (in the family's released format unless weights_format says otherwise; sharded given max_shard_bytes, as
    `benchmarks.checkpoints.save_weights` writes them), and GPT-2's vocab.json and merges.txt, or with
    released_tokenizer the family's own tokenizer files (`write_released_tokenizer`). gain_growth multiplies
    every LayerNorm gain of block l by gain_growth**l: growth stored in the gains, as a known answer. d_vocab
    replaces the released vocabulary size (for a smaller tokenizer: GPT-2's ids would not all fit)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = released_config(family, **size) | ({"vocab_size": d_vocab} if d_vocab else {})
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    torch.manual_seed(seed)
    hf_cfg = HF_CLASSES[family].config_class.from_pretrained(directory)
    hf_model = HF_CLASSES[family](hf_cfg).eval()
    randomise(hf_model, seed)
    with torch.no_grad():
        for name, module in hf_model.named_modules():
            layer = re.search(r"\.(\d+)\.", name)
            if isinstance(module, nn.LayerNorm) and layer:
                module.weight.mul_(gain_growth ** int(layer.group(1)))
    state = {key: t.contiguous() for key, t in released_state(family, hf_model).items()}
    save_weights(state, directory, weights_format=weights_format or RELEASED_FORMAT[family], max_shard_bytes=max_shard_bytes)
    if released_tokenizer:
        write_released_tokenizer(directory, family)
    else:
        vocab, merges = gpt2_vocab_files()
        shutil.copy(vocab, directory / "vocab.json")
        shutil.copy(merges, directory / "merges.txt")
    return directory


def write_released_tokenizer(directory, family: str) -> None:
    """The tokenizer files of the family's released repositories, with GPT-2's merges (so that English text
    gets English tokens) under each family's own ids and special tokens:
      GPT-Neo  GPT-2's vocab.json and merges.txt; special_tokens_map.json: BOS <|endoftext|> (50256), no padding.
      OPT      vocab.json with <s> <pad> </s> <unk> as ids 0–3 and GPT-2's tokens after them, as fairseq's
               dictionary puts them; special_tokens_map.json: BOS </s> (2), padding <pad> (1).
      Pythia   tokenizer.json only (NFC, byte-level), <|endoftext|> and <|padding|> as added tokens 0 and 1,
               GPT-2's other tokens after them; special_tokens_map.json: BOS <|endoftext|> (0), no padding."""
    from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers import Tokenizer as HFTokenizer

    vocab_file, merges_file = gpt2_vocab_files()
    gpt2_vocab = json.loads(Path(vocab_file).read_text(encoding="utf-8"))
    special = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    if family == "gpt_neo":
        shutil.copy(vocab_file, directory / "vocab.json")
        shutil.copy(merges_file, directory / "merges.txt")
    elif family == "opt":
        specials = ["<s>", "<pad>", "</s>", "<unk>"]
        vocab = {token: i for i, token in enumerate(specials)} | {token: i + 4 for token, i in gpt2_vocab.items()}
        (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        shutil.copy(merges_file, directory / "merges.txt")
        token = {"lstrip": False, "normalized": True, "rstrip": False, "single_word": False}  # as OPT's files write each
        bos, pad = token | {"content": "</s>"}, token | {"content": "<pad>"}
        special = {"bos_token": bos, "eos_token": bos, "unk_token": bos, "pad_token": pad}
        config = {"add_bos_token": True, "tokenizer_class": "GPT2Tokenizer", "pad_token": pad}
        (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    else:
        del gpt2_vocab["<|endoftext|>"]
        vocab = {"<|endoftext|>": 0, "<|padding|>": 1} | {token: i + 2 for token, i in gpt2_vocab.items()}
        merges = [tuple(line.split()) for line in Path(merges_file).read_text(encoding="utf-8").splitlines()[1:] if line]
        theirs = HFTokenizer(models.BPE(vocab, merges))
        theirs.normalizer = normalizers.NFC()
        theirs.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
        theirs.post_processor = processors.ByteLevel(trim_offsets=True)
        theirs.decoder = decoders.ByteLevel()
        theirs.add_special_tokens([AddedToken("<|endoftext|>", special=True), AddedToken("<|padding|>", special=True)])
        (directory / "tokenizer.json").write_text(theirs.to_str(), encoding="utf-8")
    (directory / "special_tokens_map.json").write_text(json.dumps(special), encoding="utf-8")


FAMILIES = ["gpt_neo", "opt", "gpt_neox"]


@pytest.fixture(scope="session")
def family_checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {family: write_family(root / family, family, seed=7, released_tokenizer=True) for family in FAMILIES}


def hf_reference(directory, family: str):
    """HF's model from the directory, in float32 (the files may be float16), eager attention, every tensor read."""
    model, info = HF_CLASSES[family].from_pretrained(
        directory, dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["mismatched_keys"], info
    return model.eval()


def hf_layers(hf_model, family: str):
    if family == "gpt_neo":
        return hf_model.transformer.h
    if family == "opt":
        return hf_model.model.decoder.layers
    return hf_model.gpt_neox.layers


def prompts(n_batch=2, n_pos=40, seed=0, d_vocab=50257):
    return torch.randint(0, d_vocab, (n_batch, n_pos), generator=torch.Generator().manual_seed(seed))


def relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return ((ours - theirs).norm(dim=-1) / theirs.norm(dim=-1)).max().item()


@torch.no_grad()
def hf_run(directory, family: str, tokens):
    """HF's logits, the residual entering block 0 and every block's output (forward hooks on its layers)."""
    hf = hf_reference(directory, family)
    outputs = []
    handles = [
        layer.register_forward_hook(lambda _m, _i, out: outputs.append(out[0] if isinstance(out, tuple) else out))
        for layer in hf_layers(hf, family)
    ]
    result = hf(tokens, output_hidden_states=True)
    for handle in handles:
        handle.remove()
    return result.logits, result.hidden_states[0], outputs


def check_against_hf(directory, family: str, label: str) -> None:
    """Unprocessed logits and residuals, processed log-probs and centred residuals, all against HF."""
    tokens = prompts()
    hf_logits, hf_embedded, hf_blocks = hf_run(directory, family, tokens)
    assert len(hf_blocks) == N_LAYERS

    def resid(name: str) -> bool:
        return name.endswith("hook_resid_post") or name == "blocks.0.hook_resid_pre"

    model, _ = weights.load(directory, processed=False)
    logits, cache = instrument.run_with_cache(model, tokens, names=resid)
    record(f"{label}: unprocessed logits, max abs diff", (logits - hf_logits).abs().max().item(), TOL)
    worst = max(relative(cache[f"blocks.{l}.hook_resid_post"], hf_blocks[l]) for l in range(N_LAYERS))
    worst = max(worst, relative(cache["blocks.0.hook_resid_pre"], hf_embedded))
    record(f"{label}: unprocessed residuals (every block), relative", worst, TOL)

    processed, _ = weights.load(directory, processed=True)
    logits, cache = instrument.run_with_cache(processed, tokens, names=resid)
    diff = (logits.log_softmax(-1) - hf_logits.log_softmax(-1)).abs().max().item()
    record(f"{label}: processed log-probs, max abs diff", diff, TOL)
    worst = 0.0
    for l in range(N_LAYERS):
        centred = hf_blocks[l] - hf_blocks[l].mean(-1, keepdim=True)
        worst = max(worst, relative(cache[f"blocks.{l}.hook_resid_post"], centred))
    record(f"{label}: processed residuals vs centred HF residuals, relative", worst, TOL)


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_matches_hugging_face(family_checkpoints, family):
    check_against_hf(family_checkpoints[family], family, family)


def test_pythia_config_in_transformers_5_form_reads_the_same(family_checkpoints, tmp_path):
    """transformers 5 writes rope_parameters {rope_theta, partial_rotary_factor} instead of rotary_emb_base and
    rotary_pct: the same model, and still HF's numbers."""
    source = family_checkpoints["gpt_neox"]
    shutil.copytree(source, tmp_path / "v5")
    GPTNeoXConfig.from_pretrained(source).save_pretrained(tmp_path / "v5")
    written = json.loads((tmp_path / "v5" / "config.json").read_text())
    assert "rotary_pct" not in written and written["rope_parameters"]["partial_rotary_factor"] == 0.25
    assert weights.read_config(tmp_path / "v5") == weights.read_config(source)
    check_against_hf(tmp_path / "v5", "gpt_neox", "gpt_neox (transformers 5 config)")


def test_opt_checkpoint_is_pytorch_model_bin_only_as_released(family_checkpoints):
    assert sorted(path.name for path in family_checkpoints["opt"].iterdir()) == [
        "config.json",
        "merges.txt",
        "pytorch_model.bin",
        "special_tokens_map.json",
        "tokenizer_config.json",
        "vocab.json",
    ]


@pytest.mark.parametrize(
    "family, weights_format, max_shard_bytes",
    [("gpt_neox", "bin", None), ("opt", "safetensors", None), ("gpt_neo", "safetensors", 2_000_000), ("opt", "bin", 2_000_000)],
)
def test_every_weights_format_reads_to_the_same_model(family_checkpoints, tmp_path, family, weights_format, max_shard_bytes):
    """Pythia's step revisions ship pytorch_model.bin; large repositories shard their files: the same tensors in
    another file format give exactly the same model."""
    other = write_family(tmp_path / family, family, seed=7, weights_format=weights_format, max_shard_bytes=max_shard_bytes)
    tokens = prompts(n_batch=1, n_pos=12, seed=4)
    with torch.no_grad():
        expected = weights.load(family_checkpoints[family], processed=False)[0](tokens)
        found = weights.load(other, processed=False)[0](tokens)
    assert torch.equal(found, expected)


@pytest.mark.parametrize("family", FAMILIES)
def test_files_written_by_save_pretrained_read_the_same(family_checkpoints, tmp_path, family):
    """transformers 5's save_pretrained writes OPT under "model.decoder.", drops the buffers and the tied lm_head,
    and writes model.safetensors in float32: the same model."""
    hf_reference(family_checkpoints[family], family).save_pretrained(tmp_path)
    for name in ("vocab.json", "merges.txt", "tokenizer.json", "special_tokens_map.json", "tokenizer_config.json"):
        if (family_checkpoints[family] / name).exists():
            shutil.copy(family_checkpoints[family] / name, tmp_path / name)
    tokens = prompts(n_batch=1, n_pos=12, seed=4)
    with torch.no_grad():
        expected = weights.load(family_checkpoints[family], processed=False)[0](tokens)
        found = weights.load(tmp_path, processed=False)[0](tokens)
    assert torch.equal(found, expected)


def test_local_attention_reads_only_the_window(family_checkpoints):
    model, _ = weights.load(family_checkpoints["gpt_neo"], processed=False)
    assert model.cfg.local_layers == (1, 3) and model.cfg.window_size == WINDOW
    _, cache = instrument.run_with_cache(model, prompts(n_batch=1), names=lambda name: name.endswith("hook_pattern"))
    back = torch.arange(40)[:, None] - torch.arange(40)[None, :]  # [query_pos, key_pos]
    for l in range(N_LAYERS):
        pattern = cache[f"blocks.{l}.attn.hook_pattern"][0]  # [n_heads, query_pos, key_pos]
        readable = (back >= 0) & (back < WINDOW) if l in model.cfg.local_layers else back >= 0
        assert torch.all(pattern[:, ~readable] == 0) and torch.all(pattern[:, readable] > 0)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_follows_float32(family_checkpoints, family, dtype):
    """As GPT-2's: half-precision log-probs stay close to float32's, every parameter in that dtype. GPT-Neo's
    unscaled scores are taken in float32, so float16 cannot overflow there."""
    tokens = prompts(n_batch=1, seed=6)
    reference, _ = weights.load(family_checkpoints[family])
    half, _ = weights.load(family_checkpoints[family], dtype=dtype)
    assert {p.dtype for p in half.parameters()} == {dtype}
    with torch.no_grad():
        expected, found = reference(tokens).log_softmax(-1), half(tokens).float().log_softmax(-1)
    assert (found - expected).abs().max() < 0.1


def hook_names(model) -> set[str]:
    return {re.sub(r"blocks\.\d+\.", "blocks.{l}.", name) for name in instrument.hook_points(model)}


def test_hook_names_are_gpt2s_except_where_a_family_lacks_the_tensor(family_checkpoints, small_checkpoint):
    gpt2 = hook_names(weights.load(small_checkpoint, processed=False)[0])
    found = {family: hook_names(weights.load(family_checkpoints[family], processed=False)[0]) for family in FAMILIES}
    assert found["gpt_neo"] == gpt2 and found["opt"] == gpt2
    assert gpt2 - found["gpt_neox"] == {"hook_pos_embed", "blocks.{l}.hook_resid_mid"}  # rotary; parallel residual
    assert found["gpt_neox"] - gpt2 == {"blocks.{l}.attn.hook_rot_q", "blocks.{l}.attn.hook_rot_k"}


def test_each_family_loads_as_its_own_model(family_checkpoints):
    classes = {"gpt_neo": GPTNeo, "opt": OPT, "gpt_neox": GPTNeoX}
    for family, directory in family_checkpoints.items():
        model, _ = weights.load(directory)
        assert type(model) is classes[family] and isinstance(model, GPT2)
    pythia, _ = weights.load(family_checkpoints["gpt_neox"], processed=False)
    assert pythia.W_pos is None and pythia.W_U.shape == (D_MODEL, 50304) and pythia.cfg.rotary_dims == 4
    assert not torch.equal(pythia.W_U, pythia.W_E.T)  # untied


# ---------------------------------------------------------------------------------------------------------
# The rewrites, each alone and all four, with the invariances test_parity.py checks for GPT-2.


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("rewrite", ["fold_layer_norm", "center_writing_weights", "center_unembed", "fold_value_biases"])
def test_each_rewrite_alone_leaves_log_probs_unchanged(family_checkpoints, family, rewrite):
    tokens = prompts(seed=1)
    reference, _ = weights.load(family_checkpoints[family], processed=False)
    rewritten, _ = weights.load(family_checkpoints[family], processed=False)
    getattr(weights, rewrite)(rewritten)
    with torch.no_grad():
        before, after = reference(tokens), rewritten(tokens)
    diff = (after.log_softmax(-1) - before.log_softmax(-1)).abs().max().item()
    record(f"{family}, {rewrite} alone: log-probs, max abs diff", diff, TOL)
    if rewrite != "center_unembed":  # the only rewrite that shifts logits (by a constant per position)
        record(f"{family}, {rewrite} alone: logits, max abs diff", (after - before).abs().max().item(), TOL)


@pytest.mark.parametrize("family", FAMILIES)
def test_processing_centres_every_residual_vector_and_empties_the_layer_norms(family_checkpoints, family):
    model, _ = weights.load(family_checkpoints[family], processed=True)
    _, cache = instrument.run_with_cache(model, prompts(seed=2), names=lambda name: "hook_resid" in name)
    worst = max((t.mean(-1).abs() / t.norm(dim=-1)).max().item() for t in cache.values())
    record(f"{family} processed: |mean| / norm of every residual vector", worst, 1e-5)
    for ln in [*(b.ln1 for b in model.blocks), *(b.ln2 for b in model.blocks), model.ln_final]:
        assert ln.w is None and ln.b is None
    assert model.W_U is not None and model.b_U is not None
    assert all(torch.all(b.attn.b_V == 0) for b in model.blocks)


@pytest.mark.parametrize("family", FAMILIES)
def test_dropping_the_unembedding_leaves_every_residual_hook_unchanged(family_checkpoints, family):
    full, _ = weights.load(family_checkpoints[family])
    stream_only, _ = weights.load(family_checkpoints[family], unembed=False)
    tokens = prompts(n_batch=1, n_pos=12, seed=3)
    _, expected = instrument.run_with_cache(full, tokens, unembed=False)
    _, found = instrument.run_with_cache(stream_only, tokens, unembed=False)
    assert found.keys() == expected.keys()
    for name in found:
        torch.testing.assert_close(found[name], expected[name], rtol=0, atol=0)
    assert stream_only.W_U is None and stream_only.ln_final is None
    with pytest.raises(ValueError, match="no unembedding.*unembed=True for logits"):
        stream_only(tokens)


# ---------------------------------------------------------------------------------------------------------
# What is refused, in one line naming the field.


@pytest.mark.parametrize(
    "family, change, message",
    [
        ("opt", {"do_layer_norm_before": False}, "do_layer_norm_before is false (opt-350m): a post-LayerNorm OPT"),
        ("opt", {"word_embed_proj_dim": 32}, "word_embed_proj_dim 32 differs from hidden_size 64"),
        ("opt", {"activation_function": "gelu"}, "activation_function 'gelu'; OPT uses relu"),
        ("gpt_neo", {"activation_function": "relu"}, "activation_function 'relu'; GPT-Neo uses gelu_new"),
        ("gpt_neo", {"attention_types": [[["global", "sparse"], 2]]}, "attention_types ['global', 'sparse']"),
        ("gpt_neo", {"attention_types": [[["global"], 3]]}, "attention_types gives 3 layers, num_layers is 4"),
        ("gpt_neox", {"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling has rope_type 'linear'"),
        # transformers 5's GPTNeoXConfig takes `rope_scaling or rope_parameters`: a non-empty rope_scaling wins.
        (
            "gpt_neox",
            {
                "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
                "rope_scaling": {"type": "linear", "factor": 2.0},
            },
            "rope_scaling has rope_type 'linear'",
        ),
        ("gpt_neox", {"hidden_act": "gelu_fast"}, "hidden_act 'gelu_fast'; Pythia uses gelu"),  # gpt-neox-20b's
        ("gpt_neox", {"hidden_act": "gelu_new"}, "hidden_act 'gelu_new'; Pythia uses gelu"),
        ("gpt_neox", {"tie_word_embeddings": True}, "tie_word_embeddings is true"),
        ("gpt_neox", {"rotary_pct": 0.1875}, "rotary_dims must be even and in (0, d_head = 16], found 3"),
        ("gpt_neox", {"num_attention_heads": 5}, "n_heads * d_head must equal d_model"),
        ("gpt_neox", {"model_type": "mamba"}, "model_type is 'mamba'; minigpt reads the model types"),
    ],
)
def test_unsupported_settings_are_refused_in_one_line_naming_the_field(family_checkpoints, tmp_path, family, change, message):
    directory = tmp_path / family
    shutil.copytree(family_checkpoints[family], directory)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps(config | change))
    with pytest.raises(CheckpointError, match=re.escape(message)) as error:
        weights.load(directory)
    assert "\n" not in str(error.value) and str(error.value).startswith(str(directory / "config.json"))


def test_a_missing_field_is_named(family_checkpoints, tmp_path):
    shutil.copytree(family_checkpoints["opt"], tmp_path / "opt")
    config = json.loads((tmp_path / "opt" / "config.json").read_text())
    del config["ffn_dim"]
    (tmp_path / "opt" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="config.json: missing the field 'ffn_dim'"):
        weights.load(tmp_path / "opt")


def test_a_checkpoint_that_does_not_match_its_config_lists_every_problem(family_checkpoints, tmp_path):
    directory = tmp_path / "pythia"
    shutil.copytree(family_checkpoints["gpt_neox"], directory)
    state = load_file(directory / "model.safetensors")
    del state["gpt_neox.layers.1.mlp.dense_h_to_4h.bias"]
    state["gpt_neox.layers.0.attention.extra"] = torch.zeros(3)
    state["embed_out.weight"] = torch.zeros(50304, D_MODEL + 1)
    save_file(state, directory / "model.safetensors")
    with pytest.raises(CheckpointError) as error:
        weights.load(directory)
    message = str(error.value)
    assert "missing (1): layers.1.mlp.dense_h_to_4h.bias" in message
    assert "unexpected (1): layers.0.attention.extra" in message
    assert f"wrong shape (1): embed_out.weight [50304, {D_MODEL + 1}] (expected [50304, {D_MODEL}])" in message


def test_only_gpt2_is_saved_in_gpt2s_layout(family_checkpoints, tmp_path, vocab_files):
    model, _ = weights.load(family_checkpoints["opt"], processed=False)
    with pytest.raises(ValueError, match="only GPT-2 is written in GPT-2's official layout; this model is OPT"):
        weights.save(model, tmp_path, vocab_json=vocab_files[0], merges_txt=vocab_files[1])


# ---------------------------------------------------------------------------------------------------------
# The hub path: one repository of each family through olah on 127.0.0.1, as tests/test_faults.py does for gpt2.

HUB_REPOS = {"gpt_neo": "EleutherAI/gpt-neo-125m", "opt": "facebook/opt-125m", "gpt_neox": "EleutherAI/pythia-70m"}
# The ids of BOS and padding that each family's tokenizer files name (write_released_tokenizer).
RELEASED_BOS_AND_PAD = {"gpt_neo": (50256, 50256), "opt": (2, 1), "gpt_neox": (0, 0)}


@pytest.fixture(scope="session")
def family_hub(family_checkpoints, tmp_path_factory):
    """olah serving the tiny checkpoints under the released repositories' names (OPT's holds only pytorch_model.bin)."""
    root = tmp_path_factory.mktemp("family-hub")
    for family, repo in HUB_REPOS.items():
        commit_repo(root / "mirrors", repo, {path.name: path for path in family_checkpoints[family].iterdir()})
    (root / "olah").mkdir()
    server = HubServer(root / "mirrors", root / "olah")
    yield server
    server.stop()


LOAD_FROM_HUB = """
import sys, torch, weights
model, tokenizer = weights.load(sys.argv[1], processed=False)
with torch.no_grad():
    logits = model(torch.tensor([[int(t) for t in sys.argv[3:]]]))
torch.save({"logits": logits, "type": type(model).__name__, "bos": tokenizer.bos, "pad": tokenizer.pad}, sys.argv[2])
"""


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_downloads_through_the_hub_and_loads_as_from_its_directory(family_checkpoints, family_hub, family, tmp_path):
    repo, tokens = HUB_REPOS[family], [str(t) for t in prompts(n_batch=1, n_pos=12, seed=5)[0].tolist()]
    command = [sys.executable, "-c", LOAD_FROM_HUB, repo, str(tmp_path / "out.pt"), *tokens]
    result = subprocess.run(
        command,
        env=family_hub.env(tmp_path / "hf"),
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (snapshot,) = (tmp_path / "hf" / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots").iterdir()
    assert sorted(p.name for p in snapshot.iterdir()) == sorted(p.name for p in family_checkpoints[family].iterdir())
    found = torch.load(tmp_path / "out.pt", weights_only=True)
    model, tokenizer = weights.load(family_checkpoints[family], processed=False)
    with torch.no_grad():
        expected = model(torch.tensor([[int(t) for t in tokens]]))
    assert found["type"] == type(model).__name__ and torch.equal(found["logits"], expected)
    assert (found["bos"], found["pad"]) == RELEASED_BOS_AND_PAD[family] == (tokenizer.bos, tokenizer.pad)


# ---------------------------------------------------------------------------------------------------------
# One study over every family: a GPT-2 and a tiny checkpoint of each other family, of different depths, each
# with its released tokenizer files. Pythia's gains grow ×1.1 per layer: a known answer for the side-by-side
# weights, where the growth must show in the gains and the folded matrices, not in the matrices as trained.

CROSS_DEPTHS = {"gpt_neo": 4, "opt": 8, "gpt_neox": 6}
GAIN_GROWTH = 1.1


@pytest.fixture(scope="session")
def cross_family_report(small_checkpoint, tmp_path_factory):
    from analysis import growth

    root = tmp_path_factory.mktemp("cross-family")
    checkpoints = {"gpt2": small_checkpoint} | {
        family: write_family(
            root / family,
            family,
            seed=11,
            n_layers=n_layers,
            released_tokenizer=True,
            gain_growth=GAIN_GROWTH if family == "gpt_neox" else 1.0,
        )
        for family, n_layers in CROSS_DEPTHS.items()
    }
    out = root / "report"
    models = [arg for path in checkpoints.values() for arg in ("--model", str(path))]
    assert growth.main([*models, "--truncate", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    return checkpoints, out, {family: summary["models"][str(path)] for family, path in checkpoints.items()}


def test_one_study_runs_every_family_and_its_report_names_each(cross_family_report):
    checkpoints, out, models = cross_family_report
    report = (out / "report.md").read_text()
    for path in checkpoints.values():
        assert f"**{path}**" in report and f"# {path.name}\n" in report
    assert {family: m["family"] for family, m in models.items()} == {
        "gpt2": "GPT-2",
        "gpt_neo": "GPT-Neo",
        "opt": "OPT",
        "gpt_neox": "GPT-NeoX (Pythia)",
    }
    assert [models[f]["n_layers"] for f in CROSS_DEPTHS] == list(CROSS_DEPTHS.values())
    for stem in ("03-mean-norm-by-model", "16-weights-by-model"):
        assert (out / f"{stem}.png").stat().st_size > 10_000 and f"]({stem}.png)" in report
    assert all(m["appendix1"]["violations"] == 0 for m in models.values())


def test_each_family_starts_with_its_own_bos_and_pads_with_its_own_token(cross_family_report):
    """OPT's prompts start with </s> (id 2) and pad with <pad> (id 1), Pythia's with <|endoftext|> as id 0. The
    BOS position's norm proves it: position 0 sees only itself, so it equals the model run on its BOS alone."""
    checkpoints, out, models = cross_family_report
    expected = {
        "gpt2": ((50256, "<|endoftext|>"), (50256, "<|endoftext|>")),
        "gpt_neo": ((50256, "<|endoftext|>"), (50256, "<|endoftext|>")),
        "opt": ((2, "</s>"), (1, "<pad>")),
        "gpt_neox": ((0, "<|endoftext|>"), (0, "<|endoftext|>")),
    }
    report = (out / "report.md").read_text()
    for family, ((bos_id, bos), (pad_id, pad)) in expected.items():
        m = models[family]
        assert (m["bos"], m["pad"]) == ({"id": bos_id, "text": bos}, {"id": pad_id, "text": pad})
        assert f"prompts start with `{bos}` (id {bos_id}), padding is `{pad}` (id {pad_id}); {m['tokens']} tokens" in report
        model, _ = weights.load(checkpoints[family])
        with torch.no_grad():
            _, cache = instrument.run_with_cache(model, torch.tensor([[bos_id]]))
        alone = [float(cache["resid_post", layer][0, 0].norm()) for layer in range(model.cfg.n_layers)]
        assert m["bos_norm"]["resid_post"] == pytest.approx(alone, rel=1e-5), family
    assert "each starting with </s> (id 2) and right-padded with <pad> (id 1)" in report


def test_the_report_says_what_each_family_cannot_have(cross_family_report):
    checkpoints, out, models = cross_family_report
    report = (out / "report.md").read_text()
    section = report.split("## What each model cannot have")[1].split("\n## ")[0]
    pythia = checkpoints["gpt_neox"].name
    assert f"- {pythia}, figure 6 (" in section and f"- {pythia}, figure 10 (" in section
    assert section.count("— no resid_mid: a parallel block") == 2 and section.count("\n- ") == 2
    assert f"ReLU: {checkpoints['opt'].name}" in section and "not one quantity" in section
    assert "resid_mid" not in models["gpt_neox"]["mean_norm"]
    assert {models[f]["nonlinearity"] for f in ("gpt2", "gpt_neo", "gpt_neox")} == {"GELU"} and models["opt"][
        "nonlinearity"
    ] == "ReLU"
    for family, path in checkpoints.items():
        figures = {png.stem for png in (out / path.name).glob("*.png")}
        kind = "relu" if family == "opt" else "gelu"
        assert {"01-norm-histograms", "05-bos-and-padding", f"12-{kind}-activation-rate", "14-appendix1-bound"} <= figures
        assert ({"06-resid-pre-mid-post", "10-std-and-bounds"} <= figures) == (family != "gpt_neox")


def test_the_weights_side_by_side_find_growth_stored_in_the_gains(cross_family_report):
    """Pythia's gains were multiplied by 1.1 per layer: its gains and its folded W_OV and W_in grow ×1.1 more
    than its matrices as trained; the other models' gains are flat (random around 1)."""
    checkpoints, out, models = cross_family_report
    for family, m in models.items():
        g = m["weights_growth_per_layer"]
        gain = GAIN_GROWTH if family == "gpt_neox" else 1.0
        for ln in ("ln1_gain_rms", "ln2_gain_rms"):
            assert g[ln] == pytest.approx(gain, abs=0.03), (family, ln)
        assert g["W_OV_frobenius"] / g["W_OV_as_trained"] == pytest.approx(gain, abs=0.03), family
        assert g["W_in_norm"] / g["W_in_as_trained"] == pytest.approx(gain, abs=0.03), family
        assert m["weight_decay_published"] == "unknown"  # local directories: no release to name
    table = (out / "report.md").read_text().split("## Where the growth is stored")[1]
    for path in checkpoints.values():
        assert f"\n| {path.name} | unknown | ×" in table  # local directories: no release to name
    with open(out / "layers.csv") as f:
        header = f.readline().strip().split(",")
    assert {"ln1_gain_rms", "ln2_gain_rms", "W_OV_as_trained", "W_in_as_trained", "W_out_as_trained"} <= set(header)


def test_the_published_weight_decay_is_named_for_released_pretrained_repositories_only():
    from types import SimpleNamespace

    from analysis import report

    expected = {
        "EleutherAI/pythia-160m": "0.01 (Pythia paper)",
        "EleutherAI/pythia-1.4b-deduped": "0.01 (Pythia paper)",
        "facebook/opt-125m": "0.1 (OPT paper)",
        "EleutherAI/gpt-neo-1.3B": "0.1 (GPT-Neo configs)",
        "openai-community/gpt2-xl": "not published",
        "facebook/opt-iml-1.3b": "unknown",  # fine-tuned from OPT: not the pretraining run
        "someone/pythia-160m": "unknown",
        None: "unknown",  # a local directory
    }
    for repo, decay in expected.items():
        assert report.weight_decay(SimpleNamespace(source={"repo": repo})) == decay, repo
