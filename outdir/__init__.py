"""A command's --out folder: built elsewhere, swapped into place whole, and nothing in it that the command did not write.

Every command of minigpt that writes a folder (`python -m analysis.growth`, `analysis.dynamics`,
`training`, `training.corpus`) goes through here. --out may name
- nothing yet: it is created;
- an empty folder, or a previous output of the same command that holds only its own files: it is replaced in one step;
- anything else (a file, a link, a mount point, a folder holding anything the command did not write): refused,
  untouched.
A finished output is recognised by its marker, a JSON file (`Kind.marker`) listing every file the command wrote
there; each command has its own, so one command never replaces another's output.

The output is written into a scratch folder beside --out, named ".NAME.partial-PID-RANDOM", and moved into
place at the very end: exchanged with --out in one step, after which the previous output loses only the files
its marker lists; anything a user saved into it meanwhile is moved into the new one. SIGINT and SIGTERM
become `Interrupted`, so the scratch folder is removed on the way out; they are held back while the folders
are swapped. A run killed outright (SIGKILL, power loss) leaves its scratch folder behind: the next run with
the same --out removes those whose process is gone, and no other file.
"""

import ctypes
import errno
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True)
class Kind:
    """What a command writes: the marker file that lists its files, and the format named inside it."""

    marker: str
    format: str
    noun: str  # what the messages call it


REPORT = Kind(".minigpt-growth-report.json", "minigpt growth report", "report")  # analysis.growth
DYNAMICS = Kind(".minigpt-dynamics-report.json", "minigpt dynamics report", "report")  # analysis.dynamics
TRAINING_RUN = Kind(".minigpt-training-run.json", "minigpt training run", "training run")  # python -m training
CORPUS = Kind(".minigpt-corpus.json", "minigpt corpus", "corpus")  # python -m training.corpus


class UsageError(Exception):
    """Bad input to a command: printed as one line, exit status 2."""


class OutputError(Exception):
    """--out names something the command must not replace. Printed as one line, exit status 2."""


class WriteError(Exception):
    """The operating system refused a write (disk full, read-only, file-size limit)."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived. A BaseException, as KeyboardInterrupt is, so no `except Exception` swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.out_unchanged = True  # set by OutputFolder: False once the new output is in place


@contextmanager
def signals_as_exceptions():
    """Within the block, SIGINT and SIGTERM raise Interrupted (Python's default makes only SIGINT an exception)."""

    def interrupt(signum, _frame):
        raise Interrupted(signum)

    previous = {s: signal.signal(s, interrupt) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def signals_held():
    """SIGINT and SIGTERM wait until the block is left, then arrive as usual."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def writing(path: Path):
    """Turn an OS error while writing `path` into a WriteError that names it (a failed write() names no file)."""
    try:
        yield path
    except OSError as error:
        raise WriteError(f"could not write {path}: {error.strerror or error}") from None


# ---------------------------------------------------------------------------------------------
# What --out holds


def _contents(folder: Path, limit: int | None = None) -> tuple[set[str], set[str]]:
    """(files, folders) under folder, as paths relative to it; links count as files and are not followed.
    With limit, the walk stops once it has found more than limit entries (a folder such as / is not walked whole)."""
    files, folders = set(), set()
    for root, dirs, names in os.walk(folder):
        base = Path(root).relative_to(folder)
        for name in dirs:
            (files if (Path(root) / name).is_symlink() else folders).add(str(base / name))
        files |= {str(base / name) for name in names}
        if limit is not None and len(files) + len(folders) > limit:
            break
    return files, folders


def _written_by_us(folder: Path, kind: Kind) -> set[str] | None:
    """The files a previous output says it wrote, or None if folder holds no readable marker of this kind."""
    try:
        marker = json.loads((folder / kind.marker).read_text(encoding="utf-8"))
        return set(marker["files"]) if marker.get("format") == kind.format else None
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None


# A folder without our marker is refused after a look at this many of its entries, not a walk of all of them.
LOOK = 1000


def check(out: Path, kind: Kind = REPORT) -> None:
    """Raise OutputError unless out is missing, an empty folder, or a previous output of this kind holding only its own files."""
    try:
        _check(out, kind)
    except OSError as error:  # a name longer than the file system allows (Errno 36), a folder it may not read
        raise OutputError(f"--out {out}: {error.strerror or error}; give another folder (nothing was touched)") from None


def _check(out: Path, kind: Kind) -> None:
    if out.is_symlink():
        raise OutputError(f"--out {out} is a symbolic link; give the folder itself, or a new name (nothing was touched)")
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputError(f"--out {out} is an existing file, not a folder; give a new folder name (nothing was touched)")
    if os.path.ismount(out):  # rename(2) cannot move a mount point (EBUSY), and the swap at the end renames --out
        raise OutputError(
            f"--out {out} is a mount point, which this command cannot replace whole; give a folder inside it, "
            f"such as --out {out / kind.noun.replace(' ', '-')} (nothing was touched)"
        )
    ours = _written_by_us(out, kind)
    files, folders = _contents(out, limit=None if ours is not None else LOOK)
    if not files and not folders:
        return
    if ours is None:
        count = f"{len(files)}" if len(files) + len(folders) <= LOOK else f"more than {LOOK}"
        what = f"--out {out} is a folder holding {count} file(s) that this command did not write"
        advice = "give a new or empty folder (nothing was touched)"
        if kind == REPORT and {"summary.json", "report.md"} <= files:
            advice = (
                "it looks like a report from before minigpt marked its reports: remove it yourself if you no longer need it, or "
                + advice
            )
        raise OutputError(f"{what} ({_examples(files or folders)}); {advice}")
    foreign = _foreign(files, folders, ours, kind)
    if foreign:
        raise OutputError(
            f"--out {out} holds a previous {kind.noun} and also {len(foreign)} thing(s) this command did not write "
            f"({_examples(foreign)}); move them out, or give another folder (nothing was touched)"
        )


def _foreign(files: set[str], folders: set[str], ours: set[str], kind: Kind) -> set[str]:
    """What a previous output's folder holds beyond what its marker lists (and the folders those lie in)."""
    parents = {str(parent) for name in ours for parent in Path(name).parents}
    return (files - ours - {kind.marker}) | (folders - parents)


def _examples(names: set[str], n: int = 3) -> str:
    shown = sorted(names)[:n]
    return ", ".join(shown) + (", …" if len(names) > n else "")


def remove_stale_scratch(out: Path) -> list[Path]:
    """Remove scratch folders of out (".NAME.partial-PID-RANDOM") whose process no longer runs; return them."""
    pattern = re.compile(rf"\.{re.escape(out.name)}\.partial-(\d+)-\w+")
    removed = []
    if not out.parent.is_dir():
        return removed
    for path in out.parent.iterdir():
        match = pattern.fullmatch(path.name)
        if match and path.is_dir() and not path.is_symlink() and not _process_runs(int(match.group(1))):
            shutil.rmtree(path)
            removed.append(path)
    return removed


def _process_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


# ---------------------------------------------------------------------------------------------
# Building a report and putting it in place


class OutputFolder:
    """with OutputFolder(out, kind) as scratch: write the output into scratch, then call publish().

    Leaving the block without publish() (an error, an interrupt) removes scratch and any parent
    folders of out that this created, so out and its surroundings are as they were.
    """

    def __init__(self, out: Path, kind: Kind = REPORT):
        self.out, self.kind = out, kind
        self.scratch: Path | None = None
        self.created: list[Path] = []  # parent folders of out that did not exist
        self.published = False

    def __enter__(self) -> Path:
        check(self.out, self.kind)
        remove_stale_scratch(self.out)
        missing = [p for p in reversed(self.out.parents) if not p.exists()]
        try:
            for parent in missing:
                parent.mkdir()
                self.created.append(parent)
            self.scratch = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-{os.getpid()}-", dir=self.out.parent))
            umask = os.umask(0)
            os.umask(umask)
            self.scratch.chmod(0o777 & ~umask)  # mkdtemp's 0700 is for secrets; a report is made to be shared
        except OSError as error:
            self._undo()
            where = Path(error.filename).parent if error.filename else self.out.parent
            raise WriteError(f"could not create a folder in {where}: {error.strerror or error}") from None
        return self.scratch

    def publish(self) -> None:
        """Mark the output as ours and swap it into place in one step; then remove the previous output's own
        files, and put back into --out anything else that was saved there meanwhile."""
        files, _ = _contents(self.scratch)
        with writing(self.scratch / self.kind.marker) as path:
            path.write_text(json.dumps({"format": self.kind.format, "version": 1, "files": sorted(files)}, indent=1) + "\n")
        check(self.out, self.kind)  # again: the user may have put something there while the command ran
        with signals_held():
            _replace(self.scratch, self.out, self.kind)
            self.published = True
            previous, self.scratch = self.scratch, None  # it holds the previous output now, or nothing
            kept = _retire(previous, self.out, self.kind)
        if kept is not None:
            saved = f"files saved into the previous {self.kind.noun} while this one was written"
            print(f"note: {saved} are kept in {kept}", file=sys.stderr)

    def __exit__(self, kind, error, _traceback) -> bool:
        if isinstance(error, Interrupted):
            error.out_unchanged = not self.published
        self._undo()
        return False

    def _undo(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
        if not self.published:
            for parent in reversed(self.created):
                try:
                    parent.rmdir()  # only if still empty
                except OSError:
                    break


def _replace(new: Path, out: Path, kind: Kind) -> None:
    """Put folder new at out. Missing out: one rename. A folder there (empty, or a previous output): exchanged
    with new in one step (Linux's renameat2), so out is never missing; new then holds what out held."""
    while True:
        if not out.exists():
            try:
                os.rename(new, out)
                return
            except OSError as error:  # another run (or a user) made out meanwhile: look at it again
                if error.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                    raise
                check(out, kind)
                continue
        if _exchange(new, out):
            return
        # No atomic exchange here (not Linux, or a file system without it): two renames. A crash between them
        # leaves the previous output in a scratch folder, which the next run removes.
        aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
        os.replace(out, aside)
        os.replace(new, out)
        os.replace(aside, new)
        return


def _retire(previous: Path, out: Path, kind: Kind) -> Path | None:
    """Remove the previous output, now at previous, file by file: only the files its marker lists. Anything
    else in it (a file a user saved there after the last check, or through a folder they had open) is moved
    back into out; if out already has that name, the rest is kept beside out, and that folder is returned."""
    ours = (_written_by_us(previous, kind) or set()) | {kind.marker}
    inside = previous.resolve()
    for name in ours:
        path = previous / name
        # Only inside previous: not through a "..", an absolute name or a link to a folder elsewhere
        if path.parent.resolve().is_relative_to(inside) and (not path.is_dir() or path.is_symlink()):
            with suppress(FileNotFoundError):
                path.unlink()
    for _ in range(3):  # a writer still busy in there gets three looks
        files, folders = _contents(previous)
        for name in sorted(files):
            with suppress(OSError):  # out has that name already, or a file where this needs a folder: kept below
                (out / name).parent.mkdir(parents=True, exist_ok=True)
                os.link(previous / name, out / name, follow_symlinks=False)  # never over a file: EEXIST
                os.unlink(previous / name)
        for name in sorted(folders, key=lambda name: -name.count(os.sep)):
            with suppress(OSError):
                (previous / name).rmdir()  # only if empty
        try:
            previous.rmdir()
            return None
        except FileNotFoundError:
            return None
        except OSError:
            continue
    kept = out.parent / f"{out.name}.kept-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    os.rename(previous, kept)
    return kept


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with renameat2(RENAME_EXCHANGE); False where that is not available."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # the file system or kernel cannot exchange
        return False
    raise OSError(code, os.strerror(code), str(b))


def interrupted_while_starting(module: str) -> None:
    """Called by a command module on a KeyboardInterrupt during its imports (torch's take seconds): run as a
    command (module "__main__"), one line and exit status 130, as an interrupt later gives; imported, re-raised."""
    if module != "__main__":
        raise KeyboardInterrupt
    print("\ninterrupted (SIGINT) while starting; nothing was written", file=sys.stderr)
    sys.exit(128 + signal.SIGINT)


def command(
    run: Callable, args, user_errors: tuple[type[Exception], ...] = (), failures: tuple[type[Exception], ...] = ()
) -> int:
    """Run a command, run(args), and turn what stops it into one line and an exit status: 2 for bad input
    (UsageError, OutputError, and the command's own user_errors), 1 for a failed write or one of the
    command's own failures raised before its output is in place (--out unchanged), 128 + N for signal N."""
    with signals_as_exceptions():
        try:
            run(args)
        except (UsageError, OutputError, *user_errors) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except (WriteError, *failures) as error:
            print(f"error: {error}; {args.out} is unchanged", file=sys.stderr)
            return 1
        except Interrupted as interrupt:
            state = "unchanged" if interrupt.out_unchanged else "holds the new output, complete"
            print(f"\ninterrupted ({interrupt}); {args.out} {state}", file=sys.stderr)
            return 128 + interrupt.signum
    return 0
