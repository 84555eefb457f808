"""Copy the four exercise notebooks out of the installed package, to open them in Jupyter:

    python -m lessons                 # into ./minigpt-lessons
    python -m lessons FOLDER

The package holds the exercise notebooks, their checkers and the files they read, and no answers: the
solved twins and the instructor's guide are in a clone of the repository (lessons/solutions, TEACHING.md).
"""

import shutil
import sys
from pathlib import Path

from lessons import HERE


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) > 1 or argv[:1] in (["-h"], ["--help"]):
        print("usage: python -m lessons [FOLDER]   (default ./minigpt-lessons)", file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    folder = Path(argv[0] if argv else "minigpt-lessons")
    notebooks = sorted(HERE.glob("[0-9][0-9]-*.ipynb"))
    there = [folder / n.name for n in notebooks if (folder / n.name).exists()]
    if there:
        print(
            f"{there[0]} exists: lessons copies only into a folder without them, so that no work is overwritten",
            file=sys.stderr,
        )
        return 2
    folder.mkdir(parents=True, exist_ok=True)
    for notebook in notebooks:
        shutil.copy2(notebook, folder / notebook.name)
    print(f"copied {len(notebooks)} exercise notebooks into {folder}: open them with jupyter lab {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
