"""The tokenizer minigpt's models use: GPT-2's byte-level BPE (`minigpt/bpe.py`, read that first) with the
stage that `tokenizers` and Hugging Face's GPT-2 tokenizer run before it, and TransformerLens's names.

0. Added tokens are found in the text and given their ids directly. GPT-2's is "<|endoftext|>" (id 50256),
   matched as one token wherever a text holds it, as Hugging Face's GPT2TokenizerFast and TransformerLens
   do. A tokenizer.json (Pythia's) lists its own (its "<|endoftext|>", runs of 2 to 24 spaces), and may
   normalize the text between them (Pythia: Unicode NFC), put a space before each piece or split it by a
   regex of its own before GPT-2's: `minigpt/tokenizer_json.py` reads those parts.
1.–4. GPT-2's BPE, on each stretch of text between the added tokens.

`python -m minigpt.tokenizer "some text"` prints every stage for that text (`--tokenizer PATH` for another).

The tokenizer is built from files' contents and reads no file itself (`weights` reads them from disk):
GPT-2's vocab.json, {symbol: id}, and merges.txt, one "left right" pair per line in rank order
(`from_strings`), or a tokenizer.json's parsed contents (`from_tokenizer_json`). Only the command, at
the end of this file, reads files: the bundled model's, found by path (minigpt never imports weights),
or the one it is given.
"""

import argparse
import json
import operator
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from . import tokenizer_json
from .bpe import BPE, NAMED, PATTERN, merge_steps
from .tokenizer_json import GPT2_PRE_TOKENIZER, GPT2_REGEX, PREFIX_SPACE, AddedToken, find_added, longest_first, split_isolated

END_OF_TEXT = "<|endoftext|>"


class Tokenizer(BPE):
    def __init__(
        self,
        vocab: dict[str, int],
        merges: list[tuple[str, str]],
        *,
        added_tokens: tuple[AddedToken, ...] | None = None,
        normalizer: tuple[str, ...] = (),
        pre_tokenizer: tuple = GPT2_PRE_TOKENIZER,
        bos_token: str | None = END_OF_TEXT,
        pad_token: str | None = None,
    ):
        """added_tokens None: GPT-2's files, whose special tokens ("<|endoftext|>", and the BOS and padding
        tokens named) are matched in text as one token each, as transformers' GPT2TokenizerFast does."""
        super().__init__(vocab, merges)
        if added_tokens is None:
            named = dict.fromkeys(t for t in (END_OF_TEXT, bos_token, pad_token) if t is not None and t in vocab)
            added_tokens = tuple(AddedToken(t, vocab[t], normalized=False, special=True) for t in named)
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
        its added tokens, a Unicode normalizer, a byte-level pre-tokenizer (`tokenizer_json.read`). Anything
        else that would change the ids or the decoded text is refused in one line naming the field.
        bos_token and pad_token (None: the same as BOS) name the tokens `to_tokens` uses; they are not in
        tokenizer.json but in special_tokens_map.json, and Pythia's are both "<|endoftext|>", id 0."""
        return cls(**tokenizer_json.read(obj), bos_token=bos_token, pad_token=pad_token)

    def normalize(self, text: str) -> str:
        return tokenizer_json.normalize(self.normalizer, text)

    def split_added(self, text: str) -> Iterator[tuple[str, int | None]]:
        """Stage 0: text cut around its added tokens, as (an added token's text, its id) or (text, None) to
        pass on to BPE. As tokenizers does it: tokens marked normalized=False are found in the raw text first,
        then each stretch between them is normalized and the other added tokens are found in it."""
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

    def pieces(self, text: str) -> Iterator[tuple[str, int | None]]:
        """Stages 0 and 1: (a piece for BPE, None) or (an added token's text, its id), in the text's order."""
        for segment, added_id in self.split_added(text):
            if added_id is None:
                yield from ((piece, None) for piece in self.pre_tokenize(segment))
            else:
                yield segment, added_id

    def encode(self, text: str, max_tokens: int | None = None) -> list[int]:
        """Token ids for text. Adds no BOS. "<|endoftext|>" in the text is that token (see stage 0).
        max_tokens: only the first max_tokens ids of the whole text's, found without tokenizing the rest.
        Each stage runs lazily, piece after piece, so stopping early changes none of the ids before the cut."""
        ids = []
        for piece, added_id in self.pieces(text):
            ids += self.encode_piece(piece) if added_id is None else [added_id]
            if max_tokens is not None and len(ids) >= max_tokens:
                return ids[:max_tokens]
        return ids

    # TransformerLens's names, for its users' notebooks: `model.to_tokens`, `to_string` and `to_str_tokens`.
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

    def to_str_tokens(self, text, prepend_bos: bool = True) -> list[str] | list[list[str]]:
        """Each token's text, as TransformerLens's `model.to_str_tokens`: a text is tokenized (BOS first unless
        prepend_bos=False, as `to_tokens`); ids (a list, or a tensor [pos] or [1, pos]) are taken as they are;
        a list of texts gives one list per text. A token that is part of a character's UTF-8 bytes shows as
        U+FFFD, as in TransformerLens (which decodes each token alone too)."""
        if isinstance(text, str):
            ids = self.to_tokens(text, prepend_bos)[0].tolist()
        elif isinstance(text, torch.Tensor):
            if text.dim() > 2 or (text.dim() == 2 and text.shape[0] != 1):
                raise ValueError(f"to_str_tokens takes the ids of one text, [pos] or [1, pos]; found shape {list(text.shape)}")
            ids = text.reshape(-1).tolist()
        elif isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text):
            return [self.to_str_tokens(t, prepend_bos) for t in text]
        elif isinstance(text, (list, tuple)) and all(isinstance(i, int) and not isinstance(i, bool) for i in text):
            ids = list(text)
        else:
            raise ValueError(f"to_str_tokens takes a text, a list of texts, or token ids; found {type(text).__name__}")
        return [self.decode([i]) for i in ids]


# --- The command: every stage of encoding one text -------------------------------------------------


def apply(step, pieces: Iterator[str]) -> Iterator[str]:
    """One step of a pre-tokenizer (tokenizer_json.GPT2_PRE_TOKENIZER's kinds), applied to each piece."""
    for piece in pieces:
        if step == PREFIX_SPACE:
            yield piece if piece.startswith(" ") else " " + piece
        elif step == GPT2_REGEX:  # its alternatives match every character, so there is nothing between matches
            yield from map(MATCHED, PATTERN.finditer(piece))
        else:
            yield from split_isolated(step, piece)


MATCHED = operator.methodcaller("group")


SHOWN_STEPS = 200  # characters of a piece up to which `explain` shows each merge


def explain(tokenizer: Tokenizer, text: str) -> str:
    """Every stage of encoding `text`, as lines a learner can read (what `python -m minigpt.tokenizer` prints)."""
    lines = [f"text: {text!r}"]
    segments = list(tokenizer.split_added(text))
    if tokenizer.normalizer or any(added_id is not None for _, added_id in segments):
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
            if len(chars[piece]) > SHOWN_STEPS:  # merge_steps takes n² time: the result alone, from `merge`
                lines.append(f"   {' '.join(tokenizer.bpe(chars[piece])):40} ({len(chars[piece])} characters: steps not shown)")
            else:
                for symbols, pair in merge_steps(tokenizer.ranks, chars[piece]):
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
    try:
        if path.is_dir():
            vocab = json.loads((path / "vocab.json").read_text(encoding="utf-8"))
            return Tokenizer.from_strings(vocab, (path / "merges.txt").read_text(encoding="utf-8"))
        return Tokenizer.from_tokenizer_json(json.loads(path.read_text(encoding="utf-8")))
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply to read") from None


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
