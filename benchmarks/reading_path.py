"""How long README's reading path is: the lines of every file its "Reading the code" list names.

    python -m benchmarks.reading_path                 # a table and the totals; exit 1 above a budget
    python -m benchmarks.reading_path --budget 3000

What counts: every file named in backquotes (`minigpt/model.py`) in the numbered list under "## Reading the
code": GPT-2's path, up to the next heading, within BUDGET; then, under "### Then, a model of today", the
step from GPT-2 to Llama and its relatives, counted apart within TODAY_BUDGET (a file both name counts in
GPT-2's path). "### Further reading" is not counted: the budgets are what the path asks a student to
read, not what the repository holds. A named folder (`instrument/`) counts every .py file in it. A file named
twice counts once. Its lines are all its lines, blank lines, comments and docstrings included: what a reader
scrolls through. A path named there that does not exist is an error (exit 2): the README would send a
student to nothing.
"""

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGET = 2500  # GPT-2's path: read in one sitting
TODAY_BUDGET = 800  # the step to a model of today, after it
SECTION = "## Reading the code"
TODAY = "### Then, a model of today"
FURTHER = "### Further reading"
# A backquoted name that is a path: folders and a file name with an extension, such as minigpt/model.py or instrument/
PATH = re.compile(r"`((?:[\w.-]+/)+(?:[\w.-]+\.\w+)?)`")


def reading_path(readme: str, section: str = SECTION) -> list[str]:
    """The paths named in a section's list (up to its next heading), in order, each once."""
    lines = readme.splitlines()
    try:
        start = lines.index(section)
    except ValueError:
        raise SystemExit(f'error: README has no "{section}" section') from None
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


def count(names: list[str], root: Path, counted: dict) -> dict[str, int]:
    """{file: its lines} for the files `names` point at that `counted` does not hold already."""
    found = {}
    for name in names:
        for path in files(name, root):
            key = path.relative_to(root).as_posix()
            if key not in counted and key not in found:
                found[key] = len(path.read_text(encoding="utf-8").splitlines())
    return found


def table(title: str, counted: dict[str, int], budget: int) -> bool:
    total = sum(counted.values())
    print(f"{title}\n\n| file | lines |\n|---|---:|")
    for name, n in counted.items():
        print(f"| {name} | {n:,} |")
    print(f"| **total** ({len(counted)} files) | **{total:,}** |")
    verdict = "within" if total <= budget else "over"
    print(f"\n{total:,} lines: {verdict} the budget of {budget:,} (all lines of each file, blank ones included)\n")
    return total <= budget


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--budget", type=int, default=BUDGET, help=f"the most lines GPT-2's path may ask for (default {BUDGET})")
    parser.add_argument("--today-budget", type=int, default=TODAY_BUDGET, help=f"the step after it (default {TODAY_BUDGET})")
    args = parser.parse_args(argv)
    root = args.readme.resolve().parent
    readme = args.readme.read_text(encoding="utf-8")
    gpt2 = count(reading_path(readme), root, {})
    ok = table("GPT-2's path", gpt2, args.budget)
    if TODAY in readme.splitlines():
        ok &= table("Then, a model of today", count(reading_path(readme, TODAY), root, gpt2), args.today_budget)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
