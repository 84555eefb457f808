"""Build each lesson's two notebooks from its one plain-text source, so that the twins cannot drift apart.

    python -m lessons.build          # lessons/source/NN-topic.py → lessons/NN-topic.ipynb (exercises)
                                     #                            + lessons/solutions/NN-topic.ipynb (solved)

A source is Python in the "percent" format that Jupytext and VS Code read: cells begin with `# %%`
(code), `# %% [markdown]` (text, each line behind "# ") or `# %% [exercise]` (a code cell the student
completes). In an exercise cell, the lines between `# BEGIN SOLUTION: hint` and `# END SOLUTION` are
the solution; the exercise notebook has `raise NotImplementedError("hint")` in their place. Both
notebooks are written without outputs; the tests run the solved ones. Edit the source, not the notebooks:
a test checks that they are what this builds.
"""

import re
import sys
from pathlib import Path

import nbformat

LESSONS = Path(__file__).parent
SOURCES = LESSONS / "source"
CELL = re.compile(r"^# %%(?: \[(markdown|exercise)\])?\s*$", re.M)
SOLUTION = re.compile(r"^( *)# BEGIN SOLUTION: ([^\n]+)\n(.*?)^ *# END SOLUTION(?:\n|$)", re.M | re.S)


def cells(source: str) -> list[tuple[str, str]]:
    """[(kind, text)]: kind is "markdown", "code" or "exercise"."""
    parts = CELL.split(source)
    found = []
    for kind, text in zip(parts[1::2], parts[2::2]):
        text = text.strip("\n")
        if kind == "markdown":
            text = "\n".join(line.removeprefix("# ").removeprefix("#") for line in text.splitlines())
        found.append((kind or "code", text))
    return found


def notebook(source: str, solved: bool) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    for i, (kind, text) in enumerate(cells(source)):
        if kind == "markdown":
            cell = nbformat.v4.new_markdown_cell(text)
        else:
            if kind == "exercise":
                if not SOLUTION.search(text):
                    raise ValueError(f"exercise cell {i} has no '# BEGIN SOLUTION: hint' … '# END SOLUTION' block")
                if solved:
                    text = SOLUTION.sub(lambda m: m.group(3), text)
                else:
                    text = SOLUTION.sub(lambda m: f"{m.group(1)}raise NotImplementedError({m.group(2)!r})\n", text)
            cell = nbformat.v4.new_code_cell(text)
            if kind == "exercise":
                cell.metadata["tags"] = ["exercise"]
        cell.id = f"cell-{i:02d}"
        nb.cells.append(cell)
    return nb


def build(name: str) -> dict[Path, str]:
    """{path: notebook text} for one lesson's source (its file name without .py)."""
    source = (SOURCES / f"{name}.py").read_text(encoding="utf-8")
    return {
        LESSONS / f"{name}.ipynb": nbformat.writes(notebook(source, solved=False)) + "\n",
        LESSONS / "solutions" / f"{name}.ipynb": nbformat.writes(notebook(source, solved=True)) + "\n",
    }


def names() -> list[str]:
    return sorted(path.stem for path in SOURCES.glob("[0-9][0-9]-*.py"))


def main() -> int:
    for name in names():
        for path, text in build(name).items():
            path.parent.mkdir(exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(LESSONS.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
