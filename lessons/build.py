"""Build each lesson's two notebooks from its one plain-text source, so that the twins cannot drift apart.

    python -m lessons.build          # lessons/source/NN-topic.py → lessons/NN-topic.ipynb (exercises)
                                     #                            + lessons/solutions/NN-topic.ipynb (solved)
    python -m lessons.build --colab  # and dist/minigpt_residual-….whl: the one file a teacher uploads to Colab

A source is Python in the "percent" format that Jupytext and VS Code read: cells begin with `# %%`
(code), `# %% [markdown]` (text, each line behind "# ") or `# %% [exercise]` (a code cell the student
completes: one function). In an exercise cell, the lines between `# BEGIN SOLUTION` and `# END SOLUTION`
are the solution; the exercise notebook has `raise NotImplementedError(…)` in their place, which names
the function and `check.hint`. The hints themselves live in the lesson's checker module
(lessons/check/lessonN.py), shown one at a time on request, so that the exercise notebook holds no
solution. Every notebook starts with the same Colab set-up cell (it does nothing elsewhere). Both
notebooks are written without outputs; the tests run the solved ones. Edit the source, not the
notebooks: a test checks that they are what this builds.

Colab uploads files, not folders, so the set-up cell installs minigpt from one file: the wheel that
`--colab` builds (the package with the bundled model, lesson 3's checkpoint and the exercise notebooks;
no solved twin and no solution block). The teacher uploads it with the notebook, into /content. If
pyproject.toml's [project.urls] names a "Repository", the cell installs from there when no wheel was
uploaded; it names none today, so the cell refuses in one line instead.
"""

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat

LESSONS = Path(__file__).parent
SOURCES = LESSONS / "source"
CELL = re.compile(r"^# %%(?: \[(markdown|exercise)\])?\s*$", re.M)
SOLUTION = re.compile(r"^( *)# BEGIN SOLUTION\n(.*?)^ *# END SOLUTION(?:\n|$)", re.M | re.S)
FUNCTION = re.compile(r"^def (\w+)\(", re.M)

ROOT = LESSONS.parent
DISTRIBUTION = "minigpt_residual"  # pyproject's name, as a wheel's file name spells it
PACKAGES = ("minigpt", "weights", "instrument", "outdir", "analysis", "training", "lessons")  # what the wheel is built from


def repository() -> str | None:
    """pyproject.toml's [project.urls] "Repository", if it names one: where Colab installs from without a wheel."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: no reader of TOML in the standard library, and no address then
        return None
    pyproject = ROOT / "pyproject.toml"
    if not pyproject.is_file():  # installed from the wheel: the notebooks are built already
        return None
    urls = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"].get("urls", {})
    return urls.get("Repository")


REPOSITORY = repository()
COLAB = f"""\
# Colab set-up: on Google Colab, install minigpt from the wheel your teacher gave you (once per runtime); elsewhere: nothing.
import sys

if "google.colab" in sys.modules:
    import importlib
    import subprocess
    from pathlib import Path

    wheels = sorted({{*Path.cwd().glob("{DISTRIBUTION}-*.whl"), *Path("/content").glob("{DISTRIBUTION}-*.whl")}})
    source = str(wheels[-1]) if wheels else {f'"git+{REPOSITORY}"' if REPOSITORY else None}
    if source is None:
        raise SystemExit("upload {DISTRIBUTION}-….whl (Files pane; made by python -m lessons.build --colab), then run this again")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", source], check=True)
    importlib.invalidate_caches()"""


def wheel(out: Path) -> Path:
    """Build the wheel into folder `out` (offline, from a clean copy of the packages, so that nothing left in
    ./build from an earlier build slips in) and return its path."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp)
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            shutil.copy2(ROOT / name, copy / name)
        for package in PACKAGES:
            shutil.copytree(ROOT / package, copy / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        out.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", str(out)]
        done = subprocess.run([*command, str(copy)], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"building the wheel failed (pip wheel, exit {done.returncode}):\n{done.stderr.strip()}")
    (built,) = out.glob(f"{DISTRIBUTION}-*.whl")
    return built


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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv not in ([], ["--colab"]):
        print(f"usage: python -m lessons.build [--colab]; unknown argument {' '.join(argv)!r}", file=sys.stderr)
        return 2
    if not SOURCES.is_dir():
        print(f"no {SOURCES}: lessons.build works in a clone of minigpt, where the lessons' sources are", file=sys.stderr)
        return 2
    for name in names():
        for path, text in build(name).items():
            path.parent.mkdir(exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    if argv == ["--colab"]:
        for old in (ROOT / "dist").glob(f"{DISTRIBUTION}-*.whl"):
            old.unlink()
        built = wheel(ROOT / "dist")
        print(f"wrote {built.relative_to(ROOT)}: upload it to Colab (Files pane) beside a lesson's notebook")
    return 0


if __name__ == "__main__":
    sys.exit(main())
