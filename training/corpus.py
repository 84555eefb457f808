"""Build the training corpus for the bundled model: English text from Debian packages, as GPT-2 tokens.

    apt-get install python3.11-doc bible-kjv     # the two sources (root on Debian)
    python -m training.corpus --out data          # writes data/train.bin, data/val.bin, data/provenance.json

Sources (provenance and licences are also in CORPUS.md):
- The Python 3.11 documentation's reStructuredText sources (Debian python3.11-doc,
  /usr/share/doc/python3.11/html/_sources): Python Software Foundation License v2, examples 0BSD.
- The King James Version of the Bible (Debian bible-kjv-text, read with its `bible` program): public domain.

Each source file (a documentation page, a book of the Bible) is one document; documents are joined
with <|endoftext|> as in GPT-2's training data; every 20th document goes to validation, so the two
splits share no text. Tokens are stored as uint16 (GPT-2's 50257 ids fit), the format `training` reads.

--out follows the rules of every minigpt command that writes a folder (outdir/__init__.py): new, empty,
or a previous corpus holding only its own files (replaced); anything else is refused untouched, and an
interrupted or failed run leaves it exactly as it was.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import outdir  # the standard library only: quick to import, so that Ctrl-C from here on is one line

try:
    import numpy as np

    from weights.tokenizer_files import read_tokenizer
except KeyboardInterrupt:  # while importing torch, through weights (seconds)
    outdir.interrupted_while_starting(__name__)

DEFAULT_OUT = Path("data")  # where `python -m training` looks by default (--data)

DOCS_DIR = Path("/usr/share/doc/python3.11/html/_sources")
VOCAB_DIR = Path(__file__).parent.parent / "weights" / "bundled"
VALIDATION_EVERY = 20
# The 66 books, with the abbreviations the `bible` program prints before each verse ("Ge1:1 ...").
BOOKS = (
    "Gen Exo Lev Num Deu Jos Jdg Rut 1Sa 2Sa 1Ki 2Ki 1Ch 2Ch Ezr Neh Est Job Psa Pro Ecc Son Isa Jer Lam Eze Dan Hos "
    "Joe Amo Oba Jon Mic Nah Hab Zep Hag Zec Mal Mat Mar Luk Joh Act Rom 1Co 2Co Gal Eph Phi Col 1Th 2Th 1Ti 2Ti Tit "
    "Phm Heb Jam 1Pe 2Pe 1Jo 2Jo 3Jo Jude Rev"
).split()


def debian_version(package: str) -> str:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def check_sources() -> None:
    """Both sources are installed, or a UsageError saying how to install the missing one."""
    if not DOCS_DIR.is_dir():
        raise outdir.UsageError(f"{DOCS_DIR} not found; install it with: apt-get install python3.11-doc")
    if shutil.which("bible") is None:
        raise outdir.UsageError("the `bible` program was not found; install it with: apt-get install bible-kjv")


def read_sources() -> dict[str, list[str]]:
    """{Debian package: its documents}, in the order the splits are built."""
    return {"python3.11-doc": python_docs(), "bible-kjv-text": bible_books()}


def python_docs() -> list[str]:
    return [path.read_text(encoding="utf-8") for path in sorted(DOCS_DIR.rglob("*.rst.txt"))]


def bible_books() -> list[str]:
    """One document per book: its verses, one per line, with the "Ge1:1 " references removed."""
    books = []
    for book in BOOKS:
        text = subprocess.run(["bible", "-f", f"{book}1:1-{book}999:999"], capture_output=True, text=True, check=True).stdout
        verses = [re.sub(r"^\S+\d+:\d+ ", "", line) for line in text.splitlines() if line.strip()]
        books.append("\n".join(verses) + "\n")
    return books


def run(args) -> Path:
    out = Path(os.path.abspath(args.out))  # not resolve(): a link given as --out is refused, not followed
    outdir.check(out, outdir.CORPUS)  # before the sources are read and tokenized (a minute or two)
    check_sources()
    tokenizer = read_tokenizer(VOCAB_DIR)
    folder = outdir.OutputFolder(out, outdir.CORPUS)
    with folder as scratch:  # the corpus is built in scratch, beside --out, and swapped into place at the end
        sources = read_sources()
        splits: dict[str, list[int]] = {"train": [], "val": []}
        for documents in sources.values():
            for i, document in enumerate(documents):
                split = "val" if i % VALIDATION_EVERY == VALIDATION_EVERY - 1 else "train"
                splits[split] += tokenizer.encode(document) + [tokenizer.eot]
        provenance = {"sources": {}, "splits": {}}
        for name, documents in sources.items():
            provenance["sources"][name] = {
                "debian_version": debian_version(name),
                "documents": len(documents),
                "characters": sum(map(len, documents)),
            }
        for split, tokens in splits.items():
            data = np.array(tokens, dtype=np.uint16)
            with outdir.writing(scratch / f"{split}.bin") as path:
                path.write_bytes(data.tobytes())
            provenance["splits"][split] = {"tokens": len(data), "sha256": hashlib.sha256(data.tobytes()).hexdigest()}
        with outdir.writing(scratch / "provenance.json") as path:
            path.write_text(json.dumps(provenance, indent=2) + "\n")
        folder.publish()
    print(json.dumps(provenance, indent=2))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.corpus", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"folder for train.bin, val.bin, provenance.json: new, empty, or a previous corpus (default: ./{DEFAULT_OUT})",
    )
    return outdir.command(run, parser.parse_args(argv))


if __name__ == "__main__":
    try:
        status = main()
    except KeyboardInterrupt:  # before main's handlers are in place (they make SIGINT `outdir.Interrupted`)
        outdir.interrupted_while_starting(__name__)
    sys.exit(status)
