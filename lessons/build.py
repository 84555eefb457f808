"""Build each lesson's two notebooks from its one plain-text source, so that the twins cannot drift apart.

    python -m lessons.build          # lessons/source/NN-topic.py → lessons/NN-topic.ipynb (exercises)
                                     #                            + lessons/solutions/NN-topic.ipynb (solved)

A source is Python in the "percent" format that Jupytext and VS Code read: cells begin with `# %%`
(code), `# %% [markdown]` (text, each line behind "# ") or `# %% [exercise]` (a code cell the student
completes: one function). In an exercise cell, the lines between `# BEGIN SOLUTION` and `# END SOLUTION`
are the solution; the exercise notebook has `raise NotImplementedError(…)` in their place, which names
the function and `check.hint`. The hints themselves live in the lesson's checker module
(lessons/check/lessonN.py), shown one at a time on request, so that the exercise notebook holds no
solution. Every notebook starts with the same Colab set-up cell (it does nothing elsewhere). Both
notebooks are written without outputs; the tests run the solved ones. Edit the source, not the
notebooks: a test checks that they are what this builds.
"""

import re
import sys
from pathlib import Path

import nbformat

LESSONS = Path(__file__).parent
SOURCES = LESSONS / "source"
CELL = re.compile(r"^# %%(?: \[(markdown|exercise)\])?\s*$", re.M)
SOLUTION = re.compile(r"^( *)# BEGIN SOLUTION\n(.*?)^ *# END SOLUTION(?:\n|$)", re.M | re.S)
FUNCTION = re.compile(r"^def (\w+)\(", re.M)

# Where Colab fetches minigpt from: the course's copy of the repository. A folder uploaded to
# /content/minigpt is used as it is, and nothing is cloned.
REPOSITORY = "https://github.com/YOUR-ACCOUNT/minigpt"
COLAB = f"""\
# Colab set-up: on Google Colab, fetch minigpt and install it (once per runtime); elsewhere this does nothing.
import sys

if "google.colab" in sys.modules:
    import subprocess
    from pathlib import Path

    folder = Path("/content/minigpt")  # or upload the repository's folder here, and nothing is cloned
    if not folder.exists():
        subprocess.run(["git", "clone", "--depth", "1", "{REPOSITORY}", str(folder)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--editable", str(folder)], check=True)
    sys.path.insert(0, str(folder))"""


def markdown(text: str) -> str:
    """A markdown cell's text from its source lines: each behind "# ", or a lone "#" for a blank line."""
    return "\n".join(line[2:] if line.startswith("# ") else line.removeprefix("#") for line in text.splitlines())


def placeholder(indent: str, function: str) -> str:
    return f"{indent}raise NotImplementedError({f'write {function} here; check.hint({function!r}) gives a nudge'!r})\n"


def cells(source: str) -> list[tuple[str, str]]:
    """[(kind, text)]: kind is "markdown", "code" or "exercise"."""
    parts = CELL.split(source)
    found = []
    for kind, text in zip(parts[1::2], parts[2::2]):
        text = text.strip("\n")
        if kind == "markdown":
            text = markdown(text)
        found.append((kind or "code", text))
    return found


def notebook(source: str, solved: bool) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    for i, (kind, text) in enumerate([("code", COLAB), *cells(source)]):
        if kind == "markdown":
            cell = nbformat.v4.new_markdown_cell(text)
        else:
            if kind == "exercise":
                functions = FUNCTION.findall(text)
                if not SOLUTION.search(text) or len(functions) != 1:
                    raise ValueError(f"exercise cell {i} needs one function with a '# BEGIN SOLUTION' … '# END SOLUTION' block")
                (function,) = functions
                if solved:
                    text = SOLUTION.sub(lambda m: m.group(2), text)
                else:
                    text = SOLUTION.sub(lambda m, function=function: placeholder(m.group(1), function), text)
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
