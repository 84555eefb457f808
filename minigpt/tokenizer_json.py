"""Reading a tokenizer.json (Pythia's, Llama 3's, Qwen 2.5's and 3's; Hugging Face's gpt2 has one too): the parts
`tokenizers` runs around the byte-level BPE of `minigpt/bpe.py`, read here or refused in one line naming the
field, and run by `JsonTokenizer`, `minigpt/tokenizer.py`'s GPT-2 tokenizer with them (`from_tokenizer_json`).

- added tokens: texts found before BPE and given their ids directly (`AddedToken`, `find_added`);
- a normalizer: a Unicode normal form (Pythia's and Qwen's NFC), applied to the text between the added tokens;
- a pre-tokenizer: ByteLevel (GPT-2's regex, optionally a space put first), perhaps after Split regexes
  (Llama 3's and Qwen's: GPT-2's regex with contractions in any case, and digits cut 3 or 1 at a time);
- ignore_merges (Llama 3's): a piece that is a symbol of the vocabulary is that symbol, no merge applied;
- a post-processor putting a BOS before each text (Llama 3's <|begin_of_text|>): the default `bos`.
Refused, naming the field: Llama 2's, Mistral's and Gemma's SentencePiece-style BPE (byte_fallback), any other
part not implemented, and a damaged or hand-edited file's field (of the wrong type, a regex that does not
compile, an id far past any vocabulary): one line, never a traceback."""

import json
import unicodedata
from collections.abc import Iterator
from typing import NamedTuple

import regex

from .bpe import NAMED, PATTERN
from .tokenizer import END_OF_TEXT, MATCHED, Tokenizer, longest_first

# A pre-tokenizer is a sequence of steps, each turning a list of pieces into a longer one: a regex (each
# piece is cut into its matches and the text between them), GPT2_REGEX (the same with bpe.PATTERN), or
# PREFIX_SPACE (a space is put before each piece that does not start with one). GPT-2's is its regex alone.
GPT2_REGEX, PREFIX_SPACE = "GPT-2's regex", "prefix space"
GPT2_PRE_TOKENIZER = (GPT2_REGEX,)

NORMALIZERS = ("NFC", "NFD", "NFKC", "NFKD")  # Unicode normal forms, as unicodedata computes them
MAX_ID = 2**31 - 1  # token ids are kept as int32 (analysis/inputs.py); the largest vocabularies hold about 2**18


class AddedToken(NamedTuple):
    """A tokenizer.json added token: found in the text before BPE, and given its id directly."""

    content: str
    id: int
    single_word: bool = False  # matches only where no word character (\w) touches it on either side
    lstrip: bool = False  # takes the whitespace before it
    rstrip: bool = False  # takes the whitespace after it
    normalized: bool = True  # found in the normalized text; False: in the raw text, before normalizing
    special: bool = False  # encodes the same either way; tokenizers' decode can skip special tokens


def normalize(forms: tuple[str, ...], text: str) -> str:
    for form in forms:
        text = unicodedata.normalize(form, text)
    return text


WORD_CHARACTER, SPACES, SPACES_TO_THE_END = regex.compile(r"\w"), regex.compile(r"\s*"), regex.compile(r"\s*\Z")


def find_added(text: str, pattern: regex.Pattern | None, tokens: dict[str, AddedToken]) -> Iterator[tuple[str, int | None]]:
    """text cut into (an added token's text, its id) and (the text between them, None), as tokenizers'
    AddedVocabulary.find_matches does, with its single_word, lstrip and rstrip rules. Lazily: what comes
    after the pieces taken is not searched."""
    if pattern is None:
        yield text, None
        return
    end = 0
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
        if start > end:
            yield text[end:start], None
        yield text[start:stop], token.id
        end = stop
    if end < len(text):
        yield text[end:], None


def split_isolated(pattern: regex.Pattern, text: str) -> Iterator[str]:
    """text cut into pattern's matches and the stretches between them, in order (tokenizers' Split with
    behavior "Isolated"), lazily. GPT-2's regex matches everything, so there it gives its matches alone."""
    end = 0
    for match in pattern.finditer(text):
        start, stop = match.span()
        if start > end:
            yield text[end:start]
        if stop > start:
            yield match.group()
        end = stop
    if end < len(text):
        yield text[end:]


class JsonTokenizer(Tokenizer):
    """GPT-2's tokenizer with a tokenizer.json's stages: its added tokens found first (each stretch between
    those matched in the raw text normalized, then searched for the others), the text normalized, and its
    pre-tokenizer's steps, a Split regex and a space put first, before or instead of GPT-2's regex."""

    @classmethod
    def from_tokenizer_json(cls, obj: dict, bos_token: str | None = "", pad_token: str | None = None) -> "JsonTokenizer":
        """Built from a tokenizer.json's parsed contents (`read` checks every part). bos_token "", the default:
        the token its post-processor puts before a text (Llama 3's), else "<|endoftext|>" (Pythia's, Qwen's)."""
        parts = read(obj)
        bos = (parts["prepended"] or END_OF_TEXT) if bos_token == "" else bos_token
        return cls(**parts, bos_token=bos, pad_token=pad_token)

    def __init__(
        self,
        vocab: dict[str, int],
        merges: list[tuple[str, str]],
        *,
        added_tokens: tuple[AddedToken, ...],
        normalizer: tuple[str, ...] = (),
        pre_tokenizer: tuple = GPT2_PRE_TOKENIZER,
        ignore_merges: bool = False,
        prepended: str | None = None,
        bos_token: str | None = END_OF_TEXT,
        pad_token: str | None = None,
    ):
        """bos_token and pad_token (None: the same as BOS) name the tokens `to_tokens` uses, as special_tokens_map.json
        does (Pythia's: both "<|endoftext|>", id 0). `prepended`: the token tokenizers' encode(text, add_special_tokens=
        True) puts first (Llama 3's <|begin_of_text|>); `encode` never does, `to_tokens` puts `bos` (the same) first."""
        self.normalizer, self.pre_tokenizer, self.added_tokens = normalizer, pre_tokenizer, added_tokens
        self.ignore_merges, self.prepended = ignore_merges, prepended
        # The added tokens to find in the raw text, and those to find after normalizing, by the text matched.
        self.raw_added = {t.content: t for t in added_tokens if not t.normalized}
        self.normalized_added = {self.normalize(t.content): t for t in added_tokens if t.normalized}
        self.raw_pattern, self.normalized_pattern = map(longest_first, (self.raw_added, self.normalized_added))
        super().__init__(vocab, merges, bos_token=bos_token, pad_token=pad_token)
        for token in added_tokens:
            self.decoder.setdefault(token.id, token.content)

    def has(self, token: str) -> bool:
        """Whether a token's text is an added token's or the vocabulary's."""
        return token in self.encoder or token in self.raw_added or self.normalize(token) in self.normalized_added

    def id_of(self, token: str) -> int:
        """The id of a token's text: an added token's, or the vocabulary's."""
        if not self.has(token):
            raise ValueError(f"{token!r} is neither an added token nor in the vocabulary of {len(self.encoder)} symbols")
        found = self.raw_added.get(token) or self.normalized_added.get(self.normalize(token))
        return found.id if found else self.encoder[token]

    def normalize(self, text: str) -> str:
        return normalize(self.normalizer, text)

    def bpe(self, chars: str) -> list[str]:
        """Stage 3, except that with ignore_merges a piece that is a symbol is that symbol, as in tokenizers: Llama 3's
        vocabulary is tiktoken's, which looks a piece up whole first; its merges do not always rebuild such a symbol."""
        return [chars] if self.ignore_merges and chars in self.encoder else super().bpe(chars)

    def split_added(self, text: str) -> Iterator[tuple[str, int | None]]:
        """Stage 0: as tokenizers does it, tokens marked normalized=False are found in the raw text first, then
        each stretch between them is normalized and the other added tokens are found in it."""
        for segment, added_id in find_added(text, self.raw_pattern, self.raw_added):
            if added_id is not None:
                yield segment, added_id
                continue
            for part, part_id in find_added(self.normalize(segment), self.normalized_pattern, self.normalized_added):
                if part:
                    yield part, part_id

    def pre_tokenize(self, text: str, steps: tuple | None = None) -> Iterator[str]:
        """Stage 1: the pieces BPE works on, each step of the pre-tokenizer applied to every piece in turn."""
        pieces = iter([text])
        for step in self.pre_tokenizer if steps is None else steps:
            pieces = apply(step, pieces)  # lazily: each piece is cut when the next stage asks for it
        return pieces

    def explain_pieces(self, text: str) -> tuple[list[str], list[tuple[str, str, int | None]]]:
        """Stages 0 and 1 for `explain`, with what normalizing changed and the pre-tokenizer's steps."""
        lines, segments = [], list(self.split_added(text))
        if self.normalizer or any(added_id is not None for _, added_id in segments):
            normalized = f"normalized ({'+'.join(self.normalizer)})" if self.normalizer else "not normalized"
            lines += ["", f"0. Added tokens, found first and given their ids; the text between them {normalized}:"]
            for raw, added_id in find_added(text, self.raw_pattern, self.raw_added):
                if added_id is None and self.normalize(raw) != raw:  # show what normalizing changed, code point by code point
                    lines.append(f"   normalizing {ascii(raw)} gives {ascii(self.normalize(raw))}")
            lines += [f"   {s!r:24} " + ("text" if i is None else f"added token {i}") for s, i in segments]
        # Each piece with what made it: GPT-2's regex alternative (run last, when the pre-tokenizer has it), or
        # "split" for another regex's pieces. An added token is a piece of its own.
        pieces, steps = [], self.pre_tokenizer
        for segment, added_id in segments:
            if added_id is not None:
                pieces.append((segment, "added token", added_id))
            elif steps and steps[-1] == GPT2_REGEX:
                before = self.pre_tokenize(segment, steps[:-1])
                pieces += [(m.group(), m.lastgroup, None) for piece in before for m in NAMED.finditer(piece)]
            else:
                pieces += [(piece, "split", None) for piece in self.pre_tokenize(segment)]
        for k, (piece, how, given) in enumerate(pieces if self.ignore_merges else []):  # a symbol is looked up whole (`bpe`)
            if given is None and self.chars(piece) in self.encoder:  # and its id given, as an added token's
                pieces[k] = (piece, how + ", a symbol whole (ignore_merges: no merges)", self.encoder[self.chars(piece)])
        gpt2 = GPT2_REGEX in steps
        regex_used = "GPT-2's regex" if gpt2 else "the tokenizer's Split regex"
        prefix = ", after a space put before each piece that lacks one" if PREFIX_SPACE in steps else ""
        shown = "each piece, and the alternative that matched it" if gpt2 else "each piece"
        lines += ["", f"1. Split by {regex_used}{prefix} ({shown}):"]
        return lines + [f"   {piece!r:24} {how}" for piece, how, _ in pieces], pieces


def apply(step, pieces: Iterator[str]) -> Iterator[str]:
    """One step of a pre-tokenizer (GPT2_PRE_TOKENIZER's kinds), applied to each piece."""
    for piece in pieces:
        if step == PREFIX_SPACE:
            yield piece if piece.startswith(" ") else " " + piece
        elif step == GPT2_REGEX:  # its alternatives match every character, so there is nothing between matches
            yield from map(MATCHED, PATTERN.finditer(piece))
        else:
            yield from split_isolated(step, piece)


# --- Reading the file's parts: each is read here or refused, in one line naming it ------------------


def shown(value) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text[:120] + " …" if len(text) > 120 else text


def refuse(field: str, value, why: str):
    """What minigpt does not implement."""
    raise ValueError(f"tokenizer.json: {field} {shown(value)} is not implemented ({why})")


def malformed(field: str, value, expected: str):
    """What is not a tokenizer.json's field at all."""
    raise ValueError(f"tokenizer.json: {field} is {shown(value)}; expected {expected}")


def an_object(value, field: str, optional: bool = True) -> dict:
    if (value is None and optional) or isinstance(value, dict):
        return value
    malformed(field, value, "an object" + (" or null" if optional else ""))


def read(obj) -> dict:
    """The keyword arguments of `JsonTokenizer` that a tokenizer.json's parsed contents give: vocab, merges, added_tokens,
    normalizer, pre_tokenizer, ignore_merges, prepended. A part that would change the ids or the decoded text and
    is not implemented is refused, as is a part that is not what tokenizers writes."""
    try:
        return read_parts(an_object(obj, "the top level", optional=False))
    except RecursionError:  # a Sequence inside a Sequence inside …: refused, not a traceback
        raise ValueError("tokenizer.json: nested too deeply to read (a Sequence within a Sequence, …)") from None


def read_parts(obj: dict) -> dict:
    for field in ("truncation", "padding"):
        if obj.get(field) is not None:
            refuse(field, obj[field], "minigpt's encode neither truncates nor pads")
    vocab, merges, ignore_merges = read_bpe(an_object(obj.get("model"), "model", optional=False))
    added_tokens = read_added_tokens(obj.get("added_tokens") or [], vocab)
    decoder = an_object(obj.get("decoder"), "decoder")
    if decoder is None or decoder.get("type") != "ByteLevel":
        refuse("decoder", decoder, "minigpt decodes byte-level BPE only (ByteLevel)")
    normalizer, pre_tokenizer = read_normalizer(obj.get("normalizer"), "normalizer"), read_pre_tokenizer(obj.get("pre_tokenizer"))
    prepended = read_post_processor(obj.get("post_processor"), (vocab | {t.content: t.id for t in added_tokens}).get)
    return dict(vocab=vocab, merges=merges, added_tokens=added_tokens, normalizer=normalizer, pre_tokenizer=pre_tokenizer,
                ignore_merges=ignore_merges, prepended=prepended)  # fmt: skip


def read_post_processor(post: dict | None, id_of, field: str = "post_processor") -> str | None:
    """The token the post-processor puts before each text, or None: ByteLevel moves offsets only; a
    TemplateProcessing's single-text template is the text ($A, as transformers 5 writes GPT-2's) or one special
    token and the text (Llama 3's), with the token's own id; newer files hold a Sequence of the two."""
    if an_object(post, field) is None or post.get("type") == "ByteLevel":
        return None
    if post.get("type") == "Sequence" and isinstance(post.get("processors"), list):
        firsts = [t for i, p in enumerate(post["processors"]) if (t := read_post_processor(p, id_of, f"{field}.processors[{i}]"))]
        if len(firsts) <= 1:
            return firsts[0] if firsts else None
    template = post.get("single") if post.get("type") == "TemplateProcessing" and isinstance(post.get("single"), list) else []
    kinds = [next(iter(part)) if isinstance(part, dict) and len(part) == 1 else None for part in template]
    if kinds == ["Sequence"]:
        return None
    first = template[0]["SpecialToken"] if kinds == ["SpecialToken", "Sequence"] else None
    token = first.get("id") if isinstance(first, dict) and isinstance(first.get("id"), str) else None
    given = post.get("special_tokens", {}).get(token) if isinstance(post.get("special_tokens"), dict) else None
    if token is None or id_of(token) is None or not isinstance(given, dict) or given.get("ids") != [id_of(token)]:
        refuse(field, post, "minigpt's encode adds none; it reads ByteLevel and a template putting one token (its own id) first")
    return token


def read_bpe(model: dict) -> tuple[dict[str, int], list[tuple[str, str]], bool]:
    """The BPE model's vocabulary, merges (written either "left right" or [left, right]) and ignore_merges."""
    if model.get("type", "BPE") != "BPE":
        refuse("model.type", model.get("type"), "minigpt reads byte-level BPE only")
    if model.get("byte_fallback") not in (None, False):  # checked before unk_token, which these files set too
        why = "a SentencePiece-style BPE, as Llama 2's, Mistral's and Gemma's: spaces written ▁, characters outside the"
        refuse("model.byte_fallback", model["byte_fallback"], why + " vocabulary as <0x..> bytes; minigpt reads byte-level BPE")
    accepted = {"dropout": (None, 0, 0.0), "unk_token": (None,), "continuing_subword_prefix": (None, ""),
                "end_of_word_suffix": (None, ""), "ignore_merges": (None, False, True)}  # fmt: skip
    for field, values in accepted.items():
        if model.get(field) not in values:
            refuse(f"model.{field}", model[field], f"minigpt's BPE reads only {' or '.join(map(json.dumps, values))}")
    vocab, merges = model.get("vocab"), []
    if not isinstance(vocab, dict) or not isinstance(model.get("merges"), list):
        raise ValueError("tokenizer.json: model has no vocab {symbol: id} and merges list")
    for symbol, i in vocab.items():
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i <= MAX_ID:
            malformed(f"model.vocab[{json.dumps(symbol, ensure_ascii=False)}]", i, f"an id from 0 to {MAX_ID}")
    for rank, merge in enumerate(model["merges"]):
        pair = merge.split(" ") if isinstance(merge, str) else merge
        left, right = pair if isinstance(pair, list) and len(pair) == 2 else (None, None)
        if not (isinstance(left, str) and isinstance(right, str) and left in vocab and right in vocab and left + right in vocab):
            raise ValueError(f"tokenizer.json: model.merges[{rank}] {merge!r} is not two symbols whose merge is a symbol")
        merges.append((left, right))
    return vocab, merges, bool(model.get("ignore_merges"))


def read_normalizer(normalizer: dict | None, field: str) -> tuple[str, ...]:
    """A Unicode normal form, or a Sequence of them, or none."""
    if an_object(normalizer, field) is None:
        return ()
    if normalizer.get("type") in NORMALIZERS:
        return (normalizer["type"],)
    if normalizer.get("type") == "Sequence":
        parts = normalizer.get("normalizers")
        if not isinstance(parts, list):
            malformed(f"{field}.normalizers", parts, "a list")
        return tuple(form for i, n in enumerate(parts) for form in read_normalizer(n, f"{field}[{i}]"))
    refuse(field, normalizer, f"minigpt reads null, {', '.join(NORMALIZERS)} or a Sequence of them")


def read_pre_tokenizer(pre: dict | None) -> tuple:
    """ByteLevel (GPT-2's regex unless use_regex is false, a space first if add_prefix_space), optionally
    after Split steps (a regex, behavior Isolated) in a Sequence: the steps of `JsonTokenizer.pre_tokenize`."""
    sequence = an_object(pre, "pre_tokenizer") is not None and pre.get("type") == "Sequence"
    parts = pre.get("pretokenizers") if sequence else [pre]
    if not isinstance(parts, list):
        malformed("pre_tokenizer.pretokenizers", parts, "a list")
    for i, part in enumerate(parts[:-1]):
        an_object(part, f"pre_tokenizer.pretokenizers[{i}]", optional=False)
    if not parts or not isinstance(parts[-1], dict) or parts[-1].get("type") != "ByteLevel":
        refuse("pre_tokenizer", pre, "minigpt reads ByteLevel, or a Sequence of Split steps ending in ByteLevel")
    steps = []
    for i, part in enumerate(parts[:-1]):
        field = f"pre_tokenizer.pretokenizers[{i}]"
        if part.get("type") != "Split" or part.get("behavior") != "Isolated" or part.get("invert", False):
            refuse(field, part, "minigpt reads Split with behavior Isolated and invert false before ByteLevel")
        steps.append(read_split_pattern(part.get("pattern"), f"{field}.pattern"))
    byte_level = parts[-1]
    # tokenizers' defaults when a field is absent: add_prefix_space true, use_regex true; a string "false" is refused,
    # as tokenizers refuses it. (trim_offsets moves only the tokens' offsets, which minigpt does not report.)
    for flag, step in (("add_prefix_space", PREFIX_SPACE), ("use_regex", GPT2_REGEX)):
        if not isinstance(value := byte_level.get(flag, True), bool):
            malformed(f"pre_tokenizer{f'.pretokenizers[{len(parts) - 1}]' * sequence}.{flag}", value, "true or false")
        steps += [step] * value
    return tuple(steps)


def read_split_pattern(pattern, field: str) -> regex.Pattern:
    """A Split step's {"Regex": pattern} or {"String": text to find as it is}."""
    if not isinstance(pattern, dict) or len(pattern) != 1 or not isinstance(next(iter(pattern.values())), str):
        malformed(field, pattern, '{"Regex": a regex} or {"String": a text}')
    kind, given = next(iter(pattern.items()))
    if kind == "String":
        return regex.compile(regex.escape(given))
    if kind != "Regex":
        malformed(field, pattern, '{"Regex": a regex} or {"String": a text}')
    try:
        return regex.compile(given)
    except (regex.error, ValueError, OverflowError) as error:
        raise ValueError(f"tokenizer.json: {field}.Regex {shown(given)} is not a regex ({error})") from None


def read_added_tokens(entries: list, vocab: dict[str, int]) -> tuple[AddedToken, ...]:
    """The added tokens, with the ids tokenizers gives them: the vocabulary's for a symbol in it, otherwise
    the next after the vocabulary, in the order listed. A file whose ids say otherwise is refused."""
    if not isinstance(entries, list):
        malformed("added_tokens", entries, "a list")
    flags = ("single_word", "lstrip", "rstrip", "normalized", "special")
    tokens, next_id = {}, len(vocab)
    for i, entry in enumerate(entries):
        field = f"added_tokens[{i}]"
        unknown = set(an_object(entry, field, optional=False)) - {"id", "content", *flags}
        if unknown:
            refuse(f"{field}.{sorted(unknown)[0]}", entry[sorted(unknown)[0]], f"minigpt reads {', '.join(flags)}")
        content = entry.get("content")
        if not isinstance(content, str):
            malformed(f"{field}.content", content, "the token's text, a string")
        for flag in flags:
            if not isinstance(entry.get(flag, False), bool):
                malformed(f"{field}.{flag}", entry[flag], "true or false")
        if not content or content in tokens:
            continue  # tokenizers skips these too
        given = vocab.get(content)
        if given is None:
            given, next_id = next_id, next_id + 1
        if entry.get("id", given) != given:
            raise ValueError(f"tokenizer.json: {field} {content!r} has id {shown(entry['id'])}; tokenizers gives it {given}")
        given_flags = {flag: entry.get(flag, False) for flag in flags}
        given_flags["normalized"] = entry.get("normalized", not given_flags["special"])  # as AddedToken::from sets it
        tokens[content] = AddedToken(content, given, **given_flags)
    return tuple(tokens.values())
