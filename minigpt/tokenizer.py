"""Byte-level BPE: GPT-2's, as in OpenAI's encoder.py, and a tokenizer.json's (Pythia's, GPT-NeoX's) read
with the same code. Four stages, for every piece of text:

1. The text is split into word-like pieces by a regex (PATTERN, below).
2. Each piece's UTF-8 bytes are written as printable characters, one per byte (`bytes_to_unicode`).
3. Inside each piece, the adjacent pair of symbols with the lowest merge rank is merged, again and
   again, until no pair is a listed merge (`merge_steps`).
4. Each resulting symbol is looked up in the vocabulary.

A tokenizer.json can add a stage before these, in the order the `tokenizers` library runs it
(`split_added`): 0. its added tokens (Pythia's "<|endoftext|>", and its runs of 2 to 24 spaces) are
found in the text and given their ids directly, and the text between them is normalized (Pythia:
Unicode NFC) before stage 1. It can also put a space before each piece (add_prefix_space), or split by
a regex of its own first (a Split pre-tokenizer).

`python -m minigpt.tokenizer "some text"` prints every stage for that text (`--tokenizer PATH` for another).

The tokenizer is built from files' contents and reads no file itself (`weights` reads them from disk):
GPT-2's vocab.json, {symbol: id}, and merges.txt, one "left right" pair per line in rank order
(`from_strings`), or a tokenizer.json's parsed contents (`from_tokenizer_json`). Only the command, at
the end of this file, reads files: the bundled model's, found by path (minigpt never imports weights),
or the one it is given.
"""

import argparse
import json
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import regex
import torch

# GPT-2's pre-tokenizer. The regex tries its alternatives in this order at each point of the text:
ALTERNATIVES = {
    # English contractions, lower case only (as released: "It'S" splits differently from "It's").
    "contraction": r"'s|'t|'re|'ve|'m|'ll|'d",
    # A run of letters, of digits, or of other symbols, each with at most one leading space: " world",
    # " 2024", " !!". The space belongs to the word after it, which is why most tokens start with one.
    "letters": r" ?\p{L}+",
    "digits": r" ?\p{N}+",
    "symbols": r" ?[^\s\p{L}\p{N}]+",
    # A run of whitespace that is not followed by a non-space: at the end of the text, or, by
    # backtracking, a run minus its last character, which is left for the next piece. If that character
    # is a space, a word takes it (" world"); anything else stands alone: "a\n\nb" → a, \n, \n, b.
    "whitespace_before_next": r"\s+(?!\S)",
    # Any other whitespace: a single character left over by the alternative above.
    "whitespace": r"\s+",
}
PATTERN = regex.compile("|".join(ALTERNATIVES.values()))
# The same regex with each alternative a named group, so that `explain` can say which one matched.
NAMED = regex.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in ALTERNATIVES.items()))

END_OF_TEXT = "<|endoftext|>"

# A pre-tokenizer is a sequence of steps, each turning a list of pieces into a longer one: a regex (each
# piece is cut into its matches and the text between them), GPT2_REGEX (the same with PATTERN), or
# PREFIX_SPACE (a space is put before each piece that does not start with one). GPT-2's is its regex alone.
GPT2_REGEX, PREFIX_SPACE = "GPT-2's regex", "prefix space"
GPT2_PRE_TOKENIZER = (GPT2_REGEX,)

NORMALIZERS = ("NFC", "NFD", "NFKC", "NFKD")  # Unicode normal forms, as unicodedata computes them


def bytes_to_unicode() -> dict[int, str]:
    """A reversible map from the 256 byte values to printable characters.

    BPE works on strings, and vocab.json must not hold control characters or spaces, so printable
    Latin-1 bytes stand for themselves and the other 68 bytes are moved to code points 256 and up:
    a space (byte 32) becomes 'Ġ' (U+0120), a newline 'Ċ'.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + shifted)
            shifted += 1
    return chars


def split_isolated(pattern: regex.Pattern, text: str) -> list[str]:
    """text cut into pattern's matches and the stretches between them, in order (tokenizers' Split with
    behavior "Isolated"). GPT-2's regex matches everything, so its matches alone are the answer."""
    if not pattern.groups:
        matches = pattern.findall(text)
        if sum(map(len, matches)) == len(text):  # no gaps between the matches: the fast form
            return matches
    pieces, end = [], 0
    for match in pattern.finditer(text):
        start, stop = match.span()
        pieces += [text[end:start]] if start > end else []
        pieces += [match.group()] if stop > start else []
        end = stop
    return pieces + ([text[end:]] if end < len(text) else [])


class AddedToken(NamedTuple):
    """A tokenizer.json added token: found in the text before BPE, and given its id directly."""

    content: str
    id: int
    single_word: bool = False  # matches only where no word character (\w) touches it on either side
    lstrip: bool = False  # takes the whitespace before it
    rstrip: bool = False  # takes the whitespace after it
    normalized: bool = True  # found in the normalized text; False: in the raw text, before normalizing
    special: bool = False  # encodes the same either way; tokenizers' decode can skip special tokens


class Tokenizer:
    def __init__(
        self,
        vocab: dict[str, int],
        merges: list[tuple[str, str]],
        *,
        added_tokens: tuple[AddedToken, ...] = (),
        normalizer: tuple[str, ...] = (),
        pre_tokenizer: tuple = GPT2_PRE_TOKENIZER,
        bos_token: str | None = END_OF_TEXT,
        pad_token: str | None = None,
    ):
        self.encoder = vocab
        self.decoder = {i: s for s, i in vocab.items()}
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.byte_to_char = bytes_to_unicode()
        self.char_to_byte = {c: b for b, c in self.byte_to_char.items()}
        self.byte_table = str.maketrans({chr(b): c for b, c in self.byte_to_char.items()})
        self.normalizer = normalizer
        self.pre_tokenizer = pre_tokenizer
        self.added_tokens = added_tokens
        for token in added_tokens:
            self.decoder.setdefault(token.id, token.content)
        # The added tokens to find in the raw text, and those to find after normalizing, by the text matched.
        self.raw_added = {t.content: t for t in added_tokens if not t.normalized}
        self.normalized_added = {self.normalize(t.content): t for t in added_tokens if t.normalized}
        self.raw_pattern, self.normalized_pattern = map(longest_first, (self.raw_added, self.normalized_added))
        # GPT-2's only special token, used as BOS and padding; Pythia's is the same text, id 0.
        self.eot = self.id_of(END_OF_TEXT) if self.has(END_OF_TEXT) else None
        self.bos = None if bos_token is None else self.id_of(bos_token)  # None: to_tokens cannot prepend one
        self.pad = self.bos if pad_token is None else self.id_of(pad_token)
        self.cache: dict[str, list[str]] = {}

    def has(self, token: str) -> bool:
        """Whether a token's text is an added token's or the vocabulary's."""
        return token in self.encoder or token in self.raw_added or self.normalize(token) in self.normalized_added

    def id_of(self, token: str) -> int:
        """The id of a token's text: an added token's, or the vocabulary's."""
        if not self.has(token):
            raise ValueError(f"{token!r} is neither an added token nor in the vocabulary of {len(self.encoder)} symbols")
        found = self.raw_added.get(token) or self.normalized_added.get(self.normalize(token))
        return found.id if found else self.encoder[token]

    @classmethod
    def from_strings(cls, vocab_json: dict[str, int], merges_txt: str) -> "Tokenizer":
        """Build from vocab.json's parsed contents and merges.txt's text (first line "#version: ...")."""
        lines = merges_txt.splitlines()
        if lines and lines[0].startswith("#version"):
            lines = lines[1:]
        merges = []
        for line in lines:
            if line.strip():
                left, right = line.split()
                merges.append((left, right))
        return cls(vocab_json, merges)

    @classmethod
    def from_tokenizer_json(cls, obj: dict, bos_token: str | None = END_OF_TEXT, pad_token: str | None = None) -> "Tokenizer":
        """Build from a tokenizer.json's parsed contents, as the `tokenizers` library writes it: a BPE model,
        its added tokens, a Unicode normalizer, a byte-level pre-tokenizer. Anything else that would change
        the ids or the decoded text is refused in one line naming the field and its value.
        bos_token and pad_token (None: the same as BOS) name the tokens `to_tokens` uses; they are not in
        tokenizer.json but in special_tokens_map.json, and Pythia's are both "<|endoftext|>", id 0."""
        for field in ("truncation", "padding"):
            if obj.get(field) is not None:
                refuse(field, obj[field], "minigpt's encode neither truncates nor pads")
        model = obj.get("model") or {}
        vocab, merges = read_bpe(model)
        normalizer = read_normalizer(obj.get("normalizer"), "normalizer")
        pre_tokenizer = read_pre_tokenizer(obj.get("pre_tokenizer"))
        post = obj.get("post_processor")
        if post is not None and post.get("type") != "ByteLevel":  # a ByteLevel post-processor moves offsets only
            refuse("post_processor", post, "minigpt adds no tokens after encoding; it reads null or ByteLevel")
        decoder = obj.get("decoder")
        if decoder is None or decoder.get("type") != "ByteLevel":
            refuse("decoder", decoder, "minigpt decodes byte-level BPE only (ByteLevel)")
        added = read_added_tokens(obj.get("added_tokens") or [], vocab)
        return cls(
            vocab,
            merges,
            added_tokens=added,
            normalizer=normalizer,
            pre_tokenizer=pre_tokenizer,
            bos_token=bos_token,
            pad_token=pad_token,
        )

    def normalize(self, text: str) -> str:
        for form in self.normalizer:
            text = unicodedata.normalize(form, text)
        return text

    def split_added(self, text: str) -> list[tuple[str, int | None]]:
        """Stage 0: text cut around its added tokens, as (an added token's text, its id) or (text, None) to
        pass on to BPE. As tokenizers does it: tokens marked normalized=False are found in the raw text first,
        then each stretch between them is normalized and the other added tokens are found in it."""
        segments = []
        for segment, added_id in find_added(text, self.raw_pattern, self.raw_added):
            if added_id is None:
                segments += find_added(self.normalize(segment), self.normalized_pattern, self.normalized_added)
            else:
                segments.append((segment, added_id))
        return [(segment, added_id) for segment, added_id in segments if segment]

    def pre_tokenize(self, text: str, steps: tuple | None = None) -> list[str]:
        """Stage 1: the pieces BPE works on, each step of the pre-tokenizer applied to every piece in turn."""
        pieces = [text]
        for step in self.pre_tokenizer if steps is None else steps:
            if step == PREFIX_SPACE:
                pieces = [piece if piece.startswith(" ") else " " + piece for piece in pieces]
            else:
                pattern = PATTERN if step == GPT2_REGEX else step
                pieces = [part for piece in pieces for part in split_isolated(pattern, piece)]
        return pieces

    def merge_steps(self, piece: str) -> Iterator[tuple[list[str], tuple[str, str] | None]]:
        """Byte-pair encoding of one piece, step by step: yield (symbols, the pair just merged), starting
        from single characters (pair None) and merging the lowest-ranked adjacent pair each step."""
        symbols = list(piece)
        yield symbols, None
        while len(symbols) > 1:
            pairs = set(zip(symbols, symbols[1:]))
            best = min(pairs, key=lambda pair: self.ranks.get(pair, float("inf")))
            if best not in self.ranks:
                return  # no adjacent pair is a listed merge: done
            merged, i = [], 0
            while i < len(symbols):  # merge every occurrence of the best pair, left to right
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
            yield symbols, best

    def bpe(self, piece: str) -> list[str]:
        """The vocabulary symbols of one piece: the last step of `merge_steps` (remembered per piece)."""
        if piece not in self.cache:
            *_, (self.cache[piece], _) = self.merge_steps(piece)
        return self.cache[piece]

    def encode(self, text: str) -> list[int]:
        """Token ids for text. Adds no BOS. GPT-2's reads "<|endoftext|>" in text as ordinary characters; a
        tokenizer.json's reads its added tokens (Pythia's "<|endoftext|>" among them) as those tokens."""
        ids = []
        for segment, added_id in self.split_added(text):
            if added_id is not None:
                ids.append(added_id)
                continue
            for piece in self.pre_tokenize(segment):
                # Stage 2's fast form: Latin-1 reads each byte as the character of its number, and translate
                # replaces that by bytes_to_unicode's. The same as "".join(byte_to_char[b] for b in bytes), as in `explain`.
                chars = piece.encode("utf-8").decode("latin-1").translate(self.byte_table)
                try:
                    ids.extend(self.encoder[symbol] for symbol in self.bpe(chars))
                except KeyError as missing:  # tokenizers would drop the symbol silently: say so instead
                    raise ValueError(
                        f"symbol {missing} of {piece!r} is not in the vocabulary, and there is no unk token"
                    ) from None
        return ids

    def decode(self, ids) -> str:
        """Text for token ids; byte sequences that are not valid UTF-8 become U+FFFD, as in OpenAI's code.
        A symbol's characters stand for bytes (`bytes_to_unicode`); an added token written in other
        characters (Pythia's runs of spaces) stands for its own text, as in tokenizers' ByteLevel decoder."""
        try:
            symbols = [self.decoder[int(i)] for i in ids]
        except KeyError as missing:
            raise ValueError(f"token id {missing} is not in the vocabulary of {len(self.decoder)} tokens") from None
        return b"".join(map(self.symbol_bytes, symbols)).decode("utf-8", errors="replace")

    def symbol_bytes(self, symbol: str) -> bytes:
        try:
            return bytes(self.char_to_byte[c] for c in symbol)
        except KeyError:
            return symbol.encode("utf-8")

    # TransformerLens's names, for its users' notebooks: `model.to_tokens` and `model.to_string`.
    def to_tokens(self, text: str | list[str], prepend_bos: bool = True) -> torch.Tensor:
        """Token ids [batch, pos] as a LongTensor, BOS first unless prepend_bos=False; one text gives [1, pos].
        Several texts are padded on the right with `pad` to the longest, as TransformerLens does by default:
        under the causal mask no real token sees the padding after it, so each row's real positions are
        computed exactly as for that text alone. (Left padding would move every token of a shorter text to
        later positions, and GPT-2's learned positional embeddings with them.)"""
        texts = [text] if isinstance(text, str) else list(text)
        if not texts:
            raise ValueError("to_tokens needs a text or a non-empty list of texts")
        if prepend_bos and self.bos is None:
            raise ValueError("this tokenizer has no BOS token (built with bos_token=None): pass prepend_bos=False")
        rows = [[self.bos] * prepend_bos + self.encode(t) for t in texts]
        width = max(map(len, rows))
        if self.pad is None and any(len(row) < width for row in rows):
            raise ValueError("this tokenizer has no padding token (bos_token and pad_token None): pass texts one at a time")
        return torch.tensor([row + [self.pad] * (width - len(row)) for row in rows], dtype=torch.long)

    def to_string(self, tokens) -> str | list[str]:
        """`decode`, also for TransformerLens's shapes: ids [pos] give a string, [batch, pos] one per row.
        BOS and padding are decoded like any token ("<|endoftext|>"), as TransformerLens does."""
        if isinstance(tokens, torch.Tensor):
            tokens = tokens.tolist()
        if tokens and isinstance(tokens[0], list):
            return [self.decode(row) for row in tokens]
        return self.decode(tokens)


def longest_first(tokens: dict[str, AddedToken]) -> regex.Pattern | None:
    """A regex finding these texts leftmost first and, of those starting at one place, the longest (as
    tokenizers' Aho-Corasick automaton does): Pythia's run of 5 spaces is one token, not 2 + 2 + 1."""
    if not tokens:
        return None
    return regex.compile("|".join(regex.escape(text) for text in sorted(tokens, key=len, reverse=True)))


WORD_CHARACTER, SPACES, SPACES_TO_THE_END = regex.compile(r"\w"), regex.compile(r"\s*"), regex.compile(r"\s*\Z")


def find_added(text: str, pattern: regex.Pattern | None, tokens: dict[str, AddedToken]) -> list[tuple[str, int | None]]:
    """text cut into (an added token's text, its id) and (the text between them, None), as tokenizers'
    AddedVocabulary.find_matches does, with its single_word, lstrip and rstrip rules."""
    if pattern is None:
        return [(text, None)]
    segments, end = [], 0
    for match in pattern.finditer(text):
        token = tokens[match.group()]
        start, stop = match.span()
        if token.single_word and ((start > 0 and WORD_CHARACTER.match(text, start - 1)) or WORD_CHARACTER.match(text, stop)):
            continue  # part of a longer word
        if token.lstrip:  # back to the start of the whitespace before it, but not into the previous token
            start = SPACES_TO_THE_END.search(text, end, start).start() if start > end else end
        if token.rstrip:
            stop = SPACES.match(text, stop).end()
        # A token starting inside the whitespace that the one before took (rstrip) is kept, its text read
        # twice, as tokenizers does: "sing  x" with "ing" (rstrip) and "  " gives s, "ing  ", "  ", x.
        segments += [(text[end:start], None)] if start > end else []
        segments.append((text[start:stop], token.id))
        end = stop
    return segments + ([(text[end:], None)] if end < len(text) else [])


# --- Reading a tokenizer.json: each part is read here or refused, in one line naming it -------------


def refuse(field: str, value, why: str):
    shown = json.dumps(value, ensure_ascii=False)
    raise ValueError(f"tokenizer.json: {field} {shown[:120] + ' …' if len(shown) > 120 else shown} is not implemented ({why})")


def read_bpe(model: dict) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The BPE model's vocabulary and merges, the merges written either "left right" or [left, right]."""
    if model.get("type", "BPE") != "BPE":
        refuse("model.type", model.get("type"), "minigpt reads byte-level BPE only")
    accepted = {"dropout": (None, 0, 0.0), "unk_token": (None,), "continuing_subword_prefix": (None, ""),
                "end_of_word_suffix": (None, ""), "byte_fallback": (None, False), "ignore_merges": (None, False)}  # fmt: skip
    for field, values in accepted.items():
        if model.get(field) not in values:
            refuse(f"model.{field}", model[field], f"minigpt's BPE reads only {' or '.join(map(json.dumps, values))}")
    vocab, merges = model.get("vocab"), []
    if not isinstance(vocab, dict) or not isinstance(model.get("merges"), list):
        raise ValueError("tokenizer.json: model has no vocab {symbol: id} and merges list")
    for rank, merge in enumerate(model["merges"]):
        pair = tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge)
        if len(pair) != 2 or any(symbol not in vocab for symbol in (*pair, "".join(pair))):
            raise ValueError(f"tokenizer.json: model.merges[{rank}] {merge!r} is not two symbols whose merge is a symbol")
        merges.append(pair)
    return vocab, merges


def read_normalizer(normalizer: dict | None, field: str) -> tuple[str, ...]:
    """A Unicode normal form, or a Sequence of them, or none."""
    if normalizer is None:
        return ()
    if normalizer.get("type") in NORMALIZERS:
        return (normalizer["type"],)
    if normalizer.get("type") == "Sequence":
        return tuple(form for i, n in enumerate(normalizer["normalizers"]) for form in read_normalizer(n, f"{field}[{i}]"))
    refuse(field, normalizer, f"minigpt reads null, {', '.join(NORMALIZERS)} or a Sequence of them")


def read_pre_tokenizer(pre: dict | None) -> tuple:
    """ByteLevel (GPT-2's regex unless use_regex is false, a space first if add_prefix_space), optionally
    after Split steps (a regex, behavior Isolated) in a Sequence: the steps of `Tokenizer.pre_tokenize`."""
    parts = pre.get("pretokenizers", []) if pre and pre.get("type") == "Sequence" else [pre]
    if not parts or not parts[-1] or parts[-1].get("type") != "ByteLevel":
        refuse("pre_tokenizer", pre, "minigpt reads ByteLevel, or a Sequence of Split steps ending in ByteLevel")
    steps = []
    for i, part in enumerate(parts[:-1]):
        field = f"pre_tokenizer.pretokenizers[{i}]"
        if part.get("type") != "Split" or part.get("behavior") != "Isolated" or part.get("invert", False):
            refuse(field, part, "minigpt reads Split with behavior Isolated and invert false before ByteLevel")
        pattern = part["pattern"]
        steps.append(regex.compile(pattern["Regex"] if "Regex" in pattern else regex.escape(pattern["String"])))
    byte_level = parts[-1]
    # tokenizers' defaults when a field is absent: add_prefix_space true, use_regex true. (trim_offsets moves
    # the offsets of the tokens only, which minigpt does not report.)
    if byte_level.get("add_prefix_space", True):
        steps.append(PREFIX_SPACE)
    if byte_level.get("use_regex", True):
        steps.append(GPT2_REGEX)
    return tuple(steps)


def read_added_tokens(entries: list[dict], vocab: dict[str, int]) -> tuple[AddedToken, ...]:
    """The added tokens, with the ids tokenizers gives them: the vocabulary's for a symbol in it, otherwise
    the next after the vocabulary, in the order listed. A file whose ids say otherwise is refused."""
    flags = ("single_word", "lstrip", "rstrip", "normalized", "special")
    tokens, next_id = {}, len(vocab)
    for i, entry in enumerate(entries):
        unknown = set(entry) - {"id", "content", *flags}
        if unknown:
            refuse(f"added_tokens[{i}].{sorted(unknown)[0]}", entry[sorted(unknown)[0]], f"minigpt reads {', '.join(flags)}")
        content = entry["content"]
        if not content or content in tokens:
            continue  # tokenizers skips these too
        given = vocab.get(content)
        if given is None:
            given, next_id = next_id, next_id + 1
        if entry.get("id", given) != given:
            raise ValueError(f"tokenizer.json: added_tokens[{i}] {content!r} has id {entry['id']}; tokenizers gives it {given}")
        given_flags = {flag: bool(entry.get(flag, False)) for flag in flags}
        given_flags["normalized"] = bool(entry.get("normalized", not given_flags["special"]))  # as AddedToken::from sets it
        tokens[content] = AddedToken(content, given, **given_flags)
    return tuple(tokens.values())


# --- The command: every stage of encoding one text -------------------------------------------------


def explain(tokenizer: Tokenizer, text: str) -> str:
    """Every stage of encoding `text`, as lines a learner can read (what `python -m minigpt.tokenizer` prints)."""
    lines = [f"text: {text!r}"]
    segments = tokenizer.split_added(text)
    if tokenizer.added_tokens or tokenizer.normalizer:
        normalized = f"normalized ({'+'.join(tokenizer.normalizer)})" if tokenizer.normalizer else "not normalized"
        lines += ["", f"0. Added tokens, found first and given their ids; the text between them {normalized}:"]
        for raw, added_id in find_added(text, tokenizer.raw_pattern, tokenizer.raw_added):
            if added_id is None and tokenizer.normalize(raw) != raw:  # show what normalizing changed, code point by code point
                lines.append(f"   normalizing {ascii(raw)} gives {ascii(tokenizer.normalize(raw))}")
        lines += [f"   {s!r:24} " + ("text" if i is None else f"added token {i}") for s, i in segments]
    # Each piece with what made it: GPT-2's regex alternative (run last, when the pre-tokenizer has it), or
    # "split" for another regex's pieces. An added token is a piece of its own.
    pieces = []
    for segment, added_id in segments:
        steps = tokenizer.pre_tokenizer
        if added_id is not None:
            pieces.append((segment, "added token", added_id))
        elif steps and steps[-1] == GPT2_REGEX:
            before = tokenizer.pre_tokenize(segment, steps[:-1])
            pieces += [(m.group(), m.lastgroup, None) for piece in before for m in NAMED.finditer(piece)]
        else:
            pieces += [(piece, "split", None) for piece in tokenizer.pre_tokenize(segment)]
    gpt2 = GPT2_REGEX in tokenizer.pre_tokenizer
    regex_used = "GPT-2's regex" if gpt2 else "the tokenizer's Split regex"
    prefix = ", after a space put before each piece that lacks one" if PREFIX_SPACE in tokenizer.pre_tokenizer else ""
    shown = "each piece, and the alternative that matched it" if gpt2 else "each piece"
    lines += ["", f"1. Split by {regex_used}{prefix} ({shown}):"]
    lines += [f"   {piece!r:24} {how}" for piece, how, _ in pieces]
    lines += ["", "2. Each piece's UTF-8 bytes, each byte written as one printable character (space → Ġ, newline → Ċ):"]
    chars = {}
    for piece, _, added_id in pieces:
        if added_id is None:
            chars[piece] = "".join(tokenizer.byte_to_char[b] for b in piece.encode("utf-8"))
            lines.append(f"   {piece!r:24} bytes {piece.encode('utf-8').hex(' ')} → {chars[piece]!r}")
    lines += ["", "3. Byte-pair merges, the lowest-ranked adjacent pair first, until no pair is a listed merge:"]
    for piece, _, added_id in pieces:
        if added_id is None:
            for symbols, pair in tokenizer.merge_steps(chars[piece]):
                step = "start" if pair is None else f"merge {pair[0]!r} + {pair[1]!r} (rank {tokenizer.ranks[pair]})"
                lines.append(f"   {' '.join(symbols):40} {step}")
            lines.append("")
    lines.append("4. Each symbol's id in the vocabulary (an added token has its own):")
    ids = []
    for piece, _, added_id in pieces:
        if added_id is None:
            symbols = [(symbol, tokenizer.encoder[symbol]) for symbol in tokenizer.bpe(chars[piece])]
        else:
            symbols = [(piece, added_id)]
        for symbol, i in symbols:
            ids.append(i)
            lines.append(f"   {symbol!r:24} → {i}")
    lines += ["", f"token ids ({len(ids)}): {ids}"]
    return "\n".join(lines)


# The bundled model's folder, found beside this package rather than imported from it: minigpt never imports
# weights. Its vocab.json and merges.txt are GPT-2's own, the same as every official checkpoint's.
BUNDLED = Path(__file__).resolve().parent.parent / "weights" / "bundled"

LITERAL_NEWLINE = (
    'note: the text holds a backslash and an "n", not a newline: bash passes "\\n" inside double quotes as '
    "those two characters. For a newline, write the text as $'...\\n...'."
)


def read_files(path: Path) -> Tokenizer:
    """The command's tokenizer (the package itself reads no file): a tokenizer.json, or a folder with
    vocab.json and merges.txt, or else with tokenizer.json (the rule `weights` follows for a model's folder)."""
    if path.is_dir() and not (path / "vocab.json").is_file():
        path = path / "tokenizer.json"
    if path.is_dir():
        vocab = json.loads((path / "vocab.json").read_text(encoding="utf-8"))
        return Tokenizer.from_strings(vocab, (path / "merges.txt").read_text(encoding="utf-8"))
    return Tokenizer.from_tokenizer_json(json.loads(path.read_text(encoding="utf-8")))


def command(argv: list[str]) -> str:
    """`python -m minigpt.tokenizer [--tokenizer PATH] TEXT`: every stage of encoding TEXT."""
    parser = argparse.ArgumentParser(prog="python -m minigpt.tokenizer", description="Show every stage of BPE for a text.")
    parser.add_argument("text")
    parser.add_argument(
        "--tokenizer",
        type=Path,
        default=BUNDLED,
        metavar="PATH",
        help="a tokenizer.json (Pythia's), or a folder with vocab.json and merges.txt or tokenizer.json "
        "(default: the bundled model's, GPT-2's own)",
    )
    args = parser.parse_args(argv)
    shown = explain(read_files(args.tokenizer), args.text)
    return f"{LITERAL_NEWLINE}\n\n{shown}" if "\\n" in args.text and "\n" not in args.text else shown


if __name__ == "__main__":
    try:
        shown = command(sys.argv[1:])
    except (OSError, ValueError) as error:  # a missing file, or a tokenizer.json part minigpt refuses
        sys.exit(f"python -m minigpt.tokenizer: {error}")
    print(shown)
