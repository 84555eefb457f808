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
"""

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from weights.checkpoint import read_tokenizer

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


def python_docs() -> list[str]:
    if not DOCS_DIR.is_dir():
        sys.exit(f"error: {DOCS_DIR} not found; install it with: apt-get install python3.11-doc")
    return [path.read_text(encoding="utf-8") for path in sorted(DOCS_DIR.rglob("*.rst.txt"))]


def bible_books() -> list[str]:
    """One document per book: its verses, one per line, with the "Ge1:1 " references removed."""
    if shutil.which("bible") is None:
        sys.exit("error: the `bible` program was not found; install it with: apt-get install bible-kjv")
    books = []
    for book in BOOKS:
        text = subprocess.run(["bible", "-f", f"{book}1:1-{book}999:999"], capture_output=True, text=True, check=True).stdout
        verses = [re.sub(r"^\S+\d+:\d+ ", "", line) for line in text.splitlines() if line.strip()]
        books.append("\n".join(verses) + "\n")
    return books


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data"), help="folder for train.bin, val.bin, provenance.json")
    args = parser.parse_args(argv)
    tokenizer = read_tokenizer(VOCAB_DIR)
    sources = {"python3.11-doc": python_docs(), "bible-kjv-text": bible_books()}
    splits: dict[str, list[int]] = {"train": [], "val": []}
    for documents in sources.values():
        for i, document in enumerate(documents):
            split = "val" if i % VALIDATION_EVERY == VALIDATION_EVERY - 1 else "train"
            splits[split] += tokenizer.encode(document) + [tokenizer.eot]
    args.out.mkdir(parents=True, exist_ok=True)
    provenance = {"sources": {}, "splits": {}}
    for name, documents in sources.items():
        provenance["sources"][name] = {
            "debian_version": debian_version(name),
            "documents": len(documents),
            "characters": sum(map(len, documents)),
        }
    for split, tokens in splits.items():
        data = np.array(tokens, dtype=np.uint16)
        (args.out / f"{split}.bin").write_bytes(data.tobytes())
        provenance["splits"][split] = {"tokens": len(data), "sha256": hashlib.sha256(data.tobytes()).hexdigest()}
    (args.out / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(json.dumps(provenance, indent=2))


if __name__ == "__main__":
    main()
