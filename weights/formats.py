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
import mmap
import pickle
import re
import struct
import sys
import zipfile
from functools import partial
from pathlib import Path

import torch

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

# Bits per element of every dtype the safetensors format defines (its Rust crate's `Dtype`), and the torch
# dtype each is read as, where this torch has one.
SAFETENSORS_BITS = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32,
    "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}  # fmt: skip
TORCH_NAMES = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "F8_E5M2": "float8_e5m2", "F8_E4M3": "float8_e4m3fn",
    "F8_E8M0": "float8_e8m0fnu", "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz", "I16": "int16",
    "U16": "uint16", "F16": "float16", "BF16": "bfloat16", "I32": "int32", "U32": "uint32", "F32": "float32",
    "C64": "complex64", "F64": "float64", "I64": "int64", "U64": "uint64",
}  # fmt: skip
SAFETENSORS_DTYPES = {name: getattr(torch, t) for name, t in TORCH_NAMES.items() if hasattr(torch, t)}
MAX_HEADER_BYTES = 100_000_000  # the safetensors library refuses longer headers


def is_count(value) -> bool:
    """A non-negative JSON integer (JSON's true and false are not counts, though Python's bool is an int)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def header_problem(header, data_bytes: int) -> str | None:
    """What is wrong with a parsed safetensors header, by the rules the safetensors library applies when it
    opens a file (`Metadata::validate`), or None. data_bytes: the file's size after the header.

    The header is an object; "__metadata__", if present, maps strings to strings; every other entry has a
    known dtype, a shape of non-negative integers and two integer data_offsets [begin, end) into the data.
    Taken in order of their offsets, the tensors tile the data exactly: each begins where the one before
    ends, holds shape × item size bytes, and the last ends at the end of the file.
    """
    if not isinstance(header, dict):
        return f"its header is a JSON {type(header).__name__}, not an object"
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        return "its __metadata__ is not a map of strings to strings"
    spans = []
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if not isinstance(info, dict):
            return f"tensor {key!r}: its entry is a JSON {type(info).__name__}, not an object"
        missing = [field for field in ("dtype", "shape", "data_offsets") if field not in info]
        if missing:
            return f"tensor {key!r} has no {' and no '.join(missing)}"
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in SAFETENSORS_BITS:
            return f"tensor {key!r} has dtype {dtype!r}, which safetensors does not define"
        if not isinstance(shape, list) or not all(is_count(n) for n in shape):
            return f"tensor {key!r} has shape {json.dumps(shape)}; a shape is a list of non-negative integers"
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(is_count(n) for n in offsets):
            return f"tensor {key!r} has data_offsets {json.dumps(offsets)}; expected two non-negative integers"
        begin, end = offsets
        if end < begin:
            return f"tensor {key!r} has reversed data_offsets {offsets} (end before begin)"
        bits = math.prod(shape) * SAFETENSORS_BITS[dtype]
        if bits % 8 or end - begin != bits // 8:
            needs = bits // 8 if bits % 8 == 0 else bits / 8
            return f"tensor {key!r}: data_offsets {offsets} hold {end - begin} bytes, but shape {shape} of {dtype} needs {needs}"
        spans.append((begin, end, key))
    spans.sort()
    for (_, end, key), (begin, next_end, next_key) in zip(spans, spans[1:]):  # sorted by begin: an overlap is adjacent
        if begin < end:
            return f"tensors {key!r} and {next_key!r} overlap (both hold bytes {begin} to {min(end, next_end)} of the data)"
    position, previous = 0, None
    for begin, end, key in spans:
        if begin > position:
            after = f"after tensor {previous!r}" if previous else "before the first tensor"
            return f"{begin - position} bytes {after} belong to no tensor (tensor {key!r} begins at {begin})"
        position, previous = end, key
    if position > data_bytes:
        return f"truncated: the header needs {position} bytes of data, the file has {data_bytes}"
    if position < data_bytes:
        return f"{data_bytes - position} bytes after the last tensor belong to no tensor"
    return None


class SafetensorsFile:
    """A .safetensors file, its header checked in full on opening, read one tensor at a time with plain reads.

    Reading into fresh tensors, rather than through a memory map, keeps resident memory to the tensors we
    hold: a map's pages stay resident as well.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            start = f.read(8)
            refuse_lfs_pointer(self.path, start + f.read(56))
            if size < 8:
                raise damaged(self.path, "safetensors", f"truncated: only {size} bytes")
            (header_bytes,) = struct.unpack("<Q", start)
            if header_bytes > MAX_HEADER_BYTES:
                raise damaged(self.path, "safetensors", f"its header claims {header_bytes:,} bytes, over the format's limit")
            if 8 + header_bytes > size:
                problem = f"truncated: its header claims {header_bytes} bytes but the file has {size}"
                raise damaged(self.path, "safetensors", problem)
            f.seek(8)
            try:
                header = json.loads(f.read(header_bytes).decode("utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise damaged(self.path, "safetensors", "its header is not valid JSON") from None
        self.data_start = 8 + header_bytes
        problem = header_problem(header, size - self.data_start)
        if problem:
            raise damaged(self.path, "safetensors", problem)
        header.pop("__metadata__", None)
        self.header = header

    def keys(self):
        return self.header.keys()

    def __contains__(self, key: str) -> bool:
        return key in self.header

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {key: tuple(info["shape"]) for key, info in self.header.items()}

    def read(self, key: str) -> torch.Tensor:
        info = self.header[key]
        if info["dtype"] not in SAFETENSORS_DTYPES:
            raise CheckpointError(f"{self.path}: tensor {key} has dtype {info['dtype']}, which this torch cannot hold")
        begin, end = info["data_offsets"]
        raw = torch.empty(end - begin, dtype=torch.uint8)
        with open(self.path, "rb", buffering=0) as f:
            f.seek(self.data_start + begin)
            if f.readinto(raw.numpy()) != end - begin:  # the file shrank since it was opened
                raise damaged(self.path, "safetensors", f"truncated while reading tensor {key}")
        return raw.view(SAFETENSORS_DTYPES[info["dtype"]]).reshape(info["shape"])


# ---------------------------------------------------------------------------------------------
# pytorch_model.bin: what torch.save writes, a zip archive holding data.pkl (a pickle of {name: tensor}) and
# each tensor's bytes as a record of its own; before torch 1.6, one pickle stream.

PICKLE_START = b"\x80"  # a pickle's first opcode, PROTO, as torch's legacy format begins
ZIP_START = b"PK\x03\x04"


def refusal(error: Exception) -> str | None:
    """What torch's safe loader refused to build, in one line, or None if the error is not such a refusal.
    (torch explains a refusal in several paragraphs; the object it names is the line that matters.)"""
    needed = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
    if not isinstance(error, pickle.UnpicklingError) or not needed:
        return None
    return f"it needs {needed.group(1)}, more than tensors, to be built"


def first_sentence(error: Exception) -> str:
    """The finding in torch.load's message: the safe loader gives its advice first and its finding after."""
    text = str(error).split("WeightsUnpickler error:", 1)[-1]
    line = next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)
    return line.split(". ")[0]


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
        if self.mapped and not zipfile.is_zipfile(self.path):
            raise damaged(self.path, "pytorch_model.bin", "a zip archive without its end: truncated?")
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True, mmap=self.mapped)
        except Exception as error:  # torch raises UnpicklingError, RuntimeError, KeyError, EOFError… for bad files
            refused = refusal(error)
            if refused:
                raise CheckpointError(
                    f"{self.path}: {refused}, which torch's safe loader (weights_only=True) refuses; minigpt runs no "
                    "code from a checkpoint"
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


def _madvise():
    if sys.platform not in ("linux", "darwin"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.madvise
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return function


MADVISE = _madvise()
MADV_DONTNEED = 4  # the same number on Linux and macOS


def release_pages(tensor: torch.Tensor) -> None:
    """Drop the resident pages under a tensor's storage in a read-only file mapping. Nothing is lost: the
    mapping is private and never written, so a later access reads the pages from the file again."""
    if MADVISE is None:
        return
    storage = tensor.untyped_storage()
    begin = storage.data_ptr() // mmap.PAGESIZE * mmap.PAGESIZE
    end = storage.data_ptr() + storage.nbytes()
    if end > begin:
        MADVISE(begin, end - begin, MADV_DONTNEED)  # a failure only leaves the pages resident


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
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: a JSON {type(data).__name__}, not an object")
    return data


REQUIRED = object()


def json_field(data: dict, path: Path, name: str, kind: type, default=REQUIRED, *, minimum: int = 1):
    """data[name], refused in one line naming the file and the field unless it is of kind: int (an integer of
    at least minimum, 1 unless told), float (any finite number), str, bool, list or dict. A field set to null
    counts as absent: default is returned, and a field without a default is required."""
    value = data.get(name)
    if value is None:
        if default is REQUIRED:
            raise CheckpointError(f"{path}: missing the field '{name}'")
        return default
    if kind is int:
        good = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
        wanted = "a positive integer" if minimum == 1 else f"an integer of at least {minimum}"
    elif kind is float:
        good = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        wanted = "a number"
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
