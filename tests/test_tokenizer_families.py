"""The tokenizer.json files of today's families, read by minigpt's hand-written reader and id-exact against
`tokenizers` itself: Llama 3's (its Split regex, ignore_merges, 256 special tokens, a post-processor that puts
<|begin_of_text|> first) and Qwen 2.5's and 3's (NFC, its Split regex, special and non-special added tokens, no
BOS). Each file is tiny, trained here by `tokenizers` and laid out as the released one; nothing is downloaded.
The SentencePiece-style files of Gemma, Llama 2, TinyLlama and Mistral v0.1 are refused in one line."""

import functools
import json
import random
import re
from pathlib import Path

import pytest

import weights
from minigpt.show import command
from minigpt.tokenizer import explain
from minigpt.tokenizer_json import JsonTokenizer

# The Split regexes as the released tokenizer.json files hold them (meta-llama/Llama-3.2-1B, Qwen/Qwen2.5-0.5B,
# Qwen/Qwen3-0.6B): GPT-2's, except that contractions match in any case, a letter run may take one symbol
# before it, digits come 3 (Llama 3) or 1 (Qwen) at a time, and a symbol run takes the newlines after it.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

# Llama 3.1's and 3.2's 256 special tokens, ids 128000 to 128255 in the release (here: after the tiny vocabulary).
LLAMA3_SPECIAL = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eom_id|>", "<|eot_id|>", "<|python_tag|>", *(f"<|reserved_special_token_{n}|>" for n in range(3, 248)),
]  # fmt: skip
# Qwen 2.5's added tokens, ids 151643 to 151664 in the release: the first 14 special, the rest not; Qwen 3 adds 4
# more, not special either.
QWEN_SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
]  # fmt: skip
QWEN25_ADDED = ["<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
                "<|repo_name|>", "<|file_sep|>"]  # fmt: skip
QWEN3_ADDED = [*QWEN25_ADDED, "<tool_response>", "</tool_response>", "<think>", "</think>"]

TEXTS = [
    "Héllo wörld: naïve café, résumé, Zoë, façade, jalapeño, Øresund, Łódź, İstanbul, straße, ÀÉÎÕÜ",
    "日本語の文章、中文句子。한국어 문장입니다. 「引用」と『二重』",
    "مرحبا بالعالم، هذا نص عربي ١٢٣٤٥",
    "हिन्दी देवनागरी लिपि में लिखा गया पाठ है। १२३४५६७",
    "emoji 😀🎉 family 👩‍👩‍👧‍👦 coder 👩🏽‍💻 flag 🇬🇧🇯🇵 thumbs 👍🏽 keycap 1️⃣ heart ❤️",
    "digits 1234567 and 12 345 6789012345, 3.14159, 1,000,000, 007, x2y34z567",
    "IT'S it's It'S iT's WE'LL we'll We'Ll THEY'RE they're I'M i'm I'D YOU'VE don't DON'T 'S 'll 'LL 's",
    "tabs\tand\t\tmore\t\t\ttabs, newlines\n\nand\n\n\n\nruns\r\nof CRLF\r\n\r\n, mixed \t \n whitespace \n\t  runs  \n",
    "a  b   c    d     e      f       g",
    "trailing spaces   ",
    "   leading spaces",
    "ends with newlines\n\n",
    "\n\n\n",
    " ",
    "",
    "combining: e\u0301 vs é, A\u030a vs Å, n\u0303, \u1100\u1161 vs 가, ohm \u2126, ﬁ ligature, Z\u0351a\u0353",
    "def f(x):\n    return {'a': [1, 2, 3], \"b\": x ** 2}  # comment\n\tif (a != b && c >= 0) { sum += a[i]; }\n",
    "punctuation!!! ??? ... --- (((x))) \"quoted\" 'single' `tick` <html>&amp;</html> https://example.com/a?b=1",
    "\x00\x01 control \x7f bytes \u200b zero width \ufeff bom \u00a0no-break\u3000ideographic",
    "contractions before letters: 'Sam 'Tim 'Dan 'Mia 'Rex 'Vera 'Lloyd O'SAM I'Mia we'Dan 'sam 'tim 'LLOYD",
]
LONG = " ".join(TEXTS) * 8  # several thousand characters, every script and whitespace run in one text
# Words the Llama 3-like file holds whole, as tiktoken's vocabulary does, though its merges build them otherwise.
WHOLE_WORDS = [" naïve", " café", " résumé", " Zoë", " straße", " 日本語"]


@functools.cache
def trained(normalizer: bool) -> str:
    """A byte-level BPE trained by `tokenizers` on a few KB of the texts above, with Llama 3's Split regex before
    ByteLevel (use_regex false), and NFC first if asked (Qwen's). Both vocabularies descend from tiktoken's cl100k,
    trained with digits 3 at a time: Qwen's has "123" as one token too, and only its regex cuts digits 1 at a time."""
    from tokenizers import Regex, models, normalizers, pre_tokenizers, trainers
    from tokenizers import Tokenizer as HFTokenizer

    theirs = HFTokenizer(models.BPE())
    if normalizer:
        theirs.normalizer = normalizers.NFC()
    theirs.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(LLAMA3_SPLIT), "isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    trainer = trainers.BpeTrainer(vocab_size=800, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    names = "\n".join(["Sam", "Tim", "Dan", "Mia", "Rex", "Vera", "Lloyd"] * 20)  # merged early: "Sa" before "'S"
    theirs.train_from_iterator(TEXTS * 3 + [t[::-1] for t in TEXTS] + [names], trainer)
    return theirs.to_str()


def byte_level(text: str) -> str:
    from minigpt.bpe import bytes_to_unicode

    chars = bytes_to_unicode()
    return "".join(chars[b] for b in text.encode("utf-8"))


def released(obj: dict, tokens: list[str], special: bool, setup) -> dict:
    """obj with added tokens as the releases list them (normalized false, after the vocabulary), and the
    post-processor and decoder set by `setup`, all written by `tokenizers`."""
    from tokenizers import AddedToken
    from tokenizers import Tokenizer as HFTokenizer

    theirs = HFTokenizer.from_str(json.dumps(obj))
    (theirs.add_special_tokens if special else theirs.add_tokens)(
        [AddedToken(t, normalized=False, special=special) for t in tokens]
    )
    setup(theirs)
    return json.loads(theirs.to_str())


@functools.cache
def llama3_json(newer: bool) -> str:
    """Llama 3's tokenizer.json: no normalizer; Split then ByteLevel(add_prefix_space false, trim_offsets true,
    use_regex false); BPE with ignore_merges true and merges written "left right"; 256 special tokens; a
    TemplateProcessing putting <|begin_of_text|> first (newer files, Llama 3.2's: after a ByteLevel one)."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, processors

    obj, merged = json.loads(trained(False)), HFTokenizer.from_str(trained(False))
    vocab = obj["model"]["vocab"]
    # As in tiktoken's vocabulary, some symbols that the merges do not build: every other piece of the texts
    # that the merges leave in several symbols, and WHOLE_WORDS.
    pieces = [piece for text in TEXTS for piece, _ in merged.pre_tokenizer.pre_tokenize_str(text)]
    split = [piece for piece in dict.fromkeys(pieces) if len(merged.model.tokenize(piece)) > 1]
    for symbol in split[::2] + list(map(byte_level, WHOLE_WORDS)):
        vocab.setdefault(symbol, len(vocab))
    bos = len(vocab)

    def setup(theirs):
        template = processors.TemplateProcessing(
            single="<|begin_of_text|> $A",
            pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1",
            special_tokens=[("<|begin_of_text|>", bos)],
        )
        byte_level_post = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
        theirs.post_processor = processors.Sequence([byte_level_post, template]) if newer else template
        theirs.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)

    obj = released(obj, LLAMA3_SPECIAL, True, setup)
    obj["model"]["ignore_merges"] = True
    obj["model"]["merges"] = [" ".join(pair) for pair in obj["model"]["merges"]]
    return json.dumps(obj, ensure_ascii=False)


@functools.cache
def qwen_json(version: int) -> str:
    """Qwen 2.5's (version 2) or Qwen 3's tokenizer.json: NFC; Split then ByteLevel(add_prefix_space false,
    trim_offsets false, use_regex false); ByteLevel post-processor and decoder; the special tokens, then the
    non-special ones. Qwen 2.5's merges are written "left right", Qwen 3's [left, right] with ignore_merges false."""
    from tokenizers import decoders, processors

    obj = json.loads(trained(True))
    obj["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = QWEN_SPLIT
    obj["pre_tokenizer"]["pretokenizers"][1]["trim_offsets"] = False

    def setup(theirs):
        theirs.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
        theirs.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)

    obj = released(obj, QWEN_SPECIAL, True, setup)
    obj = released(obj, QWEN3_ADDED if version == 3 else QWEN25_ADDED, False, setup)
    if version == 2:
        obj["model"]["merges"] = [" ".join(pair) for pair in obj["model"]["merges"]]
        del obj["model"]["ignore_merges"]
    return json.dumps(obj, ensure_ascii=False)


FILES = {
    "llama3": lambda: llama3_json(False),
    "llama3.2": lambda: llama3_json(True),
    "qwen2.5": lambda: qwen_json(2),
    "qwen3": lambda: qwen_json(3),
}
ADDED_IN_TEXT = {
    "llama3": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|> x<|reserved_special_token_247|>y "
    "<|end_of_text|>",
    "qwen": '<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n<think>\nhmm</think>\n\n<tool_call>{"a": 1}</tool_call>'
    "<|endoftext|>",
}


@functools.cache
def both(name: str):
    """(minigpt's JsonTokenizer, tokenizers' Tokenizer) for one file."""
    from tokenizers import Tokenizer as HFTokenizer

    text = FILES[name]()
    return JsonTokenizer.from_tokenizer_json(json.loads(text)), HFTokenizer.from_str(text)


def check_same(ours, theirs, text: str) -> None:
    """The same ids as tokenizers' encode without its post-processor's tokens, and the same decoded text."""
    ids = ours.encode(text)
    assert ids == theirs.encode(text, add_special_tokens=False).ids, repr(text)
    assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=False), repr(text)


def test_the_files_are_laid_out_as_the_released_ones():
    llama, newer, qwen25, qwen3 = (json.loads(FILES[name]()) for name in FILES)
    assert llama["normalizer"] is None and qwen3["normalizer"] == {"type": "NFC"}
    assert llama["pre_tokenizer"]["pretokenizers"][0] == {
        "type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": False}  # fmt: skip
    assert llama["pre_tokenizer"]["pretokenizers"][1] == {
        "type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}  # fmt: skip
    assert qwen25["pre_tokenizer"]["pretokenizers"][0]["pattern"] == {"Regex": QWEN_SPLIT}
    assert qwen25["pre_tokenizer"]["pretokenizers"][1]["trim_offsets"] is False
    assert llama["model"]["ignore_merges"] is True and isinstance(llama["model"]["merges"][0], str)
    assert "ignore_merges" not in qwen25["model"] and qwen3["model"]["ignore_merges"] is False
    assert isinstance(qwen25["model"]["merges"][0], str) and isinstance(qwen3["model"]["merges"][0], list)
    assert llama["post_processor"]["type"] == "TemplateProcessing"
    assert [p["type"] for p in newer["post_processor"]["processors"]] == ["ByteLevel", "TemplateProcessing"]
    assert qwen3["post_processor"]["type"] == "ByteLevel" and qwen3["decoder"]["type"] == "ByteLevel"
    first = len(llama["model"]["vocab"])
    assert [(t["id"], t["content"], t["special"], t["normalized"]) for t in llama["added_tokens"][:2]] == [
        (first, "<|begin_of_text|>", True, False), (first + 1, "<|end_of_text|>", True, False)]  # fmt: skip
    assert len(llama["added_tokens"]) == 256 and llama["added_tokens"][-1]["content"] == "<|reserved_special_token_247|>"
    specials = {t["content"]: t["special"] for t in qwen3["added_tokens"]}
    assert list(specials) == QWEN_SPECIAL + QWEN3_ADDED and specials["<|endoftext|>"] and not specials["<think>"]
    assert qwen3["added_tokens"][0]["id"] == len(qwen3["model"]["vocab"])


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("text", TEXTS + [LONG], ids=[*map(str, range(len(TEXTS))), "long"])
def test_ids_match_tokenizers(name, text):
    check_same(*both(name), text)


@pytest.mark.parametrize("name", FILES)
def test_added_tokens_inside_text_match_tokenizers(name):
    ours, theirs = both(name)
    text = ADDED_IN_TEXT["qwen" if name.startswith("qwen") else "llama3"]
    check_same(ours, theirs, text)
    check_same(ours, theirs, text * 3 + LONG[:500] + text)
    added = [t for t in ours.added_tokens if t.content in text]
    assert len(added) >= 4 and all(ours.id_of(t.content) in ours.encode(text) for t in added)


@pytest.mark.parametrize("name", FILES)
def test_random_strings_match_tokenizers(name):
    """Seeded random strings mixing the characters where regex engines could differ: apostrophes before s, t,
    l in any case (and the long s ſ and the Kelvin sign, which fold to s and k), digits of several scripts,
    every kind of whitespace and line break, combining marks, joiners, emoji, and any code point below 0x30000."""
    ours, theirs = both(name)
    tricky = list("'sStTlLdDmMrRvVeE1٣४Ⅻ½² \t\n\r\x0b\x0c\x85\xa0\u1680\u2007\u2028\u2029\u202f\u3000\u180e\u200b\ufeff")
    tricky += ["ſ", "\u212a", "\u0130", "\u0131", "ﬆ", "\u0301", "\u0903", "\u200d", "\ufe0f", "🏽", "😀", "日", "!", ".", "\x00"]
    rng = random.Random(29)
    for k in range(1500):
        if k % 2:
            text = "".join(rng.choice(tricky) for _ in range(rng.randint(1, 16)))
        else:  # no lone surrogates: they are not text that Python can encode as UTF-8
            text = "".join(
                chr(c) for c in (rng.randint(0, 0x2FFFF) for _ in range(rng.randint(1, 10))) if not 0xD800 <= c < 0xE000
            )
        check_same(ours, theirs, text)


def test_ignore_merges_takes_a_piece_that_is_a_symbol_whole():
    """Llama 3's ignore_merges: a piece whose bytes are a symbol is that symbol, even where the merges build it
    otherwise (as tokenizers' BPE model does, and tiktoken, whose vocabulary Llama 3's is). With ignore_merges
    false, tokenizers splits these words; minigpt follows the file either way."""
    from tokenizers import Tokenizer as HFTokenizer

    ours, theirs = both("llama3")
    text = "".join(WHOLE_WORDS)
    whole = [ours.encoder[byte_level(word)] for word in WHOLE_WORDS]
    assert ours.encode(text) == theirs.encode(text, add_special_tokens=False).ids == whole
    obj = json.loads(FILES["llama3"]())
    obj["model"]["ignore_merges"] = False
    merged, theirs_merged = JsonTokenizer.from_tokenizer_json(obj), HFTokenizer.from_str(json.dumps(obj))
    assert merged.encode(text) == theirs_merged.encode(text, add_special_tokens=False).ids
    assert len(merged.encode(text)) > len(whole)  # the merges alone do not rebuild these words
    shown = explain(ours, " café")
    assert re.search(r"^   ' café' +split, a symbol whole \(ignore_merges: no merges\)$", shown, re.M)
    assert shown.endswith(f"token ids (1): [{ours.encoder[byte_level(' café')]}]")


@pytest.mark.parametrize("name, text", [("llama3.2", "<|eot_id|>It'S 1234567 café"), ("qwen3", "<think>It'S 1234567</think>")])
def test_the_command_shows_the_stages_of_the_file(name, text, tmp_path):
    """`python -m minigpt.show --tokenizer PATH` on Llama 3's and Qwen's files (Llama 3's, without <|endoftext|>,
    needs the post-processor's BOS as its default): the Split regex's pieces, and the ids `encode` gives."""
    ours, _ = both(name)
    (tmp_path / "tokenizer.json").write_text(FILES[name](), encoding="utf-8")
    shown = command(["--tokenizer", str(tmp_path), text])
    assert "\n1. Split by the tokenizer's Split regex (each piece):\n" in shown
    assert re.search(r"^   \"'S\" +split", shown, re.M)  # a contraction in upper case
    assert bool(re.search(r"^   '123' +split", shown, re.M)) == (name == "llama3.2")  # Llama 3 cuts 3 digits, Qwen 1
    assert shown.endswith(f"token ids ({len(ours.encode(text))}): {ours.encode(text)}")


@pytest.mark.parametrize("name", ["llama3", "llama3.2"])
def test_llamas_bos_is_the_token_its_post_processor_puts_first(name):
    """tokenizers' encode(text) (add_special_tokens=True) runs the post-processor, which puts <|begin_of_text|>
    first; minigpt's encode never adds a token (it equals add_special_tokens=False), and to_tokens puts the
    tokenizer's BOS first: by default, the token the post-processor puts first. So to_tokens gives tokenizers'
    encode(text) exactly."""
    ours, theirs = both(name)
    assert ours.prepended == "<|begin_of_text|>" and ours.bos == ours.id_of("<|begin_of_text|>") == len(ours.encoder)
    for text in TEXTS[:8] + [ADDED_IN_TEXT["llama3"]]:
        assert ours.to_tokens(text)[0].tolist() == theirs.encode(text).ids, repr(text)
    assert ours.eot is None  # Llama 3 has no <|endoftext|>


@pytest.mark.parametrize("name", ["qwen2.5", "qwen3"])
def test_qwens_post_processor_adds_nothing_and_minigpts_bos_is_endoftext(name):
    """Qwen's files put no BOS (ByteLevel post-processor; tokenizer_config.json's bos_token null): tokenizers'
    encode(text) is the text's ids alone. The study puts a BOS first on every prompt; minigpt's is <|endoftext|>,
    as config.json's bos_token_id 151643 names it (next test), and as GPT-2's is."""
    ours, theirs = both(name)
    assert ours.prepended is None and ours.bos == ours.eot == ours.id_of("<|endoftext|>")
    for text in TEXTS[:8]:
        assert theirs.encode(text).ids == theirs.encode(text, add_special_tokens=False).ids
        assert ours.to_tokens(text)[0].tolist() == [ours.bos, *theirs.encode(text).ids], repr(text)


def write_release(directory, name: str, config: dict, tokenizer_config: dict, special_tokens_map: dict | None):
    directory.mkdir()
    (directory / "tokenizer.json").write_text(FILES[name](), encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    if special_tokens_map is not None:
        (directory / "special_tokens_map.json").write_text(json.dumps(special_tokens_map))
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.mark.parametrize("name", ["qwen2.5", "qwen3"])
def test_qwen_directory_gives_endoftext_as_bos_through_config_jsons_bos_token_id(name, tmp_path):
    """A Qwen directory as released: tokenizer_config.json says bos_token null (and add_bos_token false),
    special_tokens_map.json names no BOS, config.json's bos_token_id names <|endoftext|> (151643 in the release;
    here its id in the tiny file) and vocab_size is padded past the tokens (151936 for 151665 in the release)."""
    ours, _ = both(name)
    eot = ours.id_of("<|endoftext|>")
    model_type = "qwen3" if name == "qwen3" else "qwen2"
    config = {"model_type": model_type, "bos_token_id": eot, "eos_token_id": eot, "vocab_size": eot + 128}
    tokenizer_config = {"bos_token": None, "add_bos_token": False, "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    special_map = {"eos_token": {"content": "<|endoftext|>"}, "pad_token": {"content": "<|endoftext|>"}}
    tokenizer = weights.read_tokenizer(write_release(tmp_path / name, name, config, tokenizer_config, special_map))
    assert tokenizer.bos == tokenizer.pad == eot
    assert tokenizer.to_tokens("Hi there")[0].tolist() == [eot, *ours.encode("Hi there")]
    (tmp_path / name / "config.json").write_text(json.dumps(config | {"bos_token_id": None}))  # then GPT-2's default
    assert weights.read_tokenizer(tmp_path / name).bos == eot


def test_qwens_tokenizer_json_is_read_even_beside_its_vocab_json_and_merges_txt(tmp_path):
    """Qwen's repositories carry vocab.json and merges.txt too. Read through them, the text would be split by GPT-2's
    regex without NFC (digits grouped as GPT-2 groups them) and the added tokens would be missing: tokenizer.json is
    what is read."""
    ours, theirs = both("qwen3")
    eot = ours.id_of("<|endoftext|>")
    config = {"model_type": "qwen3", "bos_token_id": eot, "vocab_size": eot + 128}
    directory = write_release(tmp_path / "qwen3", "qwen3", config, {"bos_token": None, "pad_token": "<|endoftext|>"}, None)
    data = json.loads(FILES["qwen3"]())
    (directory / "vocab.json").write_text(json.dumps(data["model"]["vocab"]))
    merges = [" ".join(m) if isinstance(m, list) else m for m in data["model"]["merges"]]
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    text = "It'S 1234567 café"
    assert weights.read_tokenizer(directory).to_tokens(text)[0].tolist() == [eot, *theirs.encode(text).ids]


def test_a_tokenizer_json_in_gpt2s_form_leaves_gpt2s_reader_in_place(vocab_files, tmp_path):
    """openai-community/gpt2 carries a tokenizer.json that says what vocab.json and merges.txt say (no normalizer,
    ByteLevel with GPT-2's regex): GPT-2's own reader stays the one that runs."""
    from minigpt import Tokenizer
    from minigpt.tokenizer_json import JsonTokenizer as Json

    for name, path in zip(("vocab.json", "merges.txt"), vocab_files):
        (tmp_path / name).write_bytes(Path(path).read_bytes())
    gpt2_form = {"normalizer": None, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}}
    (tmp_path / "tokenizer.json").write_text(json.dumps(gpt2_form | {"model": {"type": "BPE", "vocab": {}, "merges": []}}))
    tokenizer = weights.read_tokenizer(tmp_path)
    assert type(tokenizer) is Tokenizer and not isinstance(tokenizer, Json)


def test_llama_directory_gives_begin_of_text_as_bos(tmp_path):
    """Llama 3.2's files name <|begin_of_text|> as BOS three times (tokenizer_config.json, special_tokens_map.json,
    config.json's bos_token_id 128000); without them, the post-processor's first token is the BOS."""
    ours, theirs = both("llama3.2")
    bos = ours.id_of("<|begin_of_text|>")
    config = {"model_type": "llama", "bos_token_id": bos, "eos_token_id": bos + 1, "vocab_size": bos + 256}
    special_map = {"bos_token": {"content": "<|begin_of_text|>"}, "eos_token": {"content": "<|end_of_text|>"}}
    directory = write_release(tmp_path / "llama", "llama3.2", config, {"bos_token": "<|begin_of_text|>"}, special_map)
    assert weights.read_tokenizer(directory).to_tokens("Hi there")[0].tolist() == theirs.encode("Hi there").ids
    for name in ("tokenizer_config.json", "special_tokens_map.json", "config.json"):
        (directory / name).unlink()
    tokenizer = weights.read_tokenizer(directory)
    assert tokenizer.bos == tokenizer.pad == bos


@functools.cache
def sentencepiece_json(form: str) -> str:
    """A tiny SentencePiece-style BPE written by `tokenizers` as released: <unk>, <s>, </s>, the 256 <0x..>
    byte tokens, ▁ and a few merges; byte_fallback true, unk_token <unk>. "llama2": Llama 2's, TinyLlama's and
    Mistral v0.1's (normalizer Prepend ▁ and Replace " " → ▁, no pre-tokenizer); "metaspace": the same files as
    tokenizers >= 0.19 converts them (Metaspace pre-tokenizer, no normalizer); "gemma": Gemma's (normalizer
    Replace " " → ▁ alone, no pre-tokenizer, <pad> <eos> <bos> <unk> first)."""
    from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    first = ["<pad>", "<eos>", "<bos>", "<unk>"] if form == "gemma" else ["<unk>", "<s>", "</s>"]
    symbols = [*first, *(f"<0x{b:02X}>" for b in range(256)), "▁", *"abcdeht", "▁t", "he", "▁the"]
    vocab = {s: i for i, s in enumerate(symbols)}
    model = models.BPE(vocab, [("▁", "t"), ("h", "e"), ("▁t", "he")], unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    theirs = HFTokenizer(model)
    if form == "metaspace":
        theirs.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    else:
        replace = normalizers.Replace(" ", "▁")
        theirs.normalizer = replace if form == "gemma" else normalizers.Sequence([normalizers.Prepend("▁"), replace])
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    theirs.decoder = decoders.Sequence(steps if form == "gemma" else [*steps, decoders.Strip(" ", 1, 0)])
    theirs.add_special_tokens([AddedToken(t, normalized=False) for t in first])
    assert "<0x21>" in theirs.encode("the cat!").tokens  # a working file: "!" is outside the vocabulary, a byte token
    return theirs.to_str()


@pytest.mark.parametrize("form", ["llama2", "metaspace", "gemma"])
def test_sentencepiece_style_files_are_refused_in_one_line_naming_byte_fallback(form, tmp_path):
    obj = json.loads(sentencepiece_json(form))
    with pytest.raises(ValueError) as refused:
        JsonTokenizer.from_tokenizer_json(obj)
    message = str(refused.value)
    assert message.startswith("tokenizer.json: model.byte_fallback true is not implemented (a SentencePiece-style BPE, as")
    assert "Llama 2's, Mistral's and Gemma's" in message and "\n" not in message
    (tmp_path / "tokenizer.json").write_text(sentencepiece_json(form), encoding="utf-8")
    with pytest.raises(weights.CheckpointError) as refused:
        weights.read_tokenizer(tmp_path)
    assert str(refused.value) == f"{tmp_path / 'tokenizer.json'}: {message}"


@pytest.mark.parametrize(
    "edit",
    [
        lambda post: post.update(single=[post["single"][1], post["single"][0]]),  # a token after the text
        lambda post: post["special_tokens"]["<|begin_of_text|>"].update(ids=[5]),  # ids not the token's
        lambda post: post["single"][0]["SpecialToken"].update(id="<|not a token|>"),
        lambda post: post.update(single=[*post["single"], {"SpecialToken": {"id": "<|end_of_text|>", "type_id": 0}}]),
    ],
    ids=["a_token_after_the_text", "ids_not_the_tokens", "an_unknown_token", "a_token_before_and_after"],
)
def test_a_post_processor_that_would_change_the_ids_is_refused_in_one_line(edit):
    obj = json.loads(FILES["llama3"]())
    edit(obj["post_processor"])
    with pytest.raises(ValueError) as refused:
        JsonTokenizer.from_tokenizer_json(obj)
    message = str(refused.value)
    assert message.startswith('tokenizer.json: post_processor {"type": "TemplateProcessing"') and "\n" not in message
    assert message.endswith(
        "is not implemented (minigpt's encode adds none; it reads ByteLevel and a template putting one token (its own id) first)"
    )


@pytest.mark.parametrize("flag", ["add_prefix_space", "use_regex"])
def test_a_byte_level_flag_that_is_not_a_boolean_is_refused_naming_it(flag):
    """ "false" as a string is true to Python: read as such, "Hello" would gain a space (tokenizers refuses the file)."""
    obj = json.loads(FILES["llama3.2"]())
    obj["pre_tokenizer"]["pretokenizers"][1][flag] = "false"
    with pytest.raises(ValueError, match=re.escape(f'pre_tokenizer.pretokenizers[1].{flag} is "false"; expected true or false')):
        JsonTokenizer.from_tokenizer_json(obj)
