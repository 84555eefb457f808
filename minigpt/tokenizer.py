"""GPT-2's byte-level BPE tokenizer, as in OpenAI's encoder.py.

Text → UTF-8 bytes → each byte shown as a printable unicode character → split into word-like pieces
by a regex → inside each piece, adjacent symbols merged greedily, lowest merge rank first, until no
listed merge applies → each resulting symbol looked up in the vocabulary.

The tokenizer is built from the two files' contents (`weights` reads them from disk):
vocab.json, {symbol: id}, and merges.txt, one "left right" pair per line in rank order.
"""

import regex

# GPT-2's pre-tokenizer: English contractions (lower case only, as released), runs of letters,
# of digits, or of other symbols, each with at most one leading space; then whitespace, where a run
# followed by a word gives its last space to that word (the `\s+(?!\S)` alternative).
PATTERN = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

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

    def bpe(self, piece: str) -> list[str]:
        """Merge the characters of one pre-tokenized piece into vocabulary symbols."""
        if piece in self.cache:
            return self.cache[piece]
        symbols = list(piece)
        while len(symbols) > 1:
            pairs = set(zip(symbols, symbols[1:]))
            best = min(pairs, key=lambda pair: self.ranks.get(pair, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(symbols):  # merge every occurrence of the best pair, left to right
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        self.cache[piece] = symbols
        return symbols

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
