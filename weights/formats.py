"""Checkpoint files, whatever their format, read as one kind of object: a tensor source.

A tensor source has
    .path               the file a message about it names (for a sharded checkpoint, its index)
    .keys(), key in it  the tensors' names, as the checkpoint spells them
    .shapes()           {name: shape}, from the header alone: no tensor is read
    .read(name)         that tensor in its stored dtype, in memory of its own (never a view of the file)

`open_weights(directory)` finds the weights the way transformers does, taking the first of WEIGHT_FILES that
the directory holds: model.safetensors; its sharded form, model.safetensors.index.json naming the shards;
pytorch_model.bin, torch's zip of a pickle; its sharded form, pytorch_model.bin.index.json.

Every file is checked before a tensor is read from it. A damaged download should say so, not crash or
read wrong data: each problem is one CheckpointError line naming the file and what is wrong with it. The
same goes for the small files beside the weights (`read_json`; the tokenizer's in tokenizer_files.py).
"""

import json
import math
import pickle
import re
import struct
import zipfile
from functools import partial
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .pages import release_pages

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
LFS_POINTER_START = b"version https://git-lfs"


class CheckpointError(ValueError):
    """A model could not be found or read. The message says what was wrong and what to do."""


def how_to_replace(path: Path) -> str:
    """What to do about a bad file: in the Hugging Face cache the snapshot's file is a link to a blob, and the
    blob is what must go (huggingface_hub links a surviving blob again instead of downloading it)."""
    if path.is_symlink():
        return (
            f"It is Hugging Face's cached copy: delete it with `rm {path.resolve()} {path}` and run again to download it afresh"
        )
    return "Delete it and download it again"


def refuse_lfs_pointer(path: Path, start: bytes) -> None:
    """A clone made without git-lfs holds small text pointers in place of the large files."""
    if start.startswith(LFS_POINTER_START):
        raise CheckpointError(
            f"{path} is a Git LFS pointer ({path.stat().st_size} bytes), not the file itself: run `git lfs pull` in that "
            "clone, or download the file itself"
        )


def damaged(path: Path, kind: str, problem: str) -> CheckpointError:
    return CheckpointError(f"{path}: corrupt or truncated {kind} file ({problem}). {how_to_replace(path)}")


# ---------------------------------------------------------------------------------------------
# safetensors: 8 bytes giving the header's length n, n bytes of JSON {name: {dtype, shape, data_offsets}}
# (and an optional "__metadata__" of strings), then the tensors' raw little-endian bytes, back to back.
# The safetensors library reads it and checks the header in full (`Metadata::validate`): each tensor's dtype,
# shape and offsets, and that the tensors tile the data exactly. Its refusals are put into our one line.


# The library's refusals in the words of our messages, applied in order. Its JSON reader (Rust's serde) says
# "invalid JSON" also of valid JSON in the wrong layout, and names the types it expected in Rust.
LIBRARY_WORDS = [
    (r"^Error while deserializing header: ", ""),
    (r" at line \d+ column \d+$", ""),
    (r"^invalid JSON in header: (?=missing field|invalid type|invalid value|invalid length|unknown variant|duplicate)",
     "its header is not in the safetensors layout: "),
    (r"^invalid JSON in header: ", "its header is not valid JSON: "),
    (r"^invalid offset for tensor `(.*)`$",
     r"tensor '\1' does not begin where the tensor before it ends: a gap, an overlap or reversed offsets"),
    (r"^invalid shape, data type, or offset for tensor$",
     "a tensor's data_offsets do not hold the bytes its shape and dtype need"),
    (r"\bstruct HashMetadata\b", "an object"), (r"\busize\b", "a non-negative integer"), (r"\bsequence\b", "list"),
    (r"\bmap\b", "object"),
]  # fmt: skip


class SafetensorsFile:
    """A .safetensors file, read with the safetensors library (`safe_open`), one tensor at a time.

    The library maps the file, and a tensor it gives is a view of that map. Each read therefore opens the file,
    copies the tensor into memory of its own and closes the map again: resident memory stays the tensors we
    hold, and the header is checked against the file as it is at every read.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            refuse_lfs_pointer(self.path, f.read(64))
        with self.open() as f:
            self._shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
        self.nbytes = self.path.stat().st_size

    def open(self):
        try:
            return safe_open(self.path, framework="pt")
        except SafetensorError as error:
            raise damaged(self.path, "safetensors", self.finding(str(error))) from None

    def finding(self, error: str) -> str:
        """The library's refusal in our words; those about the file's length say by how much."""
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            header_bytes = struct.unpack("<Q", f.read(8))[0] if size >= 8 else 0
            if error.endswith("header too small"):
                return f"truncated: only {size} bytes"
            if error.endswith("invalid header length"):  # the header, as long as its first 8 bytes say, ends past the file
                return f"truncated: its header claims {header_bytes} bytes but the file has {size}"
            if error.endswith("incomplete metadata, file not fully covered"):  # the tensors end before or after the data
                header = json.loads(f.read(header_bytes))  # the library read it: JSON of the right layout
                needed = max((info["data_offsets"][1] for key, info in header.items() if key != "__metadata__"), default=0)
                data = size - 8 - header_bytes
                if needed > data:
                    return f"truncated: the header needs {needed} bytes of data, the file has {data}"
                return f"{data - needed} bytes after the last tensor belong to no tensor"
        for pattern, words in LIBRARY_WORDS:
            error = re.sub(pattern, words, error)
        return error

    def keys(self):
        return self._shapes.keys()

    def __contains__(self, key: str) -> bool:
        return key in self._shapes

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self._shapes)

    def read(self, key: str) -> torch.Tensor:
        with self.open() as f:
            try:
                return f.get_tensor(key).clone()
            except SafetensorError as error:  # a dtype the format defines and this torch lacks (F6_E2M3…)
                dtype = f.get_slice(key).get_dtype()
                problem = f"tensor {key} has dtype {dtype}, which this torch cannot hold ({error})"
                raise CheckpointError(f"{self.path}: {problem}") from None


# ---------------------------------------------------------------------------------------------
# pytorch_model.bin: what torch.save writes, a zip archive holding data.pkl (a pickle of {name: tensor}) and
# each tensor's bytes as a record of its own; before torch 1.6, one pickle stream.

PICKLE_START = b"\x80"  # a pickle's first opcode, PROTO, as torch's legacy format begins
ZIP_START = b"PK\x03\x04"


def code_it_asks_for(error: Exception) -> str | None:
    """The function or class a pickle asked torch's safe loader to call, which it refused; None if the error is
    not such a refusal. (torch explains a refusal in paragraphs, worded differently as the global is a blocked
    module's, "Trying to load unsupported GLOBAL posix.system…", or not allowed by default, "Unsupported global:
    GLOBAL argparse.Namespace…"; the global it names is what matters.)"""
    needed = re.search(r"unsupported global:? (?:GLOBAL )?([\w.]+)", str(error), re.IGNORECASE)
    return needed.group(1) if isinstance(error, pickle.UnpicklingError) and needed else None


def first_sentence(error: Exception) -> str:
    """The finding in torch.load's message: the safe loader gives its advice first and its finding after."""
    text = str(error).split("WeightsUnpickler error:", 1)[-1]
    line = next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)
    return line.split(". ")[0]


def check_zip(path: Path) -> None:
    """torch.save's zip, checked whole before torch reads it: torch checks neither the archive's end nor each
    record's CRC-32, and a record with flipped bits would be read as weights (NaN, or plausible numbers)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()  # reads every record and compares its CRC-32 with the one stored beside it
    except zipfile.BadZipFile as error:
        problem = "a zip archive without its end: truncated?" if "not a zip file" in str(error) else f"its zip archive: {error}"
        raise damaged(path, "pytorch_model.bin", problem) from None
    except (EOFError, OSError) as error:
        raise damaged(path, "pytorch_model.bin", f"its zip archive: {error}") from None
    if bad is not None:
        raise damaged(path, "pytorch_model.bin", f"record {bad} fails its CRC-32 check: its bytes changed after it was written")


class PickleFile:
    """A pytorch_model.bin, read with torch's safe loader, `torch.load(weights_only=True)`: it rebuilds tensors
    and plain containers and refuses every other object, so unpickling runs no code from the file.

    mmap=True maps the file rather than reading it. Each read copies one tensor out of the map, then tells
    the kernel to drop the pages it touched (madvise), so that resident memory stays the tensors we hold,
    as with safetensors; without that, the map's pages would stay resident beside their copies.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            start = f.read(64)
        refuse_lfs_pointer(self.path, start)
        self.mapped = start.startswith(ZIP_START)
        if not self.mapped and not start.startswith(PICKLE_START):
            raise CheckpointError(
                f"{self.path}: not a PyTorch checkpoint (neither a zip archive, torch.save's format, nor a pickle)"
            )
        if self.mapped:
            check_zip(self.path)
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True, mmap=self.mapped)
        except Exception as error:  # torch raises UnpicklingError, RuntimeError, KeyError, EOFError… for bad files
            code = code_it_asks_for(error)
            if code:
                raise CheckpointError(
                    f"{self.path}: it asks to run code ({code}) to rebuild what it holds, where a checkpoint holds only "
                    "tensors; torch's safe loader (weights_only=True) refused it, and nothing ran. Use weights from a "
                    "source you trust, in model.safetensors if it has one"
                ) from None
            raise damaged(self.path, "pytorch_model.bin", f"torch.load: {first_sentence(error)}") from None
        if not isinstance(state, dict):
            raise CheckpointError(f"{self.path}: holds a {type(state).__name__}, not a state dict {{name: tensor}}")
        for key, value in state.items():
            if not isinstance(key, str):
                raise CheckpointError(f"{self.path}: its key {key!r} is not a string; a state dict names its tensors")
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(
                    f"{self.path}: its entry {key!r} is not a tensor ({type(value).__name__} {value!r:.40}); a state "
                    "dict holds only tensors"
                )
        self.tensors = state
        self.nbytes = self.path.stat().st_size

    def keys(self):
        return self.tensors.keys()

    def __contains__(self, key: str) -> bool:
        return key in self.tensors

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {key: tuple(tensor.shape) for key, tensor in self.tensors.items()}

    def read(self, key: str) -> torch.Tensor:
        tensor = self.tensors[key]
        if not self.mapped:  # the legacy format was read whole: the tensor is already in memory of its own
            return tensor
        copy = torch.empty(tensor.shape, dtype=tensor.dtype)
        copy.copy_(tensor)
        release_pages(tensor)
        return copy


# ---------------------------------------------------------------------------------------------
# Sharded checkpoints: NAME.index.json {"metadata": {...}, "weight_map": {tensor: shard file}} beside the shards.


def read_index(path: Path) -> dict[str, str]:
    """The weight map of a sharded checkpoint's index, checked: every tensor maps to a shard file of the
    same directory."""
    index = read_json(path)
    if "weight_map" not in index:
        raise CheckpointError(f"{path}: no weight_map (an index maps each tensor to the shard file holding it)")
    weight_map = index["weight_map"]
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{path}: its weight_map is not an object of tensor names to shard files")
    for key, shard in weight_map.items():
        if not isinstance(shard, str) or Path(shard).name != shard or shard in ("", ".", ".."):
            raise CheckpointError(f"{path}: weight_map gives {key} the shard {shard!r}; expected a file name beside the index")
    return weight_map


def shard_names(path: Path) -> list[str]:
    """The shard files an index names, in order."""
    return sorted(set(read_index(path).values()))


class ShardedCheckpoint:
    """The shards an index names, read as one tensor source: each read goes to the shard holding that tensor,
    so memory holds one tensor at a time, as with a single file."""

    def __init__(self, index: Path, open_shard):
        self.path = Path(index)
        self.weight_map = read_index(self.path)
        names = sorted(set(self.weight_map.values()))
        missing = [name for name in names if not (self.path.parent / name).is_file()]
        if missing:
            raise CheckpointError(
                f"{self.path}: names {len(missing)} shard(s) not in {self.path.parent}: {', '.join(missing)} "
                "(an incomplete download?)"
            )
        self.shards = {name: open_shard(self.path.parent / name) for name in names}
        self.nbytes = sum(shard.nbytes for shard in self.shards.values())
        absent = [f"{key} (in {name})" for key, name in self.weight_map.items() if key not in self.shards[name]]
        if absent:
            raise CheckpointError(
                f"{self.path}: {len(absent)} tensor(s) of its weight_map are not in the shard it names: "
                f"{', '.join(absent[:6])}{' …' if len(absent) > 6 else ''}"
            )

    def keys(self):
        return self.weight_map.keys()

    def __contains__(self, key: str) -> bool:
        return key in self.weight_map

    def shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {name: shard.shapes() for name, shard in self.shards.items()}
        return {key: shapes[name][key] for key, name in self.weight_map.items()}

    def read(self, key: str) -> torch.Tensor:
        return self.shards[self.weight_map[key]].read(key)


# How each of WEIGHT_FILES is opened, in the order open_weights tries them.
READERS = {
    "model.safetensors": SafetensorsFile,
    "model.safetensors.index.json": partial(ShardedCheckpoint, open_shard=SafetensorsFile),
    "pytorch_model.bin": PickleFile,
    "pytorch_model.bin.index.json": partial(ShardedCheckpoint, open_shard=PickleFile),
}
assert tuple(READERS) == WEIGHT_FILES


def open_weights(directory) -> SafetensorsFile | PickleFile | ShardedCheckpoint:
    """The directory's weights as a tensor source, from the first of WEIGHT_FILES it holds."""
    directory = Path(directory)
    for name, open_file in READERS.items():
        if (directory / name).is_file():
            return open_file(directory / name)
    raise CheckpointError(f"{directory}: no weights (expected {', '.join(WEIGHT_FILES[:-1])} or {WEIGHT_FILES[-1]})")


FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def read_float32(source, key: str) -> torch.Tensor:
    """A weight as float32, refusing a tensor stored as anything but a float."""
    tensor = source.read(key)
    if tensor.dtype not in FLOAT_DTYPES:
        raise CheckpointError(f"{source.path}: tensor {key} is {tensor.dtype}; expected float32, float16 or bfloat16")
    return tensor.float()


# ---------------------------------------------------------------------------------------------
# The small files: config.json (the tokenizer's files are read in tokenizer_files.py).


def read_json(path: Path) -> dict:
    """A JSON file whose top level must be an object."""
    path = Path(path)
    raw = path.read_bytes()
    refuse_lfs_pointer(path, raw[:64])
    try:
        data = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: not valid JSON (nested deeper than Python's JSON reader allows)") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: a JSON {type(data).__name__}, not an object")
    return data


REQUIRED = object()


def json_field(data: dict, path: Path, name: str, kind: type, default=REQUIRED, *, minimum: int = 1):
    """data[name], refused in one line naming the file and the field unless it is of kind: int (an integer of
    at least minimum, 1 unless told), float (a finite positive number: every float a config.json gives minigpt
    is an epsilon, a fraction or a base), str, bool, list or dict. A field set to null counts as absent: default
    is returned, and a field without a default is required."""
    value = data.get(name)
    if value is None:
        if default is REQUIRED:
            raise CheckpointError(f"{path}: missing the field '{name}'")
        return default
    if kind is int:
        good = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
        wanted = "a positive integer" if minimum == 1 else f"an integer of at least {minimum}"
    elif kind is float:
        good = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
        wanted = "a positive number"
    else:
        good = isinstance(value, kind)
        wanted = {str: "a string", bool: "true or false", list: "a list", dict: "an object"}.get(kind, kind.__name__)
    if not good:
        raise CheckpointError(f"{path}: {name} is {json.dumps(value)}; expected {wanted}")
    return value


# Where a Hugging Face repository names its special tokens, the first file's word winning. GPT-2's has neither
# (its BOS is <|endoftext|>, id 50256); OPT's names </s> (id 2) as BOS and <pad> (id 1) as padding; Pythia's and
# GPT-Neo's name <|endoftext|> (ids 0 and 50256) as BOS and no padding.
SPECIAL_TOKEN_FILES = ("special_tokens_map.json", "tokenizer_config.json")
