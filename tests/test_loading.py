"""weights.load: every key layout the hub has used, and a clear one-line error for each bad input."""

import json
import re
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

import weights
from benchmarks.checkpoints import official_state, write_checkpoint
from minigpt import Config
from weights import CheckpointError


def logits_of(directory, **kwargs):
    model, _ = weights.load(directory, processed=False, **kwargs)
    with torch.no_grad():
        return model(torch.arange(10)[None] * 7)


@pytest.mark.parametrize("layout", ["save_pretrained", "old"])
def test_every_key_layout_loads_to_the_same_model(tmp_path, layout):
    official = logits_of(write_checkpoint(tmp_path / "official", seed=5))
    other = logits_of(write_checkpoint(tmp_path / layout, layout=layout, seed=5))
    assert torch.equal(official, other)


def test_model_records_where_it_came_from(small_checkpoint):
    model, _ = weights.load(small_checkpoint)
    assert model.source["revision"] == "local" and model.source["processed"] is True
    assert model.source["path"] == str(small_checkpoint.resolve())


def test_save_round_trips_to_identical_weights(small_checkpoint, tmp_path, vocab_files):
    model, _ = weights.load(small_checkpoint, processed=False)
    weights.save(model, tmp_path, vocab_json=vocab_files[0], merges_txt=vocab_files[1])
    assert torch.equal(logits_of(tmp_path), logits_of(small_checkpoint))


@pytest.fixture
def checkpoint_copy(small_checkpoint, tmp_path):
    directory = tmp_path / "copy"
    shutil.copytree(small_checkpoint, directory)
    return directory


def test_missing_unexpected_and_misshaped_keys_are_listed_together(checkpoint_copy):
    state = official_state(3, 64, 4, seed=1)
    del state["h.1.mlp.c_fc.bias"]
    state["h.0.attn.extra"] = torch.zeros(3)
    state["h.2.attn.c_proj.weight"] = torch.zeros(64, 65)
    save_file(state, checkpoint_copy / "model.safetensors")
    with pytest.raises(CheckpointError) as error:
        weights.load(checkpoint_copy)
    message = str(error.value)
    assert "missing (1): h.1.mlp.c_fc.bias" in message
    assert "unexpected (1): h.0.attn.extra" in message
    assert "wrong shape (1): h.2.attn.c_proj.weight [64, 65] (expected [64, 64])" in message


def test_truncated_safetensors_names_the_file_and_says_to_delete_it(checkpoint_copy):
    path = checkpoint_copy / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(
        CheckpointError, match=r"model\.safetensors: corrupt or truncated safetensors file \(truncated.*Delete it"
    ):
        weights.load(checkpoint_copy)


def test_garbage_header_is_reported_as_corrupt(checkpoint_copy):
    (checkpoint_copy / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + b"\0" * 100)
    with pytest.raises(CheckpointError, match="header is not valid JSON"):
        weights.load(checkpoint_copy)


def test_git_lfs_pointer_is_recognised(checkpoint_copy):
    (checkpoint_copy / "model.safetensors").write_text(
        "version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707\n"
        "size 548105171\n"
    )
    with pytest.raises(CheckpointError, match="Git LFS pointer .* `git lfs pull`"):
        weights.load(checkpoint_copy)


def test_directory_without_weights(checkpoint_copy):
    (checkpoint_copy / "model.safetensors").unlink()
    with pytest.raises(
        CheckpointError,
        match=r"no weights \(expected model\.safetensors, model\.safetensors\.index\.json, pytorch_model\.bin or "
        r"pytorch_model\.bin\.index\.json\)",
    ):
        weights.load(checkpoint_copy)


def test_pickle_only_checkpoint_loads_through_the_safe_loader(checkpoint_copy, small_checkpoint):
    """pytorch_model.bin alone, as OPT's repositories hold it: read with torch.load(weights_only=True)."""
    (checkpoint_copy / "model.safetensors").unlink()
    torch.save(official_state(3, 64, 4, seed=1), checkpoint_copy / "pytorch_model.bin")
    assert torch.equal(logits_of(checkpoint_copy), logits_of(small_checkpoint))


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(
        CheckpointError,
        match="'gpt3': not a known model name. Known names: gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2, bundled",
    ):
        weights.load("gpt3")


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="no such directory"):
        weights.load(str(tmp_path / "nowhere"))


def test_hub_unreachable_with_nothing_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(CheckpointError, match="openai-community/gpt2-medium is not in the Hugging Face cache .* local directory"):
        weights.load("gpt2-medium")


def test_config_json_problems_are_named(checkpoint_copy):
    config = json.loads((checkpoint_copy / "config.json").read_text())
    (checkpoint_copy / "config.json").write_text(json.dumps(config | {"activation_function": "relu"}))
    with pytest.raises(CheckpointError, match="config.json: activation_function 'relu'; GPT-2 uses gelu_new"):
        weights.load(checkpoint_copy)
    del config["n_embd"]
    (checkpoint_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="config.json: missing the field 'n_embd'"):
        weights.load(checkpoint_copy)


def test_prompt_longer_than_the_context_names_both_lengths(small_checkpoint):
    model, _ = weights.load(small_checkpoint)
    with pytest.raises(ValueError, match="1025 tokens is longer than the model's context of 1024 tokens"):
        model(torch.zeros(1, 1025, dtype=torch.long))


def test_bad_token_ids_are_named(small_checkpoint):
    model, _ = weights.load(small_checkpoint)
    with pytest.raises(ValueError, match=r"token id 50257 is outside the vocabulary \[0, 50257\)"):
        model(torch.tensor([[1, 50257]]))
    with pytest.raises(ValueError, match="tokens must be integer ids"):
        model(torch.zeros(1, 3))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_follows_float32(small_checkpoint, dtype):
    """Half-precision log-probs stay close to float32's, and the parameters really are in that dtype."""
    tokens = torch.arange(40)[None] * 13
    reference, _ = weights.load(small_checkpoint)
    half, _ = weights.load(small_checkpoint, dtype=dtype)
    assert {p.dtype for p in half.parameters()} == {dtype}
    with torch.no_grad():
        expected, found = reference(tokens).log_softmax(-1), half(tokens).float().log_softmax(-1)
    assert (found - expected).abs().max() < 0.1


@pytest.mark.parametrize("processed", [False, True])
def test_per_head_weights_are_plain_tensors(small_checkpoint, processed):
    """model.py's einsum reads W_Q [n_heads, d_model, d_head] as it is: each is a tensor of its own in that order,
    not a view of the checkpoint's side-by-side c_attn."""
    model, _ = weights.load(small_checkpoint, processed=processed)
    attn, cfg = model.blocks[1].attn, model.cfg
    for W in (attn.W_Q, attn.W_K, attn.W_V):
        assert W.shape == (cfg.n_heads, cfg.d_model, cfg.d_head) and W.is_contiguous() and W._base is None
    assert attn.W_O.shape == (cfg.n_heads, cfg.d_head, cfg.d_model) and attn.b_Q.shape == (cfg.n_heads, cfg.d_head)


@pytest.mark.parametrize(
    ("tokens", "error", "message"),
    [
        ("Hello world", TypeError, r"found text: encode it first with tokenizer\.to_tokens"),
        (["Hello", "world"], TypeError, r"found text: encode it first with tokenizer\.to_tokens"),
        ([[1, 2], ["a", "b"]], TypeError, r"tokens must be integer ids shaped \[batch, pos\].*found list"),
        ([0.5, 1.5], ValueError, r"tokens must be integer ids.*found dtype torch\.float32 .*tokenizer\.to_tokens"),
        ({"ids": [1]}, TypeError, r"tokens must be integer ids.*found dict"),
    ],
)
def test_tokens_of_the_wrong_kind_say_what_was_given_and_what_is_expected(small_checkpoint, tokens, error, message):
    """A str passed as tokens gave torch's "new(): invalid data type 'str'"; each wrong kind now names itself."""
    model, _ = weights.load(small_checkpoint)
    with pytest.raises(error, match=message):
        model(tokens)


def test_float16_layer_norm_survives_residuals_whose_squares_overflow(small_checkpoint):
    """GPT-2-XL's first position reaches norms in the thousands; (3000)² overflows float16's 65504."""
    model, _ = weights.load(small_checkpoint, dtype=torch.float16)
    x = torch.randn(1, 4, 64, dtype=torch.float16) * 3000
    out = model.blocks[0].ln1(x)
    assert torch.isfinite(out).all()
    assert torch.allclose(out.float(), model.blocks[0].ln1(x.float()), atol=2e-3)


def test_unsupported_dtype_is_refused(small_checkpoint):
    with pytest.raises(ValueError, match="dtype must be one of"):
        weights.load(small_checkpoint, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# Numbers no file format checks: NaN in the weights, absurd sizes in config.json, names nothing can hold


def growth(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analysis.growth", *map(str, args)], capture_output=True, text=True, timeout=300)


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def nonfinite_checkpoint(checkpoint_copy):
    """Three NaN in layer 1's queries (c_attn's first columns are W_Q's first head), an Inf in an embedding row
    of a token the tests' prompts never use."""
    state = official_state(3, 64, 4, seed=1)
    state["h.1.attn.c_attn.weight"][0, :3] = float("nan")
    state["wte.weight"][40000, 5] = float("inf")
    save_file(state, checkpoint_copy / "model.safetensors")
    return checkpoint_copy


def test_nonfinite_weights_are_refused_naming_each_tensor(nonfinite_checkpoint):
    with pytest.raises(CheckpointError) as error:
        weights.load(nonfinite_checkpoint)
    assert str(error.value) == (
        f"{nonfinite_checkpoint}: 2 weight tensor(s) hold NaN or infinite values: W_E (1 of 3,216,448), "
        "blocks.1.attn.W_Q (3 of 4,096); every norm through them would be NaN (a diverged training run, or a damaged "
        "file?). allow_nonfinite=True, or --allow-nonfinite, reads it anyway"
    )
    model, _ = weights.load(nonfinite_checkpoint, processed=False, allow_nonfinite=True)
    assert int(model.blocks[1].attn.W_Q.isnan().sum()) == 3 and model.W_E[40000, 5] == float("inf")


def test_the_command_refuses_nonfinite_weights_unless_told(nonfinite_checkpoint, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The cat sat on the mat.\n")
    line = one_line(growth("--model", nonfinite_checkpoint, "--prompts-file", prompts, "--out", tmp_path / "out"))
    assert line.startswith(f"error: {nonfinite_checkpoint}: 2 weight tensor(s) hold NaN or infinite values: W_E (1 of")
    assert not (tmp_path / "out").exists()
    allowed = growth("--model", nonfinite_checkpoint, "--prompts-file", prompts, "--out", tmp_path / "out", "--allow-nonfinite")
    assert "NaN or infinite" not in allowed.stderr and "loading" in allowed.stdout, allowed.stderr


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("n_layers", 0, "n_layers must be a positive integer, found 0"),
        ("d_vocab", -5, "d_vocab must be a positive integer, found -5"),
        ("n_ctx", 2.5, "n_ctx must be a positive integer, found 2.5"),
        ("ln_eps", -1e-5, "ln_eps, LayerNorm's epsilon, must be a positive number, found -1e-05"),
        ("ln_eps", 0.0, "ln_eps, LayerNorm's epsilon, must be a positive number, found 0.0"),
        ("ln_eps", float("nan"), "ln_eps, LayerNorm's epsilon, must be a positive number, found nan"),
    ],
)
def test_config_refuses_numbers_no_model_has(field, value, expected):
    with pytest.raises(ValueError, match=re.escape(expected)):
        Config(**{field: value})


@pytest.mark.parametrize("name", ["owner/my model", "owner/modèle", "owner/name--x", "o/" + "n" * 100])
def test_a_name_that_cannot_be_a_hub_id_is_one_line(name):
    with pytest.raises(CheckpointError) as error:
        weights.locate(name)
    assert str(error.value).startswith(f"{name!r}: no such directory, and not a hub id: a hub id is owner/name, each of ASCII")


TOO_LONG = r"error: '.{60}'… \(\d+ characters\): cannot be looked up \(File name too long\)$"


@pytest.mark.parametrize(
    "name, expected",
    [
        ("m" * 300, TOO_LONG),
        ("./" + "m" * 300, TOO_LONG),
        ("/tmp/" + "m" * 300, TOO_LONG),
        ("owner/" + "m" * 300 + "/x", r"error: 'owner/m+/x': no such directory\. Known names: gpt2, "),  # owner/ is not here
    ],
)
def test_a_model_name_over_the_file_systems_limit_is_one_line(name, expected, tmp_path):
    line = one_line(growth("--model", name, "--out", tmp_path / "out"))
    assert re.match(expected, line), line


def test_a_key_map_that_misses_a_parameter_is_caught_not_left_unset(small_checkpoint):
    """The one reader checks every family, GPT-2 included, for a parameter its key map never set (left on the meta
    device, it would fail later, deep in a forward pass)."""
    import re

    from weights import checkpoint, formats, keys

    def partial_map(cfg):
        return {name: entry for name, entry in checkpoint.key_map(cfg).items() if name != "blocks.0.attn.b_O"}

    ignored = re.compile(checkpoint.IGNORED.pattern + r"|h\.0\.attn\.c_proj\.bias")
    layout = keys.Layout(checkpoint.GPT2, partial_map, "transformer.", ignored)
    cfg = checkpoint.read_config(small_checkpoint)
    with pytest.raises(RuntimeError, match=r"left blocks\.0\.attn\.b_O unset: GPT2's key map misses them"):
        keys.read_weights(formats.open_weights(small_checkpoint), cfg, layout)
