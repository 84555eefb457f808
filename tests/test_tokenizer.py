"""minigpt's BPE against tiktoken's GPT-2 encoding, both built offline from the same two files; a tokenizer.json
(Pythia's configuration, trained here) against the `tokenizers` library; TransformerLens's to_tokens; the command."""

import functools
import json
import os
import pickle
import random
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import tiktoken
import torch
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

from minigpt import Tokenizer
from minigpt.show import BUNDLED, command
from minigpt.tokenizer import NAMED, PATTERN, explain
from minigpt.tokenizer_json import JsonTokenizer

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
    # "<|endoftext|>" written in a text is the special token, as in Hugging Face's GPT2TokenizerFast (issue 28.8).
    assert ids == theirs.encode(text, allowed_special="all")
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


def test_stage_2s_fast_form_writes_each_byte_as_bytes_to_unicode_does(tokenizers):
    ours, _ = tokenizers
    for b in range(256):
        assert bytes([b]).decode("latin-1").translate(ours.byte_table) == ours.byte_to_char[b]


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


# ---------------------------------------------------------------------------------------------
# A tokenizer.json, read by the same BPE: Pythia's (GPT-NeoX's) configuration, against `tokenizers` itself.

SCRIPTS = [
    "Ça coûte 5 € à Zürich: façade, jalapeño, Øresund, Łódź, İstanbul, straße",
    "Привет, как дела? Съешь же ещё этих мягких французских булок",
    "Καλημέρα κόσμε· ΑΒΓΔ αβγδ ά έ ή ώ",
    "日本語の文章、中文句子。한국어 문장입니다. 「引用」と『二重』",
    "مرحبا بالعالم، هذا نص عربي ١٢٣",
    "हिन्दी देवनागरी, ไทย ภาษา, עברית",
    "emoji 😀😃🤖 👩🏽‍💻 ❤️ 🇯🇵 keycap 1️⃣",
    # NFC composes these (e + combining acute → é; the ohm sign → omega; Hangul jamo → one syllable).
    "combining: e\u0301 vs é, A\u030a vs Å, n\u0303, \u1100\u1161 vs 가, ohm \u2126, ﬁ ligature, Z\u0351\u0352a\u0353",
]
WHITESPACE = [
    "a  b   c    d     e",
    " " * 30 + "thirty spaces, then 25:" + " " * 25 + "end",
    "\t\t  \n   \n\n    indented code\n        more",
    "trailing   ",
    "   ",
    "\u00a0\u00a0 no-break \u3000 ideographic \u2003 em",
    "\r\n\r\n  \r\n",
    "<|endoftext|>  <|endoftext|><|padding|>x <|endoftext|>\n",
]
LONG = " ".join(CORPUS[:-1] + SCRIPTS + WHITESPACE) * 20
NEOX_TEXTS = CORPUS + SCRIPTS + WHITESPACE + [LONG]


def train_neox_like(add_whitespace_tokens: bool = True) -> dict:
    """A fresh copy, for a test to edit, of `trained_neox_like`'s tokenizer.json."""
    return json.loads(trained_neox_like(add_whitespace_tokens))


@functools.cache
def trained_neox_like(add_whitespace_tokens: bool) -> str:
    """A small byte-level BPE trained by `tokenizers` with GPT-NeoX's configuration, as Pythia's tokenizer.json
    holds it: NFC normalizer, ByteLevel pre-tokenizer without a prefix space, ByteLevel post-processor and
    decoder, <|endoftext|> and <|padding|> as ids 0 and 1, and runs of 24 down to 2 spaces as added tokens."""
    from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from tokenizers import Tokenizer as HFTokenizer

    theirs = HFTokenizer(models.BPE())
    theirs.normalizer = normalizers.NFC()
    theirs.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    theirs.post_processor = processors.ByteLevel(trim_offsets=True)
    theirs.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1200,
        special_tokens=["<|endoftext|>", "<|padding|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    theirs.train_from_iterator(CORPUS + SCRIPTS * 5 + WHITESPACE, trainer)
    if add_whitespace_tokens:
        theirs.add_tokens([AddedToken(" " * n, normalized=True) for n in range(24, 1, -1)])
    return theirs.to_str()


def from_json(obj):
    from tokenizers import Tokenizer as HFTokenizer

    return JsonTokenizer.from_tokenizer_json(obj), HFTokenizer.from_str(json.dumps(obj))


@pytest.fixture(scope="module")
def neox():
    return from_json(train_neox_like())


def check_same(ours, theirs, text, round_trip=True):
    """The same ids as tokenizers, decoded to the same text: the text itself, NFC-normalized (unless a prefix
    space was put before it, which decoding keeps)."""
    ids = ours.encode(text)
    assert ids == theirs.encode(text, add_special_tokens=False).ids, repr(text)
    assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=False), repr(text)
    assert ours.decode(ids) == unicodedata.normalize("NFC", text) or not round_trip, repr(text)


def test_the_trained_file_is_laid_out_as_pythias():
    obj = train_neox_like()
    assert obj["normalizer"] == {"type": "NFC"}
    assert obj["pre_tokenizer"]["type"] == "ByteLevel" and obj["pre_tokenizer"]["add_prefix_space"] is False
    assert [t["content"] for t in obj["added_tokens"][:2]] == ["<|endoftext|>", "<|padding|>"]
    assert [t["id"] for t in obj["added_tokens"][2:]] == list(range(len(obj["model"]["vocab"]), len(obj["model"]["vocab"]) + 23))
    assert isinstance(obj["model"]["merges"][0], list)  # tokenizers >= 0.20 writes [left, right]


@pytest.mark.parametrize("text", NEOX_TEXTS, ids=range(len(NEOX_TEXTS)))
def test_tokenizer_json_ids_match_tokenizers_and_round_trip(neox, text):
    check_same(*neox, text)


def test_tokenizer_json_random_unicode_matches_tokenizers(neox):
    """Seeded random strings as in the GPT-2 test, with more spaces (Pythia's whitespace tokens) and special tokens."""
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x4E00, 0x4FFF), (0x1F300, 0x1F64F), (0x9, 0xD), (0x20, 0x20)]
    rng = random.Random(1)
    for _ in range(300):
        text = "".join(chr(rng.randint(*rng.choice(ranges))) for _ in range(rng.randint(1, 60)))
        text += rng.choice(["", "<|endoftext|>", " " * rng.randint(2, 30)])
        check_same(*neox, text)


def test_a_file_written_as_pythias_was_reads_the_same():
    """Pythia's tokenizer.json was written by tokenizers before 0.20: each merge "left right", and no use_regex,
    byte_fallback or ignore_merges fields (tokenizers' defaults: true, false, false). The same ids."""
    obj = train_neox_like()
    obj["model"]["merges"] = [" ".join(pair) for pair in obj["model"]["merges"]]
    for part, field in [("pre_tokenizer", "use_regex"), ("post_processor", "use_regex"), ("decoder", "use_regex"),
                        ("model", "byte_fallback"), ("model", "ignore_merges")]:  # fmt: skip
        del obj[part][field]
    for part in ("post_processor", "decoder"):
        obj[part]["add_prefix_space"] = False
    ours, theirs = from_json(obj)
    for text in SCRIPTS + WHITESPACE:
        check_same(ours, theirs, text)


LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@pytest.mark.parametrize(
    "pre_tokenizer",
    [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": False},
        {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ],
        },
        {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"String": "-"}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            ],
        },
    ],
    ids=["prefix_space", "no_regex", "llama3_split", "split_string_then_byte_level"],
)
def test_other_pre_tokenizers_match_tokenizers(pre_tokenizer):
    obj = train_neox_like()
    obj["pre_tokenizer"] = pre_tokenizer
    ours, theirs = from_json(obj)
    short = [text for text in CORPUS + SCRIPTS + WHITESPACE if len(text) < 200]  # no regex: one piece per text
    for text in short + ["a-b--c - d", "<|endoftext|>Hello", "x<|endoftext|> y"]:
        check_same(ours, theirs, text, round_trip='"add_prefix_space": true' not in json.dumps(pre_tokenizer))


def test_added_token_flags_match_tokenizers():
    """lstrip and rstrip take the whitespace around a token; single_word keeps it out of longer words; a
    normalized token is found after NFC (so "A" + combining ring finds "Å"), a raw one before."""
    from tokenizers import AddedToken
    from tokenizers import Tokenizer as HFTokenizer

    theirs = HFTokenizer.from_str(json.dumps(train_neox_like()))
    theirs.add_special_tokens([AddedToken("[MASK]", lstrip=True, rstrip=True), AddedToken("<raw\u0301>", normalized=False)])
    theirs.add_tokens([AddedToken("cat", single_word=True), AddedToken("Å"), AddedToken("ing", rstrip=True)])
    ours, theirs = from_json(json.loads(theirs.to_str()))
    for text in [
        "a  [MASK]  b",
        "[MASK][MASK]x",
        "   [MASK]",
        "cat concat cats _cat cat_ (cat) écat cat",
        "cat\n",
        "x\ncat\n\n",
        "A\u030a and Å, and <raw\u0301> vs <raw\u0301> composed",
        "sing  along, ing\tover ing",
        "[MASK]ing   [MASK]",
        "sing  [MASK]  sing",
    ]:
        check_same(ours, theirs, text, round_trip=False)  # lstrip and rstrip drop the whitespace they take


def test_gpt2_converted_to_tokenizer_json_matches_the_gpt2_path(tokenizers, vocab_files):
    """GPT-2's own vocab.json and merges.txt, made a tokenizer.json by `tokenizers`: without added tokens, the
    same ids as tiktoken's ordinary encoding (so "<|endoftext|>" is plain characters there). With <|endoftext|>
    as a special added token (as Hugging Face's gpt2 tokenizer.json has it), that text becomes id 50256, as
    `tokenizers` gives it, and the ids are minigpt's GPT-2 path's on every test string."""
    from tokenizers import AddedToken, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    gpt2, tiktoken_gpt2 = tokenizers
    vocab, merges = vocab_files
    theirs = HFTokenizer(models.BPE.from_file(str(vocab), str(merges)))
    theirs.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    theirs.decoder = decoders.ByteLevel()
    ours = JsonTokenizer.from_tokenizer_json(json.loads(theirs.to_str()))
    for text in CORPUS + SCRIPTS + WHITESPACE:
        assert ours.encode(text) == tiktoken_gpt2.encode_ordinary(text) == theirs.encode(text).ids, repr(text)
        assert ours.decode(gpt2.encode(text)) == text
    theirs.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    ours = JsonTokenizer.from_tokenizer_json(json.loads(theirs.to_str()))
    for text in CORPUS + SCRIPTS + WHITESPACE:
        assert ours.encode(text) == gpt2.encode(text) == theirs.encode(text).ids, repr(text)
    assert ours.encode("a<|endoftext|>b") == [gpt2.encode("a")[0], 50256, gpt2.encode("b")[0]]
    assert ours.eot == ours.bos == ours.pad == 50256


def edited(path: str, value):
    """A NeoX-like tokenizer.json with one field (a dotted path) set to value."""
    obj = train_neox_like(add_whitespace_tokens=False)
    *parents, last = path.split(".")
    node = obj
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    node[int(last) if last.isdigit() else last] = value
    return obj


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("normalizer", {"type": "Lowercase"}, 'normalizer {"type": "Lowercase"} is not implemented'),
        ("normalizer", {"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Strip"}]}, "normalizer[1] {"),
        ("pre_tokenizer", {"type": "Whitespace"}, 'pre_tokenizer {"type": "Whitespace"} is not implemented'),
        ("pre_tokenizer", None, "pre_tokenizer null is not implemented"),
        ("pre_tokenizer", {"type": "Sequence", "pretokenizers": [{"type": "Digits"}, {"type": "ByteLevel"}]}, "pretokenizers[0]"),
        ("model.type", "WordPiece", 'model.type "WordPiece" is not implemented'),
        ("model.dropout", 0.1, "model.dropout 0.1 is not implemented"),
        ("model.unk_token", "<unk>", 'model.unk_token "<unk>"'),
        ("model.ignore_merges", "yes", 'model.ignore_merges "yes" is not implemented'),  # true is read (Llama 3's)
        ("post_processor", {"type": "TemplateProcessing"}, 'post_processor {"type": "TemplateProcessing"}'),
        ("decoder", None, "decoder null is not implemented"),
        ("truncation", {"max_length": 8}, "truncation {"),
        ("added_tokens.0.id", 5, "added_tokens[0] '<|endoftext|>' has id 5; tokenizers gives it 0"),
        ("added_tokens.1.weird", True, "added_tokens[1].weird true is not implemented"),
        ("model.merges.0", "a b c", "model.merges[0] 'a b c' is not two symbols"),
    ],
)
def test_what_is_not_implemented_is_refused_in_one_line(path, value, message):
    with pytest.raises(ValueError, match=re.escape(message)) as refused:
        JsonTokenizer.from_tokenizer_json(edited(path, value))
    assert "\n" not in str(refused.value)


def test_explain_shows_added_tokens_and_normalizing_first(neox):
    ours, _ = neox
    text = "<|endoftext|>Caf\u0065\u0301     ok"
    shown = explain(ours, text)
    assert shown.endswith(f"token ids ({len(ours.encode(text))}): {ours.encode(text)}")
    assert "0. Added tokens, found first and given their ids; the text between them normalized (NFC):" in shown
    assert re.search(r"^   '<\|endoftext\|>' +added token 0$", shown, re.M)
    assert re.search(rf"^   '     ' +added token {ours.id_of(' ' * 5)}$", shown, re.M)  # 5 spaces: one token
    assert re.search(r"^   'Café' +text$", shown, re.M)  # composed by NFC before BPE
    assert r"normalizing 'Cafe\u0301     ok' gives 'Caf\xe9     ok'" in shown


# ---------------------------------------------------------------------------------------------
# TransformerLens's to_tokens and to_string.


def test_to_tokens_prepends_bos_and_pads_on_the_right(tokenizers):
    ours, _ = tokenizers
    one = ours.to_tokens("Hello world")
    assert one.dtype == torch.long and one.tolist() == [[50256, *ours.encode("Hello world")]]
    assert ours.to_tokens("Hello world", prepend_bos=False).tolist() == [ours.encode("Hello world")]
    batch = ours.to_tokens(["Hello world, again", "Hi"])
    long, short = ours.encode("Hello world, again"), ours.encode("Hi")
    assert batch.tolist() == [[50256, *long], [50256, *short] + [ours.pad] * (len(long) - len(short))]
    assert ours.to_string(one) == ["<|endoftext|>Hello world"] and ours.to_string(one[0]) == "<|endoftext|>Hello world"
    assert ours.to_string(ours.encode("Hello")) == ours.decode(ours.encode("Hello")) == "Hello"
    with pytest.raises(ValueError, match="non-empty list"):
        ours.to_tokens([])


def test_right_padding_leaves_each_rows_real_positions_as_alone(tokenizers):
    """Why to_tokens pads on the right: under the causal mask, the real tokens' logits equal the unpadded run's."""
    from minigpt import GPT2, Config
    from training.train import init_weights

    ours, _ = tokenizers
    model = init_weights(GPT2(Config.sized(2, 32, 4, n_ctx=64)), seed=0).eval()
    batch = ours.to_tokens(["A much longer prompt than the other one", "Short"])
    alone = ours.to_tokens("Short")
    with torch.no_grad():
        torch.testing.assert_close(model(batch)[1, : alone.shape[1]], model(alone)[0], rtol=1e-5, atol=1e-5)


def test_without_a_bos_token_to_tokens_says_so():
    ours = JsonTokenizer.from_tokenizer_json(train_neox_like(), bos_token=None)
    assert ours.bos is None and ours.to_tokens("hi", prepend_bos=False).tolist() == [ours.encode("hi")]
    with pytest.raises(ValueError, match="no BOS token"):
        ours.to_tokens("hi")
    with pytest.raises(ValueError, match="no padding token"):
        ours.to_tokens(["hi", "hello there"], prepend_bos=False)
    with pytest.raises(ValueError, match="'<s>' is neither an added token nor in the vocabulary"):
        JsonTokenizer.from_tokenizer_json(train_neox_like(), bos_token="<s>")


def test_pythias_bos_and_padding_are_id_0(neox):
    ours, _ = neox
    assert ours.eot == ours.bos == ours.pad == 0
    short, long = ours.encode("x"), ours.encode("xx yy")
    assert ours.to_tokens(["x", "xx yy"]).tolist() == [[0, *short] + [0] * (len(long) - len(short)), [0, *long]]


# ---------------------------------------------------------------------------------------------
# The command, and the package's layering.

REPO = Path(__file__).parent.parent


def test_the_readmes_command_shows_the_whitespace_alternatives_and_imports_no_weights():
    """README reading-path step 3, run by bash as a reader would: the newlines reach the command. And minigpt ←
    weights: the command finds the bundled files by path (BUNDLED), so Python's import log never names weights."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    (line,) = [m.group(1) for m in re.finditer(r"`(python -m minigpt\.show [^`]+)`", readme)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    line = line.replace("python", f"{sys.executable} -X importtime", 1)
    run = subprocess.run(["bash", "-c", line], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert re.search(r"^   '\\n' +whitespace_before_next$", run.stdout, re.M)
    assert re.search(r"^   '\\n' +whitespace$", run.stdout, re.M)
    assert "backslash" not in run.stdout
    imported = [line.split("|")[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")]
    assert "regex" in imported  # the import log is there to read
    assert not [name for name in imported if name.split(".")[0] == "weights"]
    assert (BUNDLED / "vocab.json").is_file() and (BUNDLED / "merges.txt").is_file()


def test_the_command_says_when_it_got_a_backslash_and_an_n():
    assert command(["It's\\n\\nHello"]).startswith('note: the text holds a backslash and an "n", not a newline')
    assert not command(["It's\n\nHello"]).startswith("note")


def test_the_command_reads_a_tokenizer_json(tmp_path, neox):
    ours, _ = neox
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(train_neox_like()), encoding="utf-8")
    for given in (path, tmp_path):  # the file, or a folder holding it (and no vocab.json)
        shown = command(["--tokenizer", str(given), "Hello  world"])
        assert shown.endswith(f"token ids ({len(ours.encode('Hello  world'))}): {ours.encode('Hello  world')}")


def test_a_tokenizer_survives_pickling_for_another_process(neox):
    ours, _ = neox
    text = "<|endoftext|>Hello   world, δοκιμή\n"
    again = pickle.loads(pickle.dumps(ours))
    assert again.encode(text) == ours.encode(text) and explain(again, text) == explain(ours, text)
    assert "whitespace_before_next" in explain(again, text)


# ---------------------------------------------------------------------------------------------
# The fast merge, encode's max_tokens, to_str_tokens, and "<|endoftext|>" in a text against Hugging Face.


def test_the_fast_merge_is_the_last_step_of_merge_steps(tokenizers):
    """bpe.merge (heap and linked list) against bpe.merge_steps (OpenAI's loop, the definition), on real ranks
    and on a small made-up table where equal pairs overlap ("aaa") and merges chain."""
    from minigpt.bpe import merge, merge_steps

    ours, _ = tokenizers
    rng = random.Random(2)
    pieces = [ours.chars(p) for text in CORPUS for p in PATTERN.findall(text)]
    pieces += ["".join(rng.choice("aabbe ") for _ in range(rng.randint(1, 80))) for _ in range(200)]
    for piece in pieces:
        *_, (slow, _) = merge_steps(ours.ranks, piece)
        assert merge(ours.ranks, piece) == slow, repr(piece)
    made_up = {("a", "a"): 0, ("b", "a"): 1, ("aa", "a"): 2, ("aa", "aa"): 3, ("b", "aa"): 4, ("ba", "aaaa"): 5}
    for piece in ["a" * n for n in range(1, 12)] + ["baaaaa", "abaaaab", "bbaaba", ""]:
        *_, (slow, _) = merge_steps(made_up, piece)
        assert merge(made_up, piece) == slow, piece


def test_a_64000_letter_word_matches_tokenizers_in_about_a_second(vocab_files):
    """Issue 26.3: merge_steps took 158 s and 1 GB here. Timing is printed, not asserted (a shared CPU)."""
    import time

    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers

    vocab, merges = vocab_files
    ours = Tokenizer.from_strings(json.loads(vocab.read_text(encoding="utf-8")), merges.read_text(encoding="utf-8"))
    theirs = HFTokenizer(models.BPE.from_file(str(vocab), str(merges)))
    theirs.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    rng = random.Random(3)
    for text in [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(64_000)),
        "a" * 64_000,
    ]:
        start = time.perf_counter()
        ids = ours.encode(text)
        print(f"64,000 letters ({text[:3]}…): {time.perf_counter() - start:.2f} s, {len(ids)} tokens")
        assert ids == theirs.encode(text).ids


def test_max_tokens_gives_the_first_ids_of_the_whole_texts(tokenizers, neox):
    """encode(text, max_tokens=k) == encode(text)[:k] for every k, also where the cut falls in a run of
    whitespace, inside an added token's neighbourhood, or in a piece of many tokens."""
    gpt2, _ = tokenizers
    texts = [CORPUS[5], CORPUS[13], "<|endoftext|>a<|endoftext|>  b\n\n\n c" + "x" * 40, WHITESPACE[1], WHITESPACE[7]]
    for ours in (gpt2, neox[0]):
        for text in texts:
            whole = ours.encode(text)
            for k in range(len(whole) + 2):
                assert ours.encode(text, max_tokens=k) == whole[:k], (text, k)


def test_truncate_tokenizes_only_what_the_context_needs(tokenizers, tmp_path):
    """Issue 26.3: --truncate cut a prompt after tokenizing all of it (a 50 MB line: minutes). Now the pieces
    BPE sees stop just past the context, and the ids are those of the whole prompt, cut."""
    from analysis import inputs
    from minigpt import Config

    ours, _ = tokenizers
    text = "The residual stream grows, layer after layer. " * 20_000
    path = tmp_path / "long.txt"
    path.write_text(text + "\nshort\n", encoding="utf-8")
    prompts, cfg = inputs.read_prompts(path), Config.sized(1, 8, 2, n_ctx=64)
    seen = []
    counting = pickle.loads(pickle.dumps(ours))
    counting.encode_piece = lambda piece: seen.append(piece) or Tokenizer.encode_piece(counting, piece)
    tokens, truncated = inputs.tokenize(prompts, counting, cfg, "test", truncate=True)
    assert truncated == 1 and tokens[0].tolist() == [ours.bos, *ours.encode(text.strip())[:63]]
    assert tokens[1].tolist() == [ours.bos, *ours.encode("short")]
    assert len(seen) <= 70  # 63 tokens' pieces and the one past them, then "short"


def hugging_faces_gpt2(directory: Path, vocab_files):
    """GPT2TokenizerFast read from a folder holding GPT-2's vocab.json and merges.txt, as TransformerLens loads it."""
    from transformers import GPT2TokenizerFast

    for source, name in zip(vocab_files, ("vocab.json", "merges.txt")):
        (directory / name).write_bytes(source.read_bytes())
    return GPT2TokenizerFast.from_pretrained(directory)


def test_to_str_tokens_as_transformerlens(tokenizers, vocab_files, tmp_path):
    """Each token decoded alone, as TransformerLens's to_str_tokens (through the tokenizer's batch_decode)."""
    ours, _ = tokenizers
    hf = hugging_faces_gpt2(tmp_path, vocab_files)
    text = "Hello wörld 😀 <|endoftext|>ok"
    ids = ours.encode(text)
    expected = hf.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False)
    assert ours.to_str_tokens(text) == ["<|endoftext|>", *expected]
    assert ours.to_str_tokens(text, prepend_bos=False) == expected
    assert "\ufffd" in expected  # the emoji's bytes are spread over tokens
    assert ours.to_str_tokens(ids) == ours.to_str_tokens(torch.tensor(ids)) == ours.to_str_tokens(torch.tensor([ids])) == expected
    assert ours.to_str_tokens(["Hi", "Hello there"]) == [["<|endoftext|>", "Hi"], ["<|endoftext|>", "Hello", " there"]]
    with pytest.raises(ValueError, match=r"\[pos\] or \[1, pos\]; found shape \[2, 3\]"):
        ours.to_str_tokens(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="a text, a list of texts, or token ids; found float"):
        ours.to_str_tokens(1.5)


def test_end_of_text_written_in_a_text_is_one_token_on_both_paths_as_in_hugging_face(vocab_files, tmp_path):
    """Issue 28.8: GPT2TokenizerFast (what TransformerLens calls) matches "<|endoftext|>" in a text as the special
    token 50256. minigpt's vocab.json path (weights.read_tokenizer, from_strings) and tokenizer.json path
    (Hugging Face's own tokenizer.json for gpt2) give the same ids."""
    import weights

    vocab, merges = vocab_files
    hf = hugging_faces_gpt2(tmp_path, vocab_files)
    from_files = weights.read_tokenizer(tmp_path)
    from_strings = Tokenizer.from_strings(json.loads(vocab.read_text(encoding="utf-8")), merges.read_text(encoding="utf-8"))
    from_json = JsonTokenizer.from_tokenizer_json(json.loads(hf.backend_tokenizer.to_str()))
    for text in [
        "<|endoftext|>",
        "a<|endoftext|>b",
        "x <|endoftext|> y<|endoftext|><|endoftext|>\n",
        "<|endoftext|  <|end",
        CORPUS[20],
    ]:
        expected = hf(text)["input_ids"]
        assert from_files.encode(text) == from_strings.encode(text) == from_json.encode(text) == expected, repr(text)
    assert hf("a<|endoftext|>b")["input_ids"] == [64, 50256, 65]


# ---------------------------------------------------------------------------------------------
# Hostile and broken tokenizer files (issue 27.9–11): one line naming the file and the field, never a traceback.


def split_then_byte_level(pattern) -> dict:
    split = {"type": "Split", "pattern": pattern, "behavior": "Isolated"}
    return {"type": "Sequence", "pretokenizers": [split, {"type": "ByteLevel"}]}


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("model", "BPE", 'model is "BPE"; expected an object'),
        ("normalizer", "NFC", 'normalizer is "NFC"; expected an object or null'),
        ("normalizer", {"type": "Sequence", "normalizers": "NFC"}, 'normalizer.normalizers is "NFC"; expected a list'),
        ("decoder", "ByteLevel", 'decoder is "ByteLevel"; expected an object or null'),
        ("post_processor", ["ByteLevel"], 'post_processor is ["ByteLevel"]; expected an object or null'),
        ("pre_tokenizer", "ByteLevel", 'pre_tokenizer is "ByteLevel"; expected an object or null'),
        ("pre_tokenizer", {"type": "Sequence", "pretokenizers": 3}, "pre_tokenizer.pretokenizers is 3; expected a list"),
        (
            "pre_tokenizer",
            {
                "type": "Sequence",
                "pretokenizers": [{"type": "Split", "pattern": {"Regex": "(a"}, "behavior": "Isolated"}, {"type": "ByteLevel"}],
            },
            'pre_tokenizer.pretokenizers[0].pattern.Regex "(a" is not a regex (missing )',
        ),
        (
            "pre_tokenizer",
            {
                "type": "Sequence",
                "pretokenizers": [{"type": "Split", "pattern": {"Regex": 5}, "behavior": "Isolated"}, {"type": "ByteLevel"}],
            },
            'pre_tokenizer.pretokenizers[0].pattern is {"Regex": 5}; expected {"Regex": a regex} or {"String": a text}',
        ),
        (
            "pre_tokenizer",
            {"type": "Sequence", "pretokenizers": ["Split", {"type": "ByteLevel"}]},
            "pre_tokenizer.pretokenizers[0] is",
        ),
        ("added_tokens", {"<s>": 0}, 'added_tokens is {"<s>": 0}; expected a list'),
        ("added_tokens.0", "<|endoftext|>", 'added_tokens[0] is "<|endoftext|>"; expected an object'),
        ("added_tokens.0", {"id": 0, "special": True}, "added_tokens[0].content is null; expected the token's text, a string"),
        ("added_tokens.0.content", 7, "added_tokens[0].content is 7; expected the token's text, a string"),
        ("added_tokens.0.special", "yes", 'added_tokens[0].special is "yes"; expected true or false'),
        ("added_tokens.0.id", "0", "added_tokens[0] '<|endoftext|>' has id \"0\"; tokenizers gives it 0"),
        ("model.merges.0", 7, "model.merges[0] 7 is not two symbols whose merge is a symbol"),
        ("model.merges.0", ["a"], "model.merges[0] ['a'] is not two symbols"),
        ("model.merges.0", [1, 2], "model.merges[0] [1, 2] is not two symbols"),
        ("model.vocab.!", "5", 'model.vocab["!"] is "5"; expected an id from 0 to 2147483647'),
        ("model.vocab.!", 10**30, 'model.vocab["!"] is 1000000000000000000000000000000; expected an id from 0 to'),
        ("model.vocab.!", -1, 'model.vocab["!"] is -1; expected an id'),
    ],
)
def test_a_malformed_tokenizer_json_is_refused_in_one_line_naming_the_field(path, value, message):
    with pytest.raises(ValueError, match=re.escape(f"tokenizer.json: {message}")) as refused:
        JsonTokenizer.from_tokenizer_json(edited(path, value))
    assert "\n" not in str(refused.value)


def test_nesting_too_deep_is_refused_in_one_line(tmp_path):
    """Deeply nested JSON raises RecursionError in Python's parser, and a Sequence in a Sequence … in the reader."""
    import weights

    nested: dict = {"type": "NFC"}
    for _ in range(5_000):
        nested = {"type": "Sequence", "normalizers": [nested]}
    obj = train_neox_like(add_whitespace_tokens=False) | {"normalizer": nested}
    with pytest.raises(ValueError, match=r"^tokenizer\.json: nested too deeply to read"):
        JsonTokenizer.from_tokenizer_json(obj)
    path = tmp_path / "tokenizer.json"
    path.write_text("[" * 50_000 + "]" * 50_000)
    with pytest.raises(
        weights.CheckpointError,
        match=rf"^{re.escape(str(path))}: not valid JSON \(nested deeper than Python's JSON reader allows\)$",
    ):
        weights.read_tokenizer(tmp_path)
    run = subprocess.run(
        [sys.executable, "-m", "minigpt.show", "--tokenizer", str(path), "hi"], cwd=REPO, capture_output=True, text=True
    )
    assert run.returncode == 1 and run.stderr.strip().splitlines() == [
        f"python -m minigpt.show: {path}: JSON nested too deeply to read"
    ]


def test_weights_names_the_tokenizer_json_and_its_field(tmp_path):
    import weights

    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(edited("decoder", "ByteLevel")), encoding="utf-8")
    with pytest.raises(weights.CheckpointError) as refused:
        weights.read_tokenizer(tmp_path)
    assert str(refused.value) == f'{path}: tokenizer.json: decoder is "ByteLevel"; expected an object or null'


def test_a_merge_producing_a_symbol_vocab_json_lacks_is_refused_naming_its_line(vocab_files, tmp_path):
    import weights

    vocab, merges = vocab_files
    symbols = json.loads(vocab.read_text(encoding="utf-8"))
    del symbols["Ġthe"]
    (tmp_path / "vocab.json").write_text(json.dumps(symbols), encoding="utf-8")
    (tmp_path / "merges.txt").write_bytes(merges.read_bytes())
    number = merges.read_text(encoding="utf-8").splitlines().index("Ġt he") + 1
    with pytest.raises(weights.CheckpointError) as refused:
        weights.read_tokenizer(tmp_path)
    assert (
        str(refused.value)
        == f"{tmp_path / 'merges.txt'}: line {number} ('Ġt he') needs the symbol 'Ġthe', which vocab.json lacks"
    )


@pytest.mark.parametrize("kind", ["vocab.json", "tokenizer.json"])
def test_a_vocabulary_larger_than_the_embedding_is_refused_at_load(kind, tmp_path, capsys):
    """Issue 27.11: GPT-2's 50,257 tokens with an embedding of 1,000 rows (a config.json and weights of their own)
    failed in keep_tokens or study.py; now the command refuses at load, naming both numbers."""
    from analysis import growth
    from benchmarks.checkpoints import config_json, official_state, save_weights

    directory = tmp_path / "model"
    directory.mkdir()
    save_weights(official_state(2, 64, 4, d_vocab=1000, n_ctx=64), directory)
    (directory / "config.json").write_text(json.dumps(config_json(2, 64, 4, d_vocab=1000, n_ctx=64)))
    if kind == "vocab.json":
        for source, name in zip(gpt2_files(), ("vocab.json", "merges.txt")):
            (directory / name).write_bytes(source.read_bytes())
        largest = "'<|endoftext|>' has id 50256"
    else:
        (directory / "tokenizer.json").write_text(trained_neox_like(True), encoding="utf-8")
        largest = f"'  ' has id {len(train_neox_like()['model']['vocab']) + 22}"  # the last of the 23 runs of spaces
    assert growth.main(["--model", str(directory), "--out", str(tmp_path / "out")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"{directory / kind}: token {largest}, past the model's embedding of 1000 rows (config.json's vocab_size 1000)" in line


def gpt2_files():
    from benchmarks.checkpoints import gpt2_vocab_files

    return gpt2_vocab_files()


def test_explain_shows_the_merges_of_a_short_piece_and_only_the_result_of_a_long_one(tokenizers):
    """merge_steps costs n² for a piece of n characters: a 5,000-letter word is shown merged, not step by step."""
    ours, _ = tokenizers
    shown = explain(ours, "x" * 5_000 + " short")
    assert re.search(r"\(5000 characters: steps not shown\)$", shown, re.M)
    assert re.search(r"^   Ġ s h o r t +start$", shown, re.M)
    assert shown.endswith(f"token ids ({len(ours.encode('x' * 5_000 + ' short'))}): {ours.encode('x' * 5_000 + ' short')}")
