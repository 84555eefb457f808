"""The tokenizer's files beside the weights, read and checked: GPT-2's vocab.json and merges.txt, or a
tokenizer.json. Each problem is one CheckpointError line naming the file and the field or line (the parts
of a tokenizer.json that minigpt does not implement are refused by `minigpt.tokenizer_json`)."""

import json
from pathlib import Path

from minigpt.tokenizer_json import MAX_ID

from .formats import CheckpointError, read_json, refuse_lfs_pointer


def read_vocab(path: Path) -> dict[str, int]:
    """vocab.json: an object of token strings to ids, integers from 0 to MAX_ID."""
    vocab = read_json(path)
    for token, i in vocab.items():
        if not isinstance(i, int) or isinstance(i, bool) or i < 0:
            raise CheckpointError(f"{path}: the token {token!r} has the id {json.dumps(i)}; ids are non-negative integers")
        if i > MAX_ID:
            raise CheckpointError(f"{path}: the token {token!r} has the id {i}, past any vocabulary (ids are at most {MAX_ID})")
    return vocab


def read_merges(path: Path, vocab: dict[str, int]) -> list[tuple[str, str]]:
    """merges.txt: an optional "#version" line, then one merge per line, two symbols separated by a space.
    Both symbols and their merge must be in vocab.json, as `tokenizers` requires: a merge producing a symbol
    without an id would fail on the first text that contains it."""
    path = Path(path)
    raw = path.read_bytes()
    refuse_lfs_pointer(path, raw[:64])
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise CheckpointError(f"{path}: not UTF-8 text ({error})") from None
    merges = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or (number == 1 and line.startswith("#version")):
            continue
        pair = line.split()
        if len(pair) != 2:
            raise CheckpointError(f"{path}: line {number} is not a pair of symbols: {line[:80]!r}")
        missing = next((symbol for symbol in (*pair, "".join(pair)) if symbol not in vocab), None)
        if missing is not None:
            raise CheckpointError(f"{path}: line {number} ({line[:80]!r}) needs the symbol {missing!r}, which vocab.json lacks")
        merges.append((pair[0], pair[1]))
    return merges


def read_tokenizer_json(path: Path) -> dict:
    """tokenizer.json, checked only for the outer shape a byte-level BPE's has: an object whose "model" is an
    object of type "BPE" with a vocab object and a merges list."""
    data = read_json(path)
    model = data.get("model")
    if not isinstance(model, dict):
        raise CheckpointError(f'{path}: no "model" object (a tokenizers file describes its model there)')
    if model.get("type") != "BPE":
        raise CheckpointError(f'{path}: its model is of type {json.dumps(model.get("type"))}; expected "BPE"')
    if not isinstance(model.get("vocab"), dict) or not isinstance(model.get("merges"), list):
        raise CheckpointError(f"{path}: its BPE model needs a vocab object and a merges list")
    return data
