"""GPT-2's byte-level BPE, as OpenAI's encoder.py runs it and minGPT's bpe.py teaches it. Read before tokenizer.py.

Four stages, for every piece of text:

1. The text is split into word-like pieces by a regex (PATTERN, below).
2. Each piece's UTF-8 bytes are written as printable characters, one per byte (`bytes_to_unicode`).
3. Inside each piece, the adjacent pair of symbols with the lowest merge rank is merged, again and again,
   until no pair is a listed merge (`merge_steps`, and its fast form `merge`).
4. Each resulting symbol is looked up in the vocabulary (vocab.json, {symbol: id}).

Decoding runs stages 4 and 2 backwards: ids → symbols → bytes → UTF-8 text.

The files: vocab.json, {symbol: id}, and merges.txt, one "left right" pair per line, the line number being
the merge's rank (lowest first). `BPE` is built from their contents; it reads no file itself.
`minigpt/tokenizer.py` builds on it: GPT-2's special token, the show-work command, TransformerLens's names.
"""

import heapq
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
# The same regex with each alternative a named group, so that the show-work command can say which one matched.
NAMED = regex.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in ALTERNATIVES.items()))


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


Ranks = dict[tuple[str, str], int]  # {(left, right): its line in merges.txt}, lowest merged first


def merge_steps(ranks: Ranks, chars: str) -> Iterator[tuple[list[str], tuple[str, str] | None]]:
    """Stage 3 as OpenAI's encoder.py writes it, step by step: yield (symbols, the pair just merged), starting
    from single characters (pair None) and merging every occurrence of the lowest-ranked adjacent pair each
    step. Each step looks at every pair again, so a piece of n characters costs up to n² work: this is the
    definition, for reading and for the show-work command; `merge` is the form that runs."""
    symbols = list(chars)
    yield symbols, None
    while len(symbols) > 1:
        pairs = set(zip(symbols, symbols[1:]))
        best = min(pairs, key=lambda pair: ranks.get(pair, float("inf")))
        if best not in ranks:
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


def merge(ranks: Ranks, chars: str) -> list[str]:
    """Stage 3's fast form: the last step of `merge_steps`, in O(n log n) for n characters.

    The symbols are a linked list over the piece's characters: the symbol starting at character i ends at
    end[i] (-1 once merged into the one before it), so its right neighbour starts at end[i], and before[i]
    is where its left neighbour starts. The adjacent pairs that are merges wait in a heap, lowest rank
    first and, of equal ranks, leftmost first: the order in which `merge_steps` merges them (and
    `tokenizers`, whose word.rs does the same). A pair is one integer, rank · (n + 1) + start, so the heap
    compares integers. A merge changes the pairs on both sides of it; rather than find the old ones in the
    heap, each pair is checked when it comes out (is the pair at its start still the one of its rank?) and
    dropped if not."""
    n = len(chars)
    end, before = list(range(1, n + 1)), list(range(-1, n - 1))
    heap = [ranks[pair] * (n + 1) + i for i, pair in enumerate(zip(chars, chars[1:])) if pair in ranks]
    heapq.heapify(heap)

    def pair_at(left: int) -> int | None:
        """The rank of the pair of symbols starting at `left`, None if they are not a merge."""
        middle = end[left]
        return ranks.get((chars[left:middle], chars[middle : end[middle]])) if 0 <= middle < n else None

    def push(left: int) -> None:
        rank = pair_at(left)
        if rank is not None:
            heapq.heappush(heap, rank * (n + 1) + left)

    while heap:
        rank, left = divmod(heapq.heappop(heap), n + 1)
        if pair_at(left) != rank:
            continue  # stale: one of the two symbols has been merged since this pair was pushed
        middle = end[left]
        end[left], end[middle] = end[middle], -1
        if end[left] < n:
            before[end[left]] = left
            push(left)  # the merged symbol and the one after it
        if before[left] >= 0:
            push(before[left])  # the one before it and the merged symbol
    symbols, i = [], 0
    while i < n:
        symbols.append(chars[i : end[i]])
        i = end[i]
    return symbols


# Pieces `BPE.encode_piece` remembers, and the longest it remembers: a bound on the cache's memory (10 MB measured for
# 50,000 random words of 3 to 10 letters), where OpenAI's encoder.py keeps every piece it has seen.
CACHED, CACHED_LENGTH = 50_000, 64


class BPE:
    """GPT-2's tokenizer: text → ids and back, from vocab.json's contents and merges.txt's pairs in rank order."""

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]]):
        self.encoder = vocab
        self.decoder = {i: s for s, i in vocab.items()}
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.byte_to_char = bytes_to_unicode()
        self.char_to_byte = {c: b for b, c in self.byte_to_char.items()}
        # Stage 2's fast form (see `chars`): each Latin-1 character, the byte of its number, to bytes_to_unicode's.
        self.byte_table = str.maketrans({chr(b): c for b, c in self.byte_to_char.items()})
        self.cache: dict[str, list[int]] = {}  # the ids of the pieces seen (`encode_piece`)

    def chars(self, piece: str) -> str:
        """Stage 2: the piece's UTF-8 bytes, each written as bytes_to_unicode's character. The same as
        "".join(self.byte_to_char[b] for b in piece.encode()), in C: Latin-1 reads each byte as the character
        of its number, and translate replaces that by bytes_to_unicode's."""
        return piece.encode("utf-8").decode("latin-1").translate(self.byte_table)

    def bpe(self, chars: str) -> list[str]:
        """Stage 3 for one piece's characters."""
        # merge_steps' result, fast (a 64,000-letter word in under 1 s): test_the_fast_merge_is_the_last_step_of_merge_steps
        return merge(self.ranks, chars)

    def encode_piece(self, piece: str) -> list[int]:
        """Stages 2 to 4 for one piece of stage 1, remembered per piece as OpenAI's encoder.py does: text is
        Zipfian, so a few thousand pieces cover most of it. The cache starts afresh when full, so that its
        memory is bounded on any corpus."""
        ids = self.cache.get(piece)
        if ids is None:
            try:
                ids = [self.encoder[symbol] for symbol in self.bpe(self.chars(piece))]
            except KeyError as missing:  # tokenizers would drop the symbol silently: say so instead
                raise ValueError(f"symbol {missing} of {piece!r} is not in the vocabulary, and there is no unk token") from None
            if len(self.cache) >= CACHED:
                self.cache.clear()
            if len(piece) <= CACHED_LENGTH:
                self.cache[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids for text, all four stages: GPT-2's encoding as OpenAI released it."""
        return [i for piece in PATTERN.findall(text) for i in self.encode_piece(piece)]

    def decode(self, ids) -> str:
        """Text for token ids; byte sequences that are not valid UTF-8 become U+FFFD, as in OpenAI's code."""
        try:
            symbols = [self.decoder[int(i)] for i in ids]
        except KeyError as missing:
            raise ValueError(f"token id {missing} is not in the vocabulary of {len(self.decoder)} tokens") from None
        return b"".join(map(self.symbol_bytes, symbols)).decode("utf-8", errors="replace")

    def symbol_bytes(self, symbol: str) -> bytes:
        """A symbol's bytes: each character is one (bytes_to_unicode backwards). A tokenizer.json's added
        token written in other characters (Pythia's runs of spaces) stands for its own text, as in
        tokenizers' ByteLevel decoder."""
        try:
            return bytes(self.char_to_byte[c] for c in symbol)
        except KeyError:
            return symbol.encode("utf-8")
