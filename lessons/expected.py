"""What each solved notebook prints and draws, recorded for the instructor's guide.

    python -m lessons.expected [NAME …]   # runs every solved notebook (or those named); writes lessons/expected/NN-topic.txt (its
                                     # printed output), lessons/expected/NN-topic-K.png (its figures, at
                                     # twice the screen resolution, for slides), and quotes them in TEACHING.md

The suite runs the same notebooks and asserts that they still print what is recorded here (numbers to
their last printed digit), so the numbers in the guide cannot drift from what the lessons compute.
"""

import base64
import re
import sys

import nbformat
from nbclient import NotebookClient

from . import build

EXPECTED = build.LESSONS / "expected"
GUIDE = build.LESSONS / "TEACHING.md"
RETINA = "get_ipython().run_line_magic('config', \"InlineBackend.figure_formats = ['retina']\")"
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
ROUNDING_LEVEL = 1e-4  # differences of float32 rounding (largest differences, changes ~1e-6): any two such values agree


def printed(notebook: nbformat.NotebookNode) -> str:
    """The text a run notebook printed, cell after cell (stdout only)."""
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream" and output.get("name") == "stdout"
    )


def figures(notebook: nbformat.NotebookNode) -> list[bytes]:
    """The PNG figures a run notebook showed, in order."""
    return [
        base64.b64decode(output["data"]["image/png"])
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]


def run(name: str, retina: bool = True) -> nbformat.NotebookNode:
    """The solved notebook of lesson `name`, executed offline in a fresh kernel."""
    notebook = nbformat.read(build.LESSONS / "solutions" / f"{name}.ipynb", as_version=4)
    if retina:
        notebook.cells.insert(0, nbformat.v4.new_code_cell(RETINA))
    NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
    return notebook


def read(name: str) -> str:
    return (EXPECTED / f"{name}.txt").read_text(encoding="utf-8")


def _digit(text: str) -> float:
    """One unit in the last printed digit of a number as printed: 1.0240 → 1e-4, 4.8e-06 → 1e-7, 61 → 1."""
    mantissa, _, exponent = text.partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 10.0 ** (-decimals + (int(exponent) if exponent else 0))


def assert_same(got: str, want: str) -> None:
    """got prints what want does: the same words, and each number within 2 units of its last printed digit
    (float32 sums in another order, on another CPU, move a printed number by a unit at most), or both at
    the level of float32 rounding (below ROUNDING_LEVEL)."""
    got_lines, want_lines = got.splitlines(), want.splitlines()
    assert len(got_lines) == len(want_lines), f"{len(got_lines)} lines printed, {len(want_lines)} expected:\n{got}"
    for g, w in zip(got_lines, want_lines):
        assert NUMBER.sub("#", g) == NUMBER.sub("#", w), f"printed\n  {g}\nexpected\n  {w}"
        for a, b in zip(NUMBER.findall(g), NUMBER.findall(w)):
            x, y = float(a), float(b)
            near = abs(x - y) <= 2 * _digit(b) * (1 + 1e-9) or max(abs(x), abs(y)) < ROUNDING_LEVEL
            assert near, f"printed {a} where {b} is expected, in\n  {g}\nexpected\n  {w}"


def quote(name: str, text: str, n_figures: int) -> str:
    """The guide's block for one lesson: its printed output and links to its figures."""
    links = "\n".join(f"![{name}, figure {k}](expected/{name}-{k}.png)" for k in range(1, n_figures + 1))
    return f"<!-- expected: {name} -->\n```text\n{text}```\n\n{links}\n<!-- end expected -->"


BLOCK = re.compile(r"<!-- expected: (\S+) -->\n.*?<!-- end expected -->", re.S)


def guide_blocks(text: str) -> dict[str, str]:
    return {m.group(1): m.group(0) for m in BLOCK.finditer(text)}


def main(argv: list[str] | None = None) -> int:
    EXPECTED.mkdir(exist_ok=True)
    guide = GUIDE.read_text(encoding="utf-8")
    for name in (argv if argv is not None else sys.argv[1:]) or build.names():
        notebook = run(name)
        text, pngs = printed(notebook), figures(notebook)
        (EXPECTED / f"{name}.txt").write_text(text, encoding="utf-8")
        for old in EXPECTED.glob(f"{name}-*.png"):
            old.unlink()
        for k, png in enumerate(pngs, 1):
            (EXPECTED / f"{name}-{k}.png").write_bytes(png)
        block = quote(name, text, len(pngs))
        guide = BLOCK.sub(lambda m, name=name, block=block: block if m.group(1) == name else m.group(0), guide)
        print(f"{name}: {len(text.splitlines())} lines, {len(pngs)} figures")
    GUIDE.write_text(guide, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
