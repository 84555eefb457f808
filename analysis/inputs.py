"""The study's inputs: prompts read from a file (one per line, or JSON Lines), sampled while reading, and tokenized."""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import outdir
from minigpt import Config, Tokenizer

DEFAULT_PROMPTS = Path(__file__).parent / "prompts.txt"


@dataclass
class Prompts:
    """The prompts as read: their texts, the line each came from, and how they were chosen."""

    path: Path
    texts: list[str]
    lines: list[int]  # the line number of each text in the file
    available: int  # how many non-empty prompts the file holds
    seed: int | None = None  # the seed of the sample --max-prompts took, if it took one


JSON_LINES = (".jsonl", ".ndjson")


def read_prompts(path: Path, max_prompts: int | None = None, seed: int = 0) -> Prompts:
    """The prompts in a UTF-8 file: one per non-empty line, or, for .jsonl/.ndjson, the "text" of each line's
    JSON object. With max_prompts, a uniform sample of that many (reservoir sampling, seeded) taken while
    reading, so a corpus of any size is never held whole; the sample keeps the file's order."""
    rng = np.random.default_rng(seed)
    kept: list[tuple[int, str]] = []
    available = 0
    for number, text in _records(path):
        available += 1
        if max_prompts is None or len(kept) < max_prompts:
            kept.append((number, text))
        elif (slot := int(rng.integers(0, available))) < max_prompts:
            kept[slot] = (number, text)
    if not kept:
        what = "object has an empty text" if path.suffix in JSON_LINES else "line is empty"
        raise outdir.UsageError(f"prompts file {path} has no prompts: every {what} (write one prompt per line)")
    kept.sort()
    sampled = max_prompts is not None and available > max_prompts
    return Prompts(path, [text for _, text in kept], [number for number, _ in kept], available, seed if sampled else None)


def check_readable(path: Path) -> None:
    """Raise the one-line error read_prompts would give for a file that cannot be opened, reading nothing."""
    with _opened(path):
        pass


@contextmanager
def _opened(path: Path) -> Iterator:
    """The file, open for reading in binary; a missing file, a folder or a name the system refuses is one line."""
    try:
        with open(path, "rb") as f:
            yield f
    except FileNotFoundError:
        raise outdir.UsageError(f"prompts file {path} does not exist") from None
    except IsADirectoryError:
        raise outdir.UsageError(f"prompts file {path} is a folder; give a file with one prompt per line") from None
    except OSError as error:  # a name longer than the file system allows (Errno 36), no permission to read
        raise outdir.UsageError(f"prompts file {path}: {error.strerror or error}") from None


def _records(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, prompt) for each non-empty prompt of the file, read a line at a time."""
    json_lines = path.suffix in JSON_LINES
    offset = 0
    with _opened(path) as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise outdir.UsageError(
                    f"prompts file {path} is not UTF-8: byte 0x{raw[error.start]:02x} at offset {offset + error.start} "
                    f"(line {number})"
                ) from None
            offset += len(raw)
            if not line.strip():
                continue
            text = _json_text(path, number, line) if json_lines else line.strip()
            if text.strip():
                yield number, text


def _json_text(path: Path, number: int, line: str) -> str:
    """The "text" of one JSON Lines record, or an outdir.UsageError naming the line and what is wrong with it."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise outdir.UsageError(f"prompts file {path}, line {number}: not JSON ({error.msg} at column {error.colno})") from None
    except RecursionError:
        raise outdir.UsageError(f"prompts file {path}, line {number}: JSON nested too deeply to read") from None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        found = 'an object without a string "text"' if isinstance(record, dict) else f"a {type(record).__name__}"
        raise outdir.UsageError(
            f'prompts file {path}, line {number}: {found}; each line must be an object like {{"text": "..."}}'
        )
    text = record["text"]
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:  # JSON's \ud800 escapes may name half of a UTF-16 pair, which no text holds
        raise outdir.UsageError(
            f'prompts file {path}, line {number}: the "text" holds a lone surrogate, U+{ord(text[error.start]):04X} at '
            f"character {error.start + 1}, which is not a character (a UTF-16 pair cut in half?)"
        ) from None
    return text


def tokenize(prompts: Prompts, tokenizer: Tokenizer, cfg: Config, model_name: str, truncate: bool) -> tuple[list, int]:
    """Each prompt as token ids with BOS first (compact int32 arrays), and how many were cut to the model's
    context. Without truncate, a prompt longer than the context is an error naming it. With truncate, only
    the first n_ctx tokens of a prompt are found (encode's max_tokens: the same ids as tokenizing it whole
    and cutting), one more telling whether it was cut, so a 50 MB line costs what its first page costs."""
    tokenized, truncated = [], 0
    for i, text in enumerate(prompts.texts):
        tokens = np.array([tokenizer.bos, *tokenizer.encode(text, cfg.n_ctx if truncate else None)], dtype=np.int32)
        if len(tokens) > cfg.n_ctx:
            if not truncate:
                raise outdir.UsageError(
                    f"prompt {i + 1} (line {prompts.lines[i]} of {prompts.path}: {tokenizer.decode(tokens[1:8])!r}…) has "
                    f"{len(tokens)} tokens with BOS; {model_name} accepts at most {cfg.n_ctx} (--truncate cuts longer ones)"
                )
            tokens, truncated = tokens[: cfg.n_ctx], truncated + 1
        tokenized.append(tokens)
    return tokenized, truncated
