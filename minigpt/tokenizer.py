"""The tokenizer minigpt's models use: GPT-2's byte-level BPE (`minigpt/bpe.py`, read it before this file)
with GPT-2's special token, the command that shows every stage, and TransformerLens's names.

0. Special tokens are found in the text first and given their ids directly. GPT-2's is "<|endoftext|>" (id
   50256), matched as one token wherever a text holds it, as Hugging Face's GPT2TokenizerFast and
   TransformerLens do; so are the BOS and padding tokens a checkpoint names.
1.–4. GPT-2's BPE, on each stretch of text between them.

`python -m minigpt.show "some text"` prints every stage for that text (`--tokenizer PATH` for another).

The tokenizer is built from files' contents and reads no file itself (`weights` reads them from disk):
GPT-2's vocab.json, {symbol: id}, and merges.txt, one "left right" pair per line in rank order
(`from_strings`). A tokenizer.json (Pythia's) adds stages GPT-2 does not need (added tokens, a normalizer,
Split pre-tokenizers): `minigpt/tokenizer_json.py` reads it (`JsonTokenizer.from_tokenizer_json`), and GPT-2's
path never imports it.
"""

import operator
from collections.abc import Iterable, Iterator

import regex
import torch

from .bpe import BPE, NAMED, PATTERN, merge_steps

END_OF_TEXT = "<|endoftext|>"
MATCHED = operator.methodcaller("group")


def longest_first(texts: Iterable[str]) -> regex.Pattern | None:
    """A regex finding these texts leftmost first and, of those starting at one place, the longest (as
    tokenizers' Aho-Corasick automaton does): Pythia's run of 5 spaces is one token, not 2 + 2 + 1."""
    texts = sorted(texts, key=len, reverse=True)
    return regex.compile("|".join(map(regex.escape, texts))) if texts else None


class Tokenizer(BPE):
    def __init__(
        self,
        vocab: dict[str, int],
        merges: list[tuple[str, str]],
        *,
        bos_token: str | None = END_OF_TEXT,
        pad_token: str | None = None,
    ):
        """GPT-2's special tokens ("<|endoftext|>", and the BOS and padding tokens named) are matched in text as
        one token each, as transformers' GPT2TokenizerFast does."""
        super().__init__(vocab, merges)
        self.special = {t: vocab[t] for t in (END_OF_TEXT, bos_token, pad_token) if t is not None and t in vocab}
        self.special_pattern = longest_first(self.special)
        # GPT-2's only special token, used as BOS and padding; Pythia's is the same text, id 0.
        self.eot = self.id_of(END_OF_TEXT) if self.has(END_OF_TEXT) else None
        self.bos = None if bos_token is None else self.id_of(bos_token)  # None: to_tokens cannot prepend one
        self.pad = self.bos if pad_token is None else self.id_of(pad_token)

    def has(self, token: str) -> bool:
        return token in self.encoder

    def id_of(self, token: str) -> int:
        """The id of a token's text in the vocabulary."""
        if not self.has(token):
            raise ValueError(f"{token!r} is not in the vocabulary of {len(self.encoder)} symbols")
        return self.encoder[token]

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

    def split_added(self, text: str) -> Iterator[tuple[str, int | None]]:
        """Stage 0: text cut around its special tokens, as (a special token's text, its id) or (text, None) to
        pass on to BPE, lazily: what comes after the pieces taken is not searched."""
        end = 0
        for match in self.special_pattern.finditer(text) if self.special_pattern else ():
            if match.start() > end:
                yield text[end : match.start()], None
            yield match.group(), self.special[match.group()]
            end = match.end()
        if end < len(text):
            yield text[end:], None

    def pre_tokenize(self, text: str) -> Iterator[str]:
        """Stage 1: the pieces BPE works on, lazily. GPT-2's regex matches every character, so there is nothing
        between its matches."""
        return map(MATCHED, PATTERN.finditer(text))

    def pieces(self, text: str) -> Iterator[tuple[str, int | None]]:
        """Stages 0 and 1: (a piece for BPE, None) or (a special token's text, its id), in the text's order."""
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

    def explain_pieces(self, text: str) -> tuple[list[str], list[tuple[str, str, int | None]]]:
        """Stages 0 and 1 for `explain`: the lines showing them, and each piece with what made it (the regex's
        alternative that matched it) and, for a special token, its id."""
        segments, lines, pieces = list(self.split_added(text)), [], []
        if any(special_id is not None for _, special_id in segments):
            lines += ["", "0. Special tokens, found first and given their ids:"]
            lines += [f"   {s!r:24} " + ("text" if i is None else f"special token {i}") for s, i in segments]
        for segment, special_id in segments:
            if special_id is None:
                pieces += [(m.group(), m.lastgroup, None) for m in NAMED.finditer(segment)]
            else:
                pieces.append((segment, "special token", special_id))
        lines += ["", "1. Split by GPT-2's regex (each piece, and the alternative that matched it):"]
        return lines + [f"   {piece!r:24} {how}" for piece, how, _ in pieces], pieces


# --- The command: every stage of encoding one text -------------------------------------------------

SHOWN_STEPS = 200  # characters of a piece up to which `explain` shows each merge


def explain(tokenizer: Tokenizer, text: str) -> str:
    """Every stage of encoding `text`, as lines a learner can read (what `python -m minigpt.tokenizer` prints)."""
    stages, pieces = tokenizer.explain_pieces(text)
    lines = [f"text: {text!r}", *stages]
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
    lines.append("4. Each symbol's id in the vocabulary (a special or added token has its own):")
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
