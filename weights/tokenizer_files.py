"""The tokenizer's files beside the weights, read and checked: GPT-2's vocab.json and merges.txt, or a
tokenizer.json. Each problem is one CheckpointError line naming the file and the field or line (the parts
of a tokenizer.json that minigpt does not implement are refused by `minigpt.tokenizer_json`)."""

import json
from pathlib import Path

from minigpt import Tokenizer, tokenizer_json
from minigpt.tokenizer import END_OF_TEXT
from minigpt.tokenizer_json import MAX_ID

from .formats import SPECIAL_TOKEN_FILES, CheckpointError, json_field, read_json, refuse_lfs_pointer


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


def read_tokenizer_json(path: Path, data=None) -> dict:
    """tokenizer.json (its JSON `data`, where it has been read already), checked only for the outer shape a
    byte-level BPE's has: an object whose "model" is an object of type "BPE" with a vocab object and a merges list."""
    data = read_json(path) if data is None else data
    model = data.get("model")
    if not isinstance(model, dict):
        raise CheckpointError(f'{path}: no "model" object (a tokenizers file describes its model there)')
    if model.get("type") != "BPE":
        raise CheckpointError(f'{path}: its model is of type {json.dumps(model.get("type"))}; expected "BPE"')
    if not isinstance(model.get("vocab"), dict) or not isinstance(model.get("merges"), list):
        raise CheckpointError(f"{path}: its BPE model needs a vocab object and a merges list")
    return data


def read_tokenizer(directory: Path) -> Tokenizer:
    """GPT-2's vocab.json and merges.txt, or a tokenizer.json (`tokenizer_json_to_read` says which); with the BOS and
    padding tokens the checkpoint names (`special_tokens`). A vocabulary with ids past the embedding's rows
    (config.json's vocab_size) is refused here, before any text is tokenized."""
    files = {name: directory / name for name in ("vocab.json", "merges.txt")}
    data = tokenizer_json_to_read(directory)
    if data is not None:
        path = directory / "tokenizer.json"
        try:
            parts = tokenizer_json.read(read_tokenizer_json(path, data))
        except CheckpointError:
            raise
        except ValueError as error:  # what the tokenizer does not implement, or a malformed field, in one line
            raise CheckpointError(f"{path}: {error}") from None
        texts = {i: token for token, i in parts["vocab"].items()} | {t.id: t.content for t in parts["added_tokens"]}
        check_fits_embedding(directory, texts, path)
        bos, pad = special_tokens(directory, texts, path, parts["prepended"])
        return tokenizer_json.JsonTokenizer(**parts, bos_token=bos, pad_token=pad)
    for name, path in files.items():
        if not path.is_file():
            raise CheckpointError(f"{directory}: no {name} (the tokenizer needs vocab.json and merges.txt, or a tokenizer.json)")
    vocab = read_vocab(files["vocab.json"])
    texts = {i: token for token, i in vocab.items()}
    check_fits_embedding(directory, texts, files["vocab.json"])
    bos, pad = special_tokens(directory, texts, files["vocab.json"])
    return Tokenizer(vocab, read_merges(files["merges.txt"], vocab), bos_token=bos, pad_token=pad)


def tokenizer_json_to_read(directory: Path):
    """The directory's tokenizer.json, parsed once, where it is the tokenizer rather than vocab.json and merges.txt;
    None where those two are.

    tokenizer.json is what Hugging Face's (fast) tokenizers run, so it is read wherever it is, except beside
    vocab.json and merges.txt when it only says what those two files already do: no normalizer, and GPT-2's
    ByteLevel pre-tokenizer with its regex (openai-community/gpt2's own tokenizer.json). Qwen's repositories carry
    all three files, and their tokenizer.json's normalizer (NFC) and Split regex (digits one at a time) are not
    GPT-2's: read through vocab.json, those models would get other ids, silently."""
    path = directory / "tokenizer.json"
    if not path.is_file():
        return None
    data = read_json(path)  # an object, or refused in one line
    if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        pre = data.get("pre_tokenizer")
        gpt2_regex = isinstance(pre, dict) and pre.get("type") == "ByteLevel" and pre.get("use_regex", True) is True
        if data.get("normalizer") is None and gpt2_regex:
            return None
    return data


def check_fits_embedding(directory: Path, texts: dict[int, str], vocabulary: Path) -> None:
    """Every token id must be a row of W_E [d_vocab, d_model]: config.json's vocab_size may be larger (Pythia
    pads its embedding to a multiple of 128, Qwen to 151,936 for 151,665 tokens), never smaller. Only that
    field is read, so that a tokenizer is read whatever the model's family."""
    config = directory / "config.json"
    if not config.is_file() or not texts:
        return
    d_vocab, largest = json_field(read_json(config), config, "vocab_size", int), max(texts)
    if largest >= d_vocab:
        raise CheckpointError(
            f"{vocabulary}: token {texts[largest]!r} has id {largest}, past the model's embedding of {d_vocab} rows "
            f"(config.json's vocab_size {d_vocab}); the tokenizer's files are not this model's"
        )


def special_tokens(
    directory: Path, texts: dict[int, str], vocabulary: Path, prepended: str | None = None
) -> tuple[str, str | None]:
    """The texts of the BOS and padding tokens (None: padding is BOS), checked against the vocabulary's
    texts {id: text}. Each is the first that names it of: the tokenizer's files (SPECIAL_TOKEN_FILES, the
    first file's word winning, as in transformers; a token is a string or {"content": string}); config.json's
    bos_token_id and pad_token_id (a cached snapshot of an older download may lack the tokenizer's files, and
    OPT's config says 2 and 1 as they do); else, as BOS, the token a tokenizer.json's post-processor puts
    before each text (`prepended`, Llama 3's <|begin_of_text|>), or GPT-2's <|endoftext|>.

    Qwen 2.5 and 3 name no BOS in their tokenizer files (tokenizer_config.json's bos_token is null, and
    add_bos_token false); their config.json's bos_token_id 151643 names <|endoftext|>, which is minigpt's BOS
    for them, as it is GPT-2's."""
    named: dict[str, tuple[str, str]] = {}  # {role: (token, where it was named)}
    for name in reversed(SPECIAL_TOKEN_FILES):
        path = directory / name
        if path.is_file():
            given = read_json(path)
            for role in ("bos_token", "pad_token"):
                token = given.get(role)
                if isinstance(token, dict):
                    token = token.get("content")
                if token is not None and not isinstance(token, str):
                    raise CheckpointError(f'{path}: {role} is {json.dumps(token)}; expected a string or {{"content": string}}')
                if token is not None:
                    named[role] = (token, f"{name} names it")
    config = directory / "config.json"
    hf = read_json(config) if config.is_file() else {}
    for role in ("bos_token", "pad_token"):
        token_id = hf.get(f"{role}_id")
        if role not in named and isinstance(token_id, int) and not isinstance(token_id, bool):
            if token_id not in texts:
                raise CheckpointError(f"{config}: {role}_id {token_id} is not an id of {vocabulary.name}'s {len(texts)} tokens")
            named[role] = (texts[token_id], f"config.json's {role}_id {token_id}")
    if prepended is not None:
        named.setdefault("bos_token", (prepended, "the token tokenizer.json's post_processor puts first"))
    named.setdefault("bos_token", (END_OF_TEXT, "GPT-2's end-of-text token, the default"))
    known = set(texts.values())
    for role, (token, why) in named.items():
        if token not in known:
            what = "BOS" if role == "bos_token" else "padding"
            raise CheckpointError(f"{vocabulary}: no {token} (the {what} token: {why})")
    return named["bos_token"][0], named.get("pad_token", (None,))[0]
