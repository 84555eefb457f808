"""The study over corpus-shaped input: the same numbers as before on the default prompts, JSON Lines, a
seeded sample of a large file, and truncation. The memory bound itself is tested in test_measures.py
(the kept state's size in bytes); time and peak RSS at scale are the benchmark's (python -m benchmarks)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from analysis import growth
from benchmarks.checkpoints import write_checkpoint

STORED = Path(__file__).parent / "data" / "bundled-default-summary.json"


def values(tree, path=""):
    """Every leaf of a JSON tree by its path."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in values(sub, f"{path}.{key}").items()}
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in values(sub, f"{path}[{i}]").items()}
    return {path: tree}


def test_default_prompts_give_the_summary_stored_before_statistics_became_running_sums(tmp_path):
    """tests/data/bundled-default-summary.json was written by the study when it still kept every
    position's norms (at commit 9de6aa9); every number must agree within 1e-6 relative, whatever changed
    since in how the study runs (batches by length, figure 12's controls counted per batch, only the
    prompts' embedding rows kept)."""
    assert growth.main(["--model", "bundled", "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    now, stored = values(summary), values(json.loads(STORED.read_text()))
    assert stored.keys() <= now.keys()
    # mlp_active_fraction[l] is a count, (pre-activations > 0) / (d_mlp · tokens averaged): a pre-activation
    # within rounding of 0 changes sign under another CPU's matrix kernels (seen: AMD EPYC vs Intel Xeon
    # AVX-512, one count at layer 4), so it may move by a few counts, not by 1e-6 of itself (that is
    # 0.2 of one count). Every other float is a mean of float32 norms: 1e-6 relative is its rounding.
    model = summary["models"]["bundled"]
    one_count = 1 / (model["d_model"] * 4 * summary["tokens_averaged"])  # d_mlp = 4 · d_model
    for key, expected in stored.items():
        if ".mlp_active_fraction[" in key:
            assert now[key] == pytest.approx(expected, rel=0, abs=3 * one_count), key
        elif isinstance(expected, float):
            assert now[key] == pytest.approx(expected, rel=1e-6, abs=0), key
        else:
            assert now[key] == expected, key


@pytest.fixture(scope="module")
def short_context(tmp_path_factory):
    """3 layers with a 32-token context, so that truncation is cheap to exercise."""
    return write_checkpoint(tmp_path_factory.mktemp("ctx32"), n_layers=3, d_model=64, n_heads=4, seed=3, n_ctx=32)


def test_json_lines_sampled_and_truncated(short_context, tmp_path):
    records = [{"text": f"Document {i}: the cat sat on the mat, and then it slept.", "id": i} for i in range(40)]
    records[7] = {"text": "A long document " + "with many words " * 20, "source": "multi\nline"}
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    summaries = []
    for run in ("first", "second"):
        out = tmp_path / run
        args = [
            "--model",
            str(short_context),
            "--prompts-file",
            str(corpus),
            "--max-prompts",
            "12",
            "--truncate",
            "--out",
            str(out),
        ]
        assert growth.main(args) == 0
        summaries.append(json.loads((out / "summary.json").read_text()))
        report = (out / "report.md").read_text()
    first = summaries[0]
    assert (first["prompts"], first["prompts_available"], first["sample_seed"]) == (12, 40, 0)
    assert values(first["models"]) == values(summaries[1]["models"])  # the same sample both times
    assert f"12 prompts from {corpus} (a uniform sample, seed 0, of the 40 it holds)" in report
    everything = tmp_path / "all"
    args = ["--model", str(short_context), "--prompts-file", str(corpus), "--truncate", "--out", str(everything)]
    assert growth.main(args) == 0
    summary = json.loads((everything / "summary.json").read_text())
    assert (summary["prompts"], summary["sample_seed"], summary["truncated"]) == (40, None, 1)
    assert "; 1 cut to the model's context of 32 tokens (--truncate)." in (everything / "report.md").read_text()


def test_without_truncate_a_long_prompt_is_refused_and_named(short_context, tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"text": "short"}\n{"text": "' + "word " * 40 + '"}\n', encoding="utf-8")
    assert growth.main(["--model", str(short_context), "--prompts-file", str(corpus), "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err.strip()
    assert re.fullmatch(
        r"error: prompt 2 \(line 2 of .*corpus.jsonl: 'word word.*'…\) has 42 tokens with BOS; .* accepts at "
        r"most 32 \(--truncate cuts longer ones\)",
        error,
    ), error


@pytest.mark.parametrize(
    "lines, expected",
    [
        (['{"text": "fine"}', "{not json", '{"text": "fine"}'], r"line 2: not JSON \(Expecting property name"),
        (
            ['{"text": "fine"}', '{"title": "no text"}'],
            r'line 2: an object without a string "text"; each line must be an object like',
        ),
        (['["a", "list"]'], r"line 1: a list; each line must be an object like \{\"text\": \"...\"\}"),
        (['{"text": 42}'], r'line 1: an object without a string "text"'),
        (['{"text": "   "}', ""], r"has no prompts: every object has an empty text"),
    ],
)
def test_a_bad_json_lines_file_names_the_line(lines, expected, small_checkpoint, tmp_path):
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "analysis.growth",
            "--model",
            str(small_checkpoint),
            "--prompts-file",
            str(corpus),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert re.search(expected, line), line
    assert line.startswith(f"error: prompts file {corpus}")


def test_max_prompts_must_be_positive(small_checkpoint, tmp_path, capsys):
    assert growth.main(["--model", str(small_checkpoint), "--max-prompts", "0", "--out", str(tmp_path / "o")]) == 2
    assert "--max-prompts must be at least 1, found 0" in capsys.readouterr().err
