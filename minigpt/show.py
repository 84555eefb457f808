"""`python -m minigpt.show [--tokenizer PATH] TEXT`: every stage of encoding TEXT, as minigpt/tokenizer.py's
`explain` prints it. The one place in minigpt that reads files: the bundled model's, found by path (minigpt never
imports weights), or the tokenizer it is given."""

import argparse
import json
import sys
from pathlib import Path

from .tokenizer import Tokenizer, explain
from .tokenizer_json import JsonTokenizer

# The bundled model's folder, found beside this package rather than imported from it: minigpt never imports
# weights. Its vocab.json and merges.txt are GPT-2's own, the same as every official checkpoint's.
BUNDLED = Path(__file__).resolve().parent.parent / "weights" / "bundled"

LITERAL_NEWLINE = (
    'note: the text holds a backslash and an "n", not a newline: bash passes "\\n" inside double quotes as '
    "those two characters. For a newline, write the text as $'...\\n...'."
)


def read_files(path: Path) -> Tokenizer:
    """The command's tokenizer (the package itself reads no file): a tokenizer.json, or a folder with
    vocab.json and merges.txt, or else with tokenizer.json (the rule `weights` follows for a model's folder)."""
    if path.is_dir() and not (path / "vocab.json").is_file():
        path = path / "tokenizer.json"
    try:
        if path.is_dir():
            vocab = json.loads((path / "vocab.json").read_text(encoding="utf-8"))
            return Tokenizer.from_strings(vocab, (path / "merges.txt").read_text(encoding="utf-8"))
        return JsonTokenizer.from_tokenizer_json(json.loads(path.read_text(encoding="utf-8")))
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply to read") from None


def command(argv: list[str]) -> str:
    """`python -m minigpt.show [--tokenizer PATH] TEXT`: every stage of encoding TEXT."""
    parser = argparse.ArgumentParser(prog="python -m minigpt.show", description="Show every stage of BPE for a text.")
    parser.add_argument("text")
    parser.add_argument(
        "--tokenizer",
        type=Path,
        default=BUNDLED,
        metavar="PATH",
        help="a tokenizer.json (Pythia's), or a folder with vocab.json and merges.txt or tokenizer.json "
        "(default: the bundled model's, GPT-2's own)",
    )
    args = parser.parse_args(argv)
    shown = explain(read_files(args.tokenizer), args.text)
    return f"{LITERAL_NEWLINE}\n\n{shown}" if "\\n" in args.text and "\n" not in args.text else shown


if __name__ == "__main__":
    try:
        shown = command(sys.argv[1:])
    except (OSError, ValueError) as error:  # a missing file, or a tokenizer.json part minigpt refuses
        sys.exit(f"python -m minigpt.show: {error}")
    print(shown)
