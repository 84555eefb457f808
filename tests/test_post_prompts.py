"""The post's own prompts file, in its shape: `--prompts-file` reads it as it is.

The post's script (scripts/prompt_magnitudes.py in montemac/activation_additions) downloads scripts/prompts.txt
at commit cb6b1a4: plain UTF-8 text, one prompt per line, 58 lines, no newline after the last, an en dash
in one. Its text is someone else's and is not copied here: this file is 58 prompts of our own in that shape,
with some lines indented as other prompt files have them."""

import json

from analysis import growth
from analysis.inputs import read_prompts


def post_shaped(path, n=58):
    lines = [f"Prompt {i}: a plain sentence – with an en dash, as one of the post's has" for i in range(n)]
    lines[3], lines[7] = "    an indented line, as of code", "\tone indented by a tab"
    path.write_bytes("\n".join(lines).encode("utf-8"))  # no newline after the last line
    return lines


def test_a_plain_text_file_of_one_prompt_per_line_is_read_as_it_is(tmp_path):
    lines = post_shaped(tmp_path / "prompts.txt")
    prompts = read_prompts(tmp_path / "prompts.txt")
    assert prompts.texts == [line.strip() for line in lines]  # each line one prompt, stripped, the last one too
    assert prompts.available == 58 and prompts.lines == list(range(1, 59)) and prompts.seed is None


def test_the_study_runs_on_a_file_in_the_posts_shape_and_counts_its_prompts(small_checkpoint, tmp_path):
    post_shaped(tmp_path / "prompts.txt")
    out = tmp_path / "report"
    args = ["--model", str(small_checkpoint), "--prompts-file", str(tmp_path / "prompts.txt"), "--out", str(out)]
    assert growth.main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prompts"] == summary["prompts_available"] == 58 and summary["tokens_averaged"] == summary["tokens"] - 58
