"""weights.formats: every weights format read as one tensor source, and each kind of damaged file refused in
one line naming the file and what is wrong with it.

A damaged download is the common case here: a file cut short, a header whose numbers disagree, a JSON file
of the wrong shape. Each case below writes such a file into a copy of a good checkpoint and checks the
message, once through `weights.load` and, for a few, through the command a user runs.
"""

import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import weights
from benchmarks.checkpoints import official_state, save_weights, write_checkpoint
from weights import CheckpointError
from weights.formats import SafetensorsFile
from weights.tokenizer_files import read_tokenizer_json

SHAPE = dict(n_layers=3, d_model=64, n_heads=4)
SEED = 1  # as small_checkpoint's
SHARD = 3_000_000  # bytes: wte (12.9 MB) and each causal mask (4.2 MB) are shards of their own, the rest share two


TOKENS = torch.arange(12)[None] * 11


def logits_of(directory, tokens=TOKENS) -> torch.Tensor:
    model, _ = weights.load(directory, processed=False)
    with torch.no_grad():
        return model(tokens)


FORMATS = {
    "safetensors": dict(weights_format="safetensors"),
    "safetensors-sharded": dict(weights_format="safetensors", max_shard_bytes=SHARD),
    "bin": dict(weights_format="bin"),
    "bin-sharded": dict(weights_format="bin", max_shard_bytes=SHARD),
}


@pytest.fixture(scope="module")
def formats(tmp_path_factory) -> dict[str, Path]:
    """small_checkpoint's weights in each format, and in torch's legacy (pre-zip) pickle."""
    root = tmp_path_factory.mktemp("formats")
    made = {name: write_checkpoint(root / name, **SHAPE, seed=SEED, **kwargs) for name, kwargs in FORMATS.items()}
    legacy = write_checkpoint(root / "bin-legacy", **SHAPE, seed=SEED)
    (legacy / "model.safetensors").unlink()
    torch.save(official_state(**SHAPE, seed=SEED), legacy / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    return made | {"bin-legacy": legacy}


@pytest.mark.parametrize("name", [*FORMATS, "bin-legacy"])
def test_every_format_is_one_tensor_source_with_the_same_tensors(formats, name):
    state = official_state(**SHAPE, seed=SEED)
    source = weights.open_weights(formats[name])
    assert sorted(source.keys()) == sorted(state) and all(key in source for key in state)
    assert source.shapes() == {key: tuple(tensor.shape) for key, tensor in state.items()}
    for key in ("wte.weight", "h.2.mlp.c_proj.bias", "h.1.attn.bias"):
        tensor = source.read(key)
        assert tensor.dtype == state[key].dtype and torch.equal(tensor, state[key])
    if name != "bin-legacy":  # a read is a tensor of its own: writing to it changes neither the file nor the next read
        source.read("wte.weight").add_(1.0)
        assert torch.equal(source.read("wte.weight"), state["wte.weight"])


@pytest.mark.parametrize("name", [*FORMATS, "bin-legacy"])
def test_every_format_loads_to_the_same_model(formats, name):
    assert torch.equal(logits_of(formats[name]), logits_of(formats["safetensors"]))


def test_shards_written_by_transformers_load_exactly(tmp_path, vocab_files):
    """save_pretrained's own sharding (its names, its index, the "transformer." prefix) against HF's logits."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=128)).eval()
    hf.save_pretrained(tmp_path, max_shard_size="1MB")
    for source, name in zip(vocab_files, ("vocab.json", "merges.txt")):
        shutil.copy(source, tmp_path / name)
    assert (tmp_path / "model.safetensors.index.json").exists() and len(list(tmp_path.glob("model-*.safetensors"))) >= 2
    tokens = torch.arange(20)[None] * 13
    with torch.no_grad():
        expected = hf(tokens).logits
    assert (logits_of(tmp_path, tokens) - expected).abs().max() < 1e-4  # float32 rounding: test_parity's bound


def test_the_bos_and_padding_tokens_are_the_ones_the_tokenizer_files_name(formats, tmp_path):
    """special_tokens_map.json wins over tokenizer_config.json, as in transformers; where neither names a token,
    config.json's bos_token_id and pad_token_id do; where nothing does, BOS is <|endoftext|> and padding is BOS."""
    directory = tmp_path / "named"
    shutil.copytree(formats["safetensors"], directory)
    assert (weights.read_tokenizer(directory).bos, weights.read_tokenizer(directory).pad) == (50256, 50256)
    (directory / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "pad_token": "!"}))
    (directory / "special_tokens_map.json").write_text(json.dumps({"bos_token": {"content": '"'}}))
    tokenizer = weights.read_tokenizer(directory)
    assert (tokenizer.bos, tokenizer.pad) == (1, 0)  # '"' from the map, '!' from the config
    assert tokenizer.to_tokens("Hi")[0, 0] == 1
    (directory / "tokenizer_config.json").unlink()
    (directory / "special_tokens_map.json").unlink()
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps(config | {"bos_token_id": 2, "pad_token_id": 1}))
    tokenizer = weights.read_tokenizer(directory)  # no tokenizer files name them: config.json's ids, as OPT's
    assert (tokenizer.bos, tokenizer.pad) == (2, 1)


def test_safetensors_is_preferred_over_the_same_weights_as_a_pickle(formats, tmp_path):
    directory = tmp_path / "both"
    shutil.copytree(formats["safetensors"], directory)
    (directory / "pytorch_model.bin").write_bytes(b"not read: model.safetensors comes first")
    assert isinstance(weights.open_weights(directory), SafetensorsFile)


# ---------------------------------------------------------------------------------------------
# Damaged files. Each case: which checkpoint to copy, what to do to the copy, and the message expected.


def rewrite_header(path: Path, change) -> None:
    """Replace a safetensors file's header by change(header), keeping the data bytes as they are."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    new = json.dumps(change(header)).encode()
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])


def entry(key: str, **fields):
    def change(header):
        header[key] |= fields
        return header

    return change


def drop_field(key: str, field: str):
    def change(header):
        del header[key][field]
        return header

    return change


def same_bytes_as(key: str, other: str):
    """Make key's offsets those of other (same shape and dtype): both tensors then read the same bytes."""

    def change(header):
        header[key]["data_offsets"] = header[other]["data_offsets"]
        return header

    return change


def write_json(name: str, data):
    return lambda directory: (directory / name).write_text(json.dumps(data))


def edit_json(name: str, change):
    def edit(directory):
        data = json.loads((directory / name).read_text(encoding="utf-8"))
        (directory / name).write_text(json.dumps(change(data)))

    return edit


def header_case(change):
    return lambda directory: rewrite_header(directory / "model.safetensors", change)


def append_bytes(name: str, extra: bytes):
    return lambda directory: (directory / name).write_bytes((directory / name).read_bytes() + extra)


def truncate(name: str, n_bytes: int):
    return lambda directory: (directory / name).write_bytes((directory / name).read_bytes()[:-n_bytes])


def torch_save(obj):
    return lambda directory: torch.save(obj, directory / "pytorch_model.bin")


class RunsCode:
    """What a hostile pickle carries: unpickled by a loader that builds any object, it runs a shell command."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def save_code(directory: Path) -> None:
    """A pytorch_model.bin whose pickle, loaded unsafely, would create the file `ran` beside it."""
    torch.save({"wte.weight": torch.zeros(2), "x": RunsCode(f"touch {directory / 'ran'}")}, directory / "pytorch_model.bin")


def flip_a_byte_of(name: str):
    """Change one byte in the middle of the largest record of torch.save's zip (a tensor's bytes), leaving the
    CRC-32 stored in the archive as it was written: the bit flip of a bad disk or a damaged download."""

    def damage(directory: Path) -> None:
        path = directory / name
        with zipfile.ZipFile(path) as archive:
            record = max(archive.infolist(), key=lambda info: info.file_size)
        raw = bytearray(path.read_bytes())
        at = record.header_offset
        name_length, extra_length = struct.unpack("<HH", raw[at + 26 : at + 30])  # the local header is 30 bytes + both
        raw[at + 30 + name_length + extra_length + record.file_size // 2] ^= 0xFF
        path.write_bytes(bytes(raw))

    return damage


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def with_header(header: bytes):
    return lambda directory: (directory / ST).write_bytes(struct.pack("<Q", len(header)) + header)


def first_shard(directory: Path, index: str) -> str:
    return first_shard_of(json.loads((directory / index).read_text()))


def remove_first_shard(index: str):
    return lambda directory: (directory / first_shard(directory, index)).unlink()


def move_key_to_first_shard(index: str, key: str):
    """The index claims key is in a shard that does not hold it."""
    return edit_json(index, lambda data: data | {"weight_map": data["weight_map"] | {key: first_shard_of(data)}})


def first_shard_of(index_data) -> str:
    return sorted(set(index_data["weight_map"].values()))[0]


ST = "model.safetensors"
ST_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"
CORRUPT = r"model\.safetensors: corrupt or truncated safetensors file \("
HOW = r"\)\. Delete it and download it again$"

CASES = {
    # model.safetensors: the header against the rules the safetensors library checks
    "offsets_disagree_with_shape": (
        "safetensors",
        header_case(entry("h.0.ln_1.bias", shape=[65])),
        CORRUPT + r"a tensor's data_offsets do not hold the bytes its shape and dtype need" + HOW,
    ),
    "reversed_offsets": (
        "safetensors",
        header_case(lambda h: entry("wpe.weight", data_offsets=h["wpe.weight"]["data_offsets"][::-1])(h)),
        CORRUPT + r"tensor 'wpe\.weight' does not begin where the tensor before it ends: a gap, an overlap or reversed "
        r"offsets" + HOW,
    ),
    "missing_data_offsets": (
        "safetensors",
        header_case(drop_field("h.1.attn.c_attn.weight", "data_offsets")),
        CORRUPT + r"its header is not in the safetensors layout: missing field `data_offsets`" + HOW,
    ),
    "header_is_a_list": (
        "safetensors",
        header_case(lambda h: list(h.items())),
        CORRUPT + r"its header is not in the safetensors layout: invalid type: list, expected an object" + HOW,
    ),
    "string_offsets": (
        "safetensors",
        header_case(lambda h: entry("ln_f.bias", data_offsets=[str(n) for n in h["ln_f.bias"]["data_offsets"]])(h)),
        CORRUPT + r'its header is not in the safetensors layout: invalid type: string "\d+", expected a non-negative '
        r"integer" + HOW,
    ),
    "overlapping_offsets": (
        "safetensors",
        header_case(same_bytes_as("h.2.ln_2.bias", "h.2.ln_2.weight")),
        CORRUPT + r"tensor 'h\.2\.ln_2\.(bias|weight)' does not begin where the tensor before it ends: a gap, an overlap "
        r"or reversed offsets" + HOW,
    ),
    "unknown_dtype": (
        "safetensors",
        header_case(entry("wte.weight", dtype="F33")),
        CORRUPT + r"its header is not in the safetensors layout: unknown variant `F33`, expected one of `BOOL`, .*`U64`" + HOW,
    ),
    "negative_shape": (
        "safetensors",
        header_case(entry("ln_f.bias", shape=[-64])),
        CORRUPT + r"its header is not in the safetensors layout: invalid value: integer `-64`, expected a non-negative "
        r"integer" + HOW,
    ),
    "boolean_in_shape": (
        "safetensors",
        header_case(entry("ln_f.bias", shape=[True])),
        CORRUPT + r"its header is not in the safetensors layout: invalid type: boolean `true`, expected a non-negative "
        r"integer" + HOW,
    ),
    "metadata_not_strings": (
        "safetensors",
        header_case(lambda h: h | {"__metadata__": {"format": 1}}),
        CORRUPT + r"its header is not in the safetensors layout: invalid type: integer `1`, expected a string" + HOW,
    ),
    "entry_not_an_object": (
        "safetensors",
        header_case(lambda h: h | {"wpe.weight": [1, 2]}),
        CORRUPT + r"its header is not in the safetensors layout: invalid type: integer `1`, expected string or object" + HOW,
    ),
    "bytes_belonging_to_no_tensor": (
        "safetensors",
        header_case(lambda h: {k: v for k, v in h.items() if k != "h.1.ln_1.weight"}),
        CORRUPT + r"tensor '[\w.]+' does not begin where the tensor before it ends: a gap, an overlap or reversed "
        r"offsets" + HOW,
    ),
    "bytes_after_the_last_tensor": (
        "safetensors",
        append_bytes(ST, b"\0" * 100),
        CORRUPT + r"100 bytes after the last tensor belong to no tensor" + HOW,
    ),
    "truncated": (
        "safetensors",
        truncate(ST, 1000),
        CORRUPT + r"truncated: the header needs \d+ bytes of data, the file has \d+" + HOW,
    ),
    "header_longer_than_the_file": (
        "safetensors",
        lambda d: (d / ST).write_bytes(struct.pack("<Q", 10**6) + b"{}"),
        CORRUPT + r"truncated: its header claims 1000000 bytes but the file has 10" + HOW,
    ),
    "header_nested_too_deep": (
        "safetensors",
        with_header(f'{{"wte.weight": {nested(100_000)}}}'.encode()),
        CORRUPT + r"its header is not valid JSON: recursion limit exceeded" + HOW,
    ),
    # pytorch_model.bin
    "bin_runs_code": (
        "bin",
        save_code,
        r"pytorch_model\.bin: it asks to run code \(posix\.system\) to rebuild what it holds, where a checkpoint holds "
        r"only tensors; torch's safe loader \(weights_only=True\) refused it, and nothing ran\.",
    ),
    "bin_bad_crc": (
        "bin",
        flip_a_byte_of("pytorch_model.bin"),
        r"pytorch_model\.bin: corrupt or truncated pytorch_model\.bin file \(record [\w/.]+ fails its CRC-32 check: its "
        r"bytes changed after it was written" + HOW,
    ),
    "bin_not_a_checkpoint": (
        "bin",
        lambda d: (d / "pytorch_model.bin").write_text("<html>502 Bad Gateway</html>"),
        r"pytorch_model\.bin: not a PyTorch checkpoint \(neither a zip archive, torch\.save's format, nor a pickle\)$",
    ),
    "bin_truncated": (
        "bin",
        truncate("pytorch_model.bin", 5000),
        r"pytorch_model\.bin: corrupt or truncated pytorch_model\.bin file \(a zip archive without its end: truncated\?" + HOW,
    ),
    "bin_needs_more_than_tensors": (
        "bin",
        torch_save({"wte.weight": torch.zeros(2), "args": argparse.Namespace(lr=1)}),
        r"pytorch_model\.bin: it asks to run code \(argparse\.Namespace\) to rebuild what it holds, where a checkpoint "
        r"holds only tensors; torch's safe loader \(weights_only=True\) refused it, and nothing ran\. Use weights from "
        r"a source you trust, in model\.safetensors if it has one$",
    ),
    "bin_holds_a_non_tensor": (
        "bin",
        torch_save({"wte.weight": torch.zeros(2), "epoch": 3}),
        r"pytorch_model\.bin: its entry 'epoch' is not a tensor \(int 3\); a state dict holds only tensors$",
    ),
    "bin_not_a_dict": (
        "bin",
        torch_save([torch.zeros(2)]),
        r"pytorch_model\.bin: holds a list, not a state dict \{name: tensor\}$",
    ),
    "bin_damaged_pickle": (
        "bin-legacy",
        lambda d: (d / "pytorch_model.bin").write_bytes(b"\x80\x02garbage"),
        r"pytorch_model\.bin: corrupt or truncated pytorch_model\.bin file \(torch\.load: Unsupported operand 103" + HOW,
    ),
    "bin_lfs_pointer": (
        "bin",
        lambda d: (d / "pytorch_model.bin").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 9\n"),
        r"pytorch_model\.bin is a Git LFS pointer \(\d+ bytes\), not the file itself: run `git lfs pull`",
    ),
    # the index of a sharded checkpoint
    "index_not_an_object": (
        "safetensors-sharded",
        write_json(ST_INDEX, ["model-00001-of-00002.safetensors"]),
        r"model\.safetensors\.index\.json: a JSON list, not an object$",
    ),
    "index_not_json": (
        "safetensors-sharded",
        lambda d: (d / ST_INDEX).write_text('{"weight_map": '),
        r"model\.safetensors\.index\.json: not valid JSON \(.+\)$",
    ),
    "index_without_weight_map": (
        "safetensors-sharded",
        edit_json(ST_INDEX, lambda data: {"metadata": data["metadata"]}),
        r"model\.safetensors\.index\.json: no weight_map \(an index maps each tensor to the shard file holding it\)$",
    ),
    "index_shard_outside_the_folder": (
        "safetensors-sharded",
        edit_json(ST_INDEX, lambda data: data | {"weight_map": data["weight_map"] | {"wte.weight": "../model.safetensors"}}),
        r"model\.safetensors\.index\.json: weight_map gives wte\.weight the shard '\.\./model\.safetensors'; expected a file "
        r"name beside the index$",
    ),
    "index_shard_missing": (
        "safetensors-sharded",
        remove_first_shard(ST_INDEX),
        r"model\.safetensors\.index\.json: names 1 shard\(s\) not in .+: model-00001-of-\d{5}\.safetensors \(an incomplete "
        r"download\?\)$",
    ),
    "index_key_not_in_its_shard": (
        "safetensors-sharded",
        move_key_to_first_shard(ST_INDEX, "ln_f.bias"),
        r"model\.safetensors\.index\.json: 1 tensor\(s\) of its weight_map are not in the shard it names: ln_f\.bias \(in "
        r"model-00001-of-\d{5}\.safetensors\)$",
    ),
    "bin_index_key_not_in_its_shard": (
        "bin-sharded",
        move_key_to_first_shard(BIN_INDEX, "h.0.ln_1.weight"),
        r"pytorch_model\.bin\.index\.json: 1 tensor\(s\) of its weight_map are not in the shard it names: h\.0\.ln_1\.weight",
    ),
    "shard_damaged": (
        "safetensors-sharded",
        lambda d: truncate(first_shard(d, ST_INDEX), 10)(d),
        r"model-00001-of-\d{5}\.safetensors: corrupt or truncated safetensors file \(truncated: " + r".*" + HOW,
    ),
    # config.json
    "config_not_an_object": ("safetensors", write_json("config.json", [1, 2]), r"config\.json: a JSON list, not an object$"),
    "config_string_for_a_number": (
        "safetensors",
        edit_json("config.json", lambda c: c | {"n_embd": "64"}),
        r'config\.json: n_embd is "64"; expected a positive integer$',
    ),
    "config_fraction_for_a_count": (
        "safetensors",
        edit_json("config.json", lambda c: c | {"n_layer": 2.5}),
        r"config\.json: n_layer is 2\.5; expected a positive integer$",
    ),
    "config_boolean_for_a_count": (
        "safetensors",
        edit_json("config.json", lambda c: c | {"n_head": True}),
        r"config\.json: n_head is true; expected a positive integer$",
    ),
    "config_string_for_epsilon": (
        "safetensors",
        edit_json("config.json", lambda c: c | {"layer_norm_epsilon": "1e-5"}),
        r'config\.json: layer_norm_epsilon is "1e-5"; expected a positive number$',
    ),
    "config_negative_epsilon": (
        "safetensors",
        edit_json("config.json", lambda c: c | {"layer_norm_epsilon": -1e-5}),
        r"config\.json: layer_norm_epsilon is -1e-05; expected a positive number$",
    ),
    "config_zero_epsilon": (
        "safetensors",
        edit_json("config.json", lambda c: c | {"layer_norm_epsilon": 0}),
        r"config\.json: layer_norm_epsilon is 0; expected a positive number$",
    ),
    "config_nested_too_deep": (
        "safetensors",
        lambda d: (d / "config.json").write_text(f'{{"model_type": "gpt2", "n_layer": {nested(100_000)}}}'),
        r"config\.json: not valid JSON \(nested deeper than Python's JSON reader allows\)$",
    ),
    # sizes the file cannot hold: refused from the numbers, before a table of expected tensors is built
    "config_a_million_layers": (
        "safetensors",
        edit_json("config.json", lambda c: c | {"n_layer": 10**6}),
        r"config\.json: 1000000 layers need at least 4,000,000 tensors, and model\.safetensors holds \d+: the layer count "
        r"in config\.json is wrong$",
    ),
    "config_a_billion_layers": (
        "safetensors",
        edit_json("config.json", lambda c: c | {"n_layer": 10**9}),
        r"config\.json: 1000000000 layers need at least 4,000,000,000 tensors",
    ),
    "config_a_huge_width": (
        "safetensors",
        edit_json("config.json", lambda c: c | {"n_embd": 2**20, "n_head": 1}),
        r"config\.json: 3 layers of d_model 1048576 and d_mlp 4194304, with a vocabulary of 50257, need at least "
        r"[\d,]+ weights \([\d,.]+ MB in float16\), and model\.safetensors holds [\d.]+ MB: a size in config\.json is wrong$",
    ),
    "config_a_huge_vocabulary": (
        "safetensors",
        edit_json("config.json", lambda c: c | {"vocab_size": 10**12}),
        r"config\.json: 3 layers of d_model 64 and d_mlp 256, with a vocabulary of 1000000000000, need at least",
    ),
    "config_heads_do_not_divide": (
        "safetensors",
        edit_json("config.json", lambda c: c | {"n_head": 5}),
        r"config\.json: n_embd 64 is not divisible by n_head 5$",
    ),
    "config_activation_not_a_string": (
        "safetensors",
        edit_json("config.json", lambda c: c | {"activation_function": ["gelu_new"]}),
        r'config\.json: activation_function is \["gelu_new"\]; expected a string$',
    ),
    # the tokenizer's files
    "vocab_not_an_object": ("safetensors", write_json("vocab.json", ["!", '"']), r"vocab\.json: a JSON list, not an object$"),
    "vocab_id_not_an_integer": (
        "safetensors",
        edit_json("vocab.json", lambda v: v | {"Ġthe": "262"}),
        r"vocab\.json: the token 'Ġthe' has the id \"262\"; ids are non-negative integers$",
    ),
    "vocab_without_end_of_text": (
        "safetensors",
        lambda d: [
            edit_json("vocab.json", lambda v: {k: i for k, i in v.items() if k != "<|endoftext|>"})(d),
            edit_json("config.json", lambda c: {k: v for k, v in c.items() if k != "bos_token_id"})(d),
        ],
        r"vocab\.json: no <\|endoftext\|> \(the BOS token: GPT-2's end-of-text token, the default\)$",
    ),
    "config_bos_id_not_in_vocab": (
        "safetensors",
        edit_json("vocab.json", lambda v: {k: i for k, i in v.items() if k != "<|endoftext|>"}),
        r"config\.json: bos_token_id 50256 is not an id of vocab\.json's 50256 tokens$",
    ),
    "special_tokens_bos_not_in_vocab": (
        "safetensors",
        write_json("special_tokens_map.json", {"bos_token": {"content": "<s>"}}),
        r"vocab\.json: no <s> \(the BOS token: special_tokens_map\.json names it\)$",
    ),
    "special_tokens_pad_not_in_vocab": (
        "safetensors",
        write_json("tokenizer_config.json", {"pad_token": "<pad>"}),
        r"vocab\.json: no <pad> \(the padding token: tokenizer_config\.json names it\)$",
    ),
    "special_tokens_bos_a_number": (
        "safetensors",
        write_json("special_tokens_map.json", {"bos_token": 50256}),
        r'special_tokens_map\.json: bos_token is 50256; expected a string or \{"content": string\}$',
    ),
    "merges_line_not_a_pair": (
        "safetensors",
        lambda d: (d / "merges.txt").write_text("#version: 0.2\nĠ t\nĠ a x\n", encoding="utf-8"),
        r"merges\.txt: line 3 is not a pair of symbols: 'Ġ a x'$",
    ),
    "merges_not_utf8": (
        "safetensors",
        lambda d: (d / "merges.txt").write_bytes(b"#version: 0.2\n\xff\xfe t\n"),
        r"merges\.txt: not UTF-8 text \(.+\)$",
    ),
}


@pytest.fixture
def damaged(request, formats, tmp_path):
    start, damage, _ = CASES[request.param]
    directory = tmp_path / request.param
    shutil.copytree(formats[start], directory)
    damage(directory)
    return directory


@pytest.mark.parametrize("damaged, expected", [(name, case[2]) for name, case in CASES.items()], indirect=["damaged"])
def test_a_damaged_file_is_one_line_naming_it(damaged, expected):
    with pytest.raises(CheckpointError) as error:
        weights.load(damaged)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(str(damaged)), message  # the file named by its full path
    assert re.search(expected, message), message


def test_a_pickle_that_would_run_code_is_refused_and_runs_none(formats, tmp_path):
    """A real payload: unpickled unsafely it creates a file; through weights.load it is refused, and the file never
    appears."""
    unsafe = tmp_path / "unsafe"
    unsafe.mkdir()
    save_code(unsafe)
    torch.load(unsafe / "pytorch_model.bin", weights_only=False)  # the payload is real: this runs it
    assert (unsafe / "ran").exists()
    directory = tmp_path / "hostile"
    shutil.copytree(formats["bin"], directory)
    save_code(directory)
    with pytest.raises(CheckpointError, match=CASES["bin_runs_code"][2]):
        weights.load(directory)
    assert not (directory / "ran").exists()


def test_a_bit_flip_in_a_bin_would_load_without_the_crc_check(formats, tmp_path, monkeypatch):
    """The damage of bin_bad_crc is one torch reads without complaint: only the zip's CRC-32 finds it."""
    from weights import formats as formats_module

    directory = tmp_path / "flipped"
    shutil.copytree(formats["bin"], directory)
    flip_a_byte_of("pytorch_model.bin")(directory)
    monkeypatch.setattr(formats_module, "check_zip", lambda path: None)
    assert not torch.equal(logits_of(directory), logits_of(formats["bin"]))


def test_a_dtype_this_torch_cannot_hold_is_named(tmp_path):
    header = json.dumps({"a": {"dtype": "F6_E2M3", "shape": [4], "data_offsets": [0, 3]}}).encode()
    (tmp_path / ST).write_bytes(struct.pack("<Q", len(header)) + header + bytes(3))
    source = SafetensorsFile(tmp_path / ST)
    assert source.shapes() == {"a": (4,)}
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor a has dtype F6_E2M3, which this torch cannot hold"):
        source.read("a")


LIBRARY_CASES = [
    "offsets_disagree_with_shape", "reversed_offsets", "missing_data_offsets", "header_is_a_list", "string_offsets",
    "overlapping_offsets", "unknown_dtype", "negative_shape", "boolean_in_shape", "metadata_not_strings",
    "entry_not_an_object", "bytes_belonging_to_no_tensor", "bytes_after_the_last_tensor", "truncated",
]  # fmt: skip


@pytest.mark.parametrize("damaged", LIBRARY_CASES, indirect=True)
def test_the_safetensors_library_refuses_each_damaged_header_too(damaged):
    """The rules are the library's: a file it opens, minigpt opens; one it refuses, minigpt refuses."""
    with pytest.raises(Exception, match="Error while deserializing header|incomplete metadata"):
        with safe_open(damaged / ST, "pt"):
            pass


def test_a_zero_size_tensor_and_other_dtypes_are_accepted_as_the_library_accepts_them(tmp_path):
    from safetensors.torch import save_file

    tensors = {"empty": torch.zeros(0, 5), "mask": torch.ones(3, dtype=torch.bool), "ids": torch.arange(4)}
    save_file(tensors, tmp_path / ST)
    source = SafetensorsFile(tmp_path / ST)
    assert all(torch.equal(source.read(key), tensor) for key, tensor in tensors.items())


@pytest.mark.parametrize(
    "data, expected",
    [
        ([1], r"tokenizer\.json: a JSON list, not an object$"),
        ({"version": "1.0"}, r'tokenizer\.json: no "model" object'),
        ({"model": {"type": "WordPiece", "vocab": {}}}, r'tokenizer\.json: its model is of type "WordPiece"; expected "BPE"$'),
        ({"model": {"type": "BPE", "vocab": {}}}, r"tokenizer\.json: its BPE model needs a vocab object and a merges list$"),
    ],
)
def test_tokenizer_json_of_the_wrong_shape_is_named(tmp_path, data, expected):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=expected):
        read_tokenizer_json(path)


def test_a_weight_stored_as_integers_is_named(tmp_path, formats):
    directory = tmp_path / "ints"
    shutil.copytree(formats["safetensors"], directory)
    state = official_state(**SHAPE, seed=SEED)
    save_weights(state | {"ln_f.bias": state["ln_f.bias"].long()}, directory)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor ln_f\.bias is torch\.int64; expected float32"):
        weights.load(directory)


# Through the command a user runs: exit status 2 and the one line, no traceback.
CLI_CASES = [
    "overlapping_offsets",
    "header_is_a_list",
    "bin_needs_more_than_tensors",
    "bin_runs_code",
    "bin_bad_crc",
    "config_negative_epsilon",
    "config_a_billion_layers",
    "index_shard_missing",
    "merges_line_not_a_pair",
]


@pytest.mark.parametrize("damaged", CLI_CASES, indirect=True)
def test_the_command_prints_the_one_line_and_exits_2(damaged, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "analysis.growth", "--model", str(damaged), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {damaged}") and re.search(CASES[damaged.name][2], lines[0])
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# Names: what `locate` would look up on the hub


@pytest.mark.parametrize(
    "name, on_hub",
    [
        ("gpt2", True),
        ("openai-community/gpt2", True),
        ("EleutherAI/pythia-70m", True),
        ("bundled", False),
        ("./missing", False),
        ("../missing/model", False),
        ("/no/such/dir", False),
        ("~/no-such-model", False),
        ("./owner/name", False),
    ],
)
def test_a_path_like_name_is_not_a_hub_name(name, on_hub):
    assert weights.is_hub_name(name) is on_hub


def test_a_name_that_exists_on_disk_is_not_a_hub_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "owner").mkdir()
    (tmp_path / "owner" / "notes").write_text("a file, not a model")
    assert weights.is_hub_name("owner/other") and not weights.is_hub_name("owner/notes")
    with pytest.raises(CheckpointError, match="'owner/notes': not a directory"):
        weights.locate("owner/notes")


# ---------------------------------------------------------------------------------------------
# Memory: a .bin is mapped, and each read lets go of the pages it touched


def resident_bytes_of_mapping(path: Path) -> int:
    """How much of this process's mapping of path is resident, from /proc/self/smaps."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5:  # a mapping's first line: range, perms, offset, dev, inode, path
            inside = len(fields) >= 6 and fields[5] == str(path)
        elif inside and fields[0] == "Rss:":
            total += int(fields[1]) * 1024
    return total


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/smaps")
def test_reading_a_bin_leaves_none_of_its_map_resident(formats, monkeypatch):
    """Each tensor is copied out of torch's map of the file and its pages dropped (madvise), so resident memory
    is the copies alone, as with safetensors. Without the release the map stays resident beside them."""
    from weights import formats as formats_module
    from weights import pages

    path = formats["bin"] / "pytorch_model.bin"
    source = formats_module.PickleFile(path)
    copies = [source.read(key) for key in source.keys()]
    size = path.stat().st_size
    assert resident_bytes_of_mapping(path.resolve()) < size / 20  # what stays: the zip's headers, a page per record
    monkeypatch.setattr(pages, "MADVISE", None)
    kept = formats_module.PickleFile(path)
    copies += [kept.read(key) for key in kept.keys()]
    assert resident_bytes_of_mapping(path.resolve()) > size / 2


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/smaps")
def test_reading_a_safetensors_file_leaves_no_map_behind(formats):
    """The library's tensors are views of its map of the file: each read opens the file, copies the tensor out
    and lets the map go. One handle kept open for every read keeps the map resident beside the copies (2.89
    against 1.77 GiB peak for a gpt2-medium-shaped load, BENCHMARKS.md)."""
    path = (formats["safetensors"] / ST).resolve()
    source = SafetensorsFile(path)
    copies = [source.read(key) for key in source.keys()]
    assert resident_bytes_of_mapping(path) == 0
    with safe_open(path, "pt") as handle:
        copies += [handle.get_tensor(key).clone() for key in handle.keys()]
        assert resident_bytes_of_mapping(path) > path.stat().st_size / 2


def test_json_field_checks_each_kind_and_says_what_it_expected(tmp_path):
    from weights.formats import json_field

    path = tmp_path / "config.json"
    data = {"bos_token_id": 0, "rotary_pct": 0.25, "rope_parameters": {"rope_theta": 10000}, "n_head": -1, "x": None}
    assert json_field(data, path, "bos_token_id", int, minimum=0) == 0
    assert json_field(data, path, "rotary_pct", float) == 0.25
    assert json_field(data, path, "rope_parameters", dict) == {"rope_theta": 10000}
    assert json_field(data, path, "x", int, 7) == 7 and json_field(data, path, "absent", str, "gpt2") == "gpt2"
    for name, kind, expected in [
        ("n_head", int, r"config\.json: n_head is -1; expected a positive integer$"),
        ("rope_parameters", list, r"config\.json: rope_parameters is \{\"rope_theta\": 10000\}; expected a list$"),
        ("absent", int, r"config\.json: missing the field 'absent'$"),
    ]:
        with pytest.raises(CheckpointError, match=expected):
            json_field(data, path, name, kind)
    with pytest.raises(CheckpointError, match=r"n_head is -1; expected an integer of at least 0$"):
        json_field(data, path, "n_head", int, minimum=0)
