"""How long README's reading path is: the lines of every file its "Reading the code" list names.

    python -m benchmarks.reading_path                 # a table and the total; exit 1 above the budget
    python -m benchmarks.reading_path --budget 3000

What counts: every file named in backquotes (`minigpt/model.py`) in the numbered list under "## Reading the
code", up to its "### Further reading" (which is not counted: the budget is what the path asks a student to
read, not what the repository holds). A named folder (`instrument/`) counts every .py file in it. A file named
twice counts once. Its lines are all its lines, blank lines, comments and docstrings included: what a reader
scrolls through. A path named there that does not exist is an error (exit 2): the README would send a
student to nothing.
"""

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGET = 2500
SECTION = "## Reading the code"
FURTHER = "### Further reading"
# A backquoted name that is a path: folders and a file name with an extension, such as minigpt/model.py or instrument/
PATH = re.compile(r"`((?:[\w.-]+/)+(?:[\w.-]+\.\w+)?)`")


def reading_path(readme: str) -> list[str]:
    """The paths named in the reading path's list, in order, each once."""
    lines = readme.splitlines()
    try:
        start = lines.index(SECTION)
    except ValueError:
        raise SystemExit(f'error: README has no "{SECTION}" section') from None
    names = []
    for line in lines[start + 1 :]:
        if line.startswith("## ") or line.startswith("### "):  # "### Further reading", or the next section
            break
        names += [name for name in PATH.findall(line) if name not in names]
    return names


def files(name: str, root: Path) -> list[Path]:
    path = root / name
    if path.is_dir():
        return sorted(path.rglob("*.py"))
    if path.is_file():
        return [path]
    print(f"error: README's reading path names {name}, which does not exist in {root}", file=sys.stderr)
    raise SystemExit(2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--budget", type=int, default=BUDGET, help=f"the most lines the path may ask for (default {BUDGET})")
    args = parser.parse_args(argv)
    root = args.readme.resolve().parent
    counted = {}
    for name in reading_path(args.readme.read_text(encoding="utf-8")):
        for path in files(name, root):
            counted.setdefault(path.relative_to(root).as_posix(), len(path.read_text(encoding="utf-8").splitlines()))
    total = sum(counted.values())
    print("| file | lines |\n|---|---:|")
    for name, n in counted.items():
        print(f"| {name} | {n:,} |")
    print(f"| **total** ({len(counted)} files) | **{total:,}** |")
    verdict = "within" if total <= args.budget else "over"
    print(f"\n{total:,} lines: {verdict} the budget of {args.budget:,} (all lines of each file, blank ones included)")
    return 0 if total <= args.budget else 1


if __name__ == "__main__":
    sys.exit(main())
