"""minigpt's BPE against tiktoken's GPT-2 encoding, both built offline from the same two files."""

import json
import random
import re

import pytest
import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

from minigpt import Tokenizer
from minigpt.tokenizer import NAMED, PATTERN, explain

CORPUS = [
    "Hello world",
    "",
    " ",
    "   leading and trailing spaces   ",
    "tabs\tand\t\tmore\t\t\ttabs",
    "newlines\n\nand\n\n\n\nruns\r\nof CRLF\r\n",
    "mixed \t \n whitespace \n\t  runs  \n",
    "I'm sure you'll see they've said it's what we'd do",
    "I'M SURE YOU'LL SEE THEY'VE SAID IT'S WHAT WE'D DO",
    "Don't DON'T don’t (curly apostrophe)",
    "naïve café résumé coöperate Zoë",
    "e\u0301 a\u0300 n\u0303 combining marks: Z\u0351\u0352a\u0353l\u0354g\u0355o\u0356",
    "日本語のテキストと中文文本和한국어 텍스트",
    "emoji 😀🎉👩‍👩‍👧‍👦 flags 🇬🇧🇫🇷 skin tones 👍🏽",
    "math ∑∫∂ √2 ≈ 1.41421356, π = 3.14159, 1e-5, -42, 1,000,000 and 007",
    "Ελληνικά, русский текст, עברית, العربية",
    "def f(x):\n    return {'a': [1, 2, 3], \"b\": x ** 2}  # comment\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }\n\tif (x != y && z >= 0) return -1;",
    '<html><body class="main">&amp; &lt;tag&gt;</body></html>',
    "URLs https://example.com/path?q=1&r=two#frag and emails a.b@c.de",
    "<|endoftext|> inside ordinary text",
    "\x00\x01 control \x7f bytes \u200b zero width \ufeff bom",
    "The quick brown fox jumps over the lazy dog. " * 200,
]


@pytest.fixture(scope="module")
def tokenizers(vocab_files):
    vocab, merges = vocab_files
    ours = Tokenizer.from_strings(json.loads(vocab.read_text(encoding="utf-8")), merges.read_text(encoding="utf-8"))
    ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(merges), encoder_json_file=str(vocab))
    pattern = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    theirs = tiktoken.Encoding("gpt2-offline", pat_str=pattern, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256})
    return ours, theirs


@pytest.mark.parametrize("text", CORPUS, ids=range(len(CORPUS)))
def test_ids_match_tiktoken_and_round_trip(tokenizers, text):
    ours, theirs = tokenizers
    ids = ours.encode(text)
    assert ids == theirs.encode_ordinary(text)
    assert ours.decode(ids) == text


def test_random_unicode_matches_tiktoken(tokenizers):
    """Seeded random strings drawn from ASCII, Latin, CJK, emoji, combining marks and whitespace."""
    ours, theirs = tokenizers
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x4E00, 0x4FFF), (0x1F300, 0x1F64F), (0x9, 0xD)]
    rng = random.Random(0)
    for _ in range(300):
        text = "".join(chr(rng.randint(*rng.choice(ranges))) for _ in range(rng.randint(1, 60)))
        assert ours.encode(text) == theirs.encode_ordinary(text), repr(text)
        assert ours.decode(ours.encode(text)) == text


def test_end_of_text_and_decoding_errors(tokenizers):
    ours, _ = tokenizers
    assert ours.eot == 50256 and ours.decode([50256]) == "<|endoftext|>"
    with pytest.raises(ValueError, match="token id 50257 is not in the vocabulary of 50257 tokens"):
        ours.decode([50257])


def test_explain_shows_every_stage_and_ends_with_the_ids_encode_gives(tokenizers):
    ours, _ = tokenizers
    text = "It's 2024!\n\nHello  world"
    shown = explain(ours, text)
    ids = ours.encode(text)
    assert shown.endswith(f"token ids ({len(ids)}): {ids}")
    # Stage 1: the regex's pieces, and which alternative matched each; a newline run keeps its last newline apart.
    for piece, alternative in [
        ("It", "letters"),
        ("'s", "contraction"),
        (" 2024", "digits"),
        ("!", "symbols"),
        ("\n", "whitespace_before_next"),
        ("\n", "whitespace"),
        ("Hello", "letters"),
        (" ", "whitespace_before_next"),
        (" world", "letters"),
    ]:
        assert re.search(rf"^   {re.escape(repr(piece))} +{alternative}$", shown, re.M), (piece, alternative)
    assert "bytes 20 77 6f 72 6c 64 → 'Ġworld'" in shown  # stage 2: each byte as a printable character
    assert re.search(r"^   Ġ w o r l d +start$", shown, re.M)  # stage 3 begins from single characters ...
    assert re.search(r"^   Ġworld +merge 'Ġw\w*' \+ '\w*ld' \(rank \d+\)$", shown, re.M)  # ... and ends in one symbol


def test_the_named_regex_is_gpt2s_pattern_with_groups():
    assert PATTERN.pattern == r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    for text in CORPUS:
        assert [m.group() for m in NAMED.finditer(text)] == PATTERN.findall(text)
