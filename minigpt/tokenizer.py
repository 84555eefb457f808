"""GPT-2's byte-level BPE tokenizer, as in OpenAI's encoder.py. Four stages, for every piece of text:

1. The text is split into word-like pieces by a regex (PATTERN, below).
2. Each piece's UTF-8 bytes are written as printable characters, one per byte (`bytes_to_unicode`).
3. Inside each piece, the adjacent pair of symbols with the lowest merge rank is merged, again and
   again, until no pair is a listed merge (`merge_steps`).
4. Each resulting symbol is looked up in the vocabulary.

`python -m minigpt.tokenizer "some text"` prints every stage for that text.

The tokenizer is built from the two files' contents (`weights` reads them from disk):
vocab.json, {symbol: id}, and merges.txt, one "left right" pair per line in rank order.
"""

from collections.abc import Iterator

import regex

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


class Tokenizer:
    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]]):
        self.encoder = vocab
        self.decoder = {i: s for s, i in vocab.items()}
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.byte_to_char = bytes_to_unicode()
        self.char_to_byte = {c: b for b, c in self.byte_to_char.items()}
        self.eot = vocab[END_OF_TEXT]  # 50256: GPT-2's only special token, used as BOS and padding
        self.cache: dict[str, list[str]] = {}

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
        """Token ids for text. Adds no BOS, and reads "<|endoftext|>" in text as ordinary characters."""
        ids = []
        for piece in PATTERN.findall(text):
            chars = "".join(self.byte_to_char[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[symbol] for symbol in self.bpe(chars))
        return ids

    def decode(self, ids) -> str:
        """Text for token ids; byte sequences that are not valid UTF-8 become U+FFFD, as in OpenAI's code."""
        try:
            chars = "".join(self.decoder[int(i)] for i in ids)
        except KeyError as missing:
            raise ValueError(f"token id {missing} is not in the vocabulary of {len(self.decoder)} tokens") from None
        return bytes(self.char_to_byte[c] for c in chars).decode("utf-8", errors="replace")


def explain(tokenizer: Tokenizer, text: str) -> str:
    """Every stage of encoding `text`, as lines a learner can read (what `python -m minigpt.tokenizer` prints)."""
    lines = [f"text: {text!r}", "", "1. Split by GPT-2's regex (each piece, and the alternative that matched it):"]
    pieces = [(match.group(), match.lastgroup) for match in NAMED.finditer(text)]
    lines += [f"   {piece!r:24} {alternative}" for piece, alternative in pieces]
    lines += ["", "2. Each piece's UTF-8 bytes, each byte written as one printable character (space → Ġ, newline → Ċ):"]
    chars = ["".join(tokenizer.byte_to_char[b] for b in piece.encode("utf-8")) for piece, _ in pieces]
    for (piece, _), written in zip(pieces, chars):
        lines.append(f"   {piece!r:24} bytes {piece.encode('utf-8').hex(' ')} → {written!r}")
    lines += ["", "3. Byte-pair merges, the lowest-ranked adjacent pair first, until no pair is a listed merge:"]
    for written in chars:
        for symbols, pair in tokenizer.merge_steps(written):
            step = "start" if pair is None else f"merge {pair[0]!r} + {pair[1]!r} (rank {tokenizer.ranks[pair]})"
            lines.append(f"   {' '.join(symbols):40} {step}")
        lines.append("")
    lines.append("4. Each symbol's id in the vocabulary:")
    ids = []
    for written in chars:
        for symbol in tokenizer.bpe(written):
            ids.append(tokenizer.encoder[symbol])
            lines.append(f"   {symbol!r:24} → {ids[-1]}")
    lines += ["", f"token ids ({len(ids)}): {ids}"]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    # A demonstration command, so it reaches past this package for files: the bundled model's tokenizer
    # is GPT-2's own (the same vocab.json and merges.txt as every official checkpoint).
    from weights import BUNDLED_DIR, read_tokenizer

    if len(sys.argv) != 2:
        sys.exit('usage: python -m minigpt.tokenizer "some text"')
    print(explain(read_tokenizer(BUNDLED_DIR), sys.argv[1]))
