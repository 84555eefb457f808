"""The --out folder: built elsewhere, swapped into place whole, and nothing in it that the command did not write.

--out may name
- nothing yet: it is created;
- an empty folder, or a previous report that holds only its own files: it is replaced in one step;
- anything else (a file, a link, a folder holding anything the command did not write): refused, untouched.
A finished report is recognised by MARKER, a JSON file listing every file the command wrote there.

The report is written into a scratch folder beside --out, named ".NAME.partial-PID-RANDOM", and moved into
place at the very end. SIGINT and SIGTERM become `Interrupted`, so the scratch folder is removed on the way
out; they are held back while the folders are swapped. A run killed outright (SIGKILL, power loss) leaves
its scratch folder behind: the next run with the same --out removes those whose process is gone, and no
other file.
"""

import ctypes
import json
import os
import pickle
import re
import shutil
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

MARKER = ".minigpt-growth-report.json"
FORMAT = "minigpt growth report"
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class OutputError(Exception):
    """--out names something the command must not replace. Printed as one line, exit status 2."""


class WriteError(Exception):
    """The operating system refused a write (disk full, read-only, file-size limit)."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived. A BaseException, as KeyboardInterrupt is, so no `except Exception` swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.out_unchanged = True  # set by ReportFolder: False once the new report is in place


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


def two_at_once(in_child: Callable[[], object], here: Callable[[], object]) -> tuple[object, object]:
    """(in_child(), here()), run at the same time: in_child in a forked process, whose result comes back
    pickled. For work that holds one core (matplotlib drawing figures) where there are two or more; without
    them, or without fork (anywhere but Linux), both run here, one after the other.

    Nothing the child writes outlives the run that owns the scratch folder: the child dies with this
    process (PR_SET_PDEATHSIG), and if here() raises (Interrupted, WriteError) the child is killed and
    reaped before the exception goes on to remove that folder. The child takes SIGINT and SIGTERM the
    system's default way: it has nothing of its own to clean up. A WriteError in the child is raised here
    as it was; any other failure there is raised here as a WriteError carrying the child's traceback.
    """
    if sys.platform != "linux" or len(os.sched_getaffinity(0)) < 2:
        return in_child(), here()
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    parent = os.getpid()
    # SIGINT and SIGTERM wait over the fork: arriving during it, their exception would be raised inside an
    # at-fork callback (logging registers some), which Python reports as "ignored" and drops (seen in tests).
    held = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        os.close(read_end)
        os.close(write_end)
        raise
    if pid == 0:  # the child: never returns into the caller's frames (os._exit skips their cleanup)
        try:
            os.close(read_end)
            for s in SIGNALS:
                signal.signal(s, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)
            try:
                outcome = ("done", in_child())
            except WriteError as error:
                outcome = ("raised", error)
            except BaseException:
                outcome = ("failed", traceback.format_exc())
            with os.fdopen(write_end, "wb") as pipe:
                pickle.dump(outcome, pipe)
        finally:
            os._exit(0)
    try:
        os.close(write_end)
        signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a signal held over the fork arrives here
        with os.fdopen(read_end, "rb") as pipe:
            mine = here()
            sent = pipe.read()  # everything, once the child has finished
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        raise
    finally:
        _, status = os.waitpid(pid, 0)
    if not sent:
        raise WriteError(f"the helper process {pid} ended without a result (wait status {status})")
    kind, value = pickle.loads(sent)
    if kind == "raised":
        raise value
    if kind == "failed":
        raise WriteError(f"the helper process {pid} failed:\n{value}")
    return value, mine


@contextmanager
def writing(path: Path):
    """Turn an OS error while writing `path` into a WriteError that names it (a failed write() names no file)."""
    try:
        yield path
    except OSError as error:
        raise WriteError(f"could not write {path}: {error.strerror or error}") from None


# ---------------------------------------------------------------------------------------------
# What --out holds


def _contents(folder: Path) -> tuple[set[str], set[str]]:
    """(files, folders) under folder, as paths relative to it; links count as files and are not followed."""
    files, folders = set(), set()
    for root, dirs, names in os.walk(folder):
        base = Path(root).relative_to(folder)
        for name in dirs:
            (files if (Path(root) / name).is_symlink() else folders).add(str(base / name))
        files |= {str(base / name) for name in names}
    return files, folders


def _written_by_us(folder: Path) -> set[str] | None:
    """The files a previous report says it wrote, or None if folder holds no readable marker."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        return set(marker["files"]) if marker.get("format") == FORMAT else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check(out: Path) -> None:
    """Raise OutputError unless out is missing, an empty folder, or a previous report holding only its own files."""
    if out.is_symlink():
        raise OutputError(f"--out {out} is a symbolic link; give the folder itself, or a new name (nothing was touched)")
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputError(f"--out {out} is an existing file, not a folder; give a new folder name (nothing was touched)")
    files, folders = _contents(out)
    if not files and not folders:
        return
    ours = _written_by_us(out)
    if ours is None:
        what = f"--out {out} is a folder holding {len(files)} file(s) that this command did not write"
        advice = "give a new or empty folder (nothing was touched)"
        if {"summary.json", "report.md"} <= files:
            advice = (
                "it looks like a report from before minigpt marked its reports: remove it yourself if you no longer need it, or "
                + advice
            )
        raise OutputError(f"{what} ({_examples(files or folders)}); {advice}")
    parents = {str(parent) for name in ours for parent in Path(name).parents}
    foreign = (files - ours - {MARKER}) | (folders - parents)
    if foreign:
        raise OutputError(
            f"--out {out} holds a previous report and also {len(foreign)} thing(s) this command did not write "
            f"({_examples(foreign)}); move them out, or give another folder (nothing was touched)"
        )


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


class ReportFolder:
    """with ReportFolder(out) as scratch: write the report into scratch, then call publish().

    Leaving the block without publish() (an error, an interrupt) removes scratch and any parent
    folders of out that this created, so out and its surroundings are as they were.
    """

    def __init__(self, out: Path):
        self.out = out
        self.scratch: Path | None = None
        self.created: list[Path] = []  # parent folders of out that did not exist
        self.published = False

    def __enter__(self) -> Path:
        check(self.out)
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
        """Mark the report as ours and swap it into place in one step."""
        files, _ = _contents(self.scratch)
        with writing(self.scratch / MARKER) as path:
            path.write_text(json.dumps({"format": FORMAT, "version": 1, "files": sorted(files)}, indent=1) + "\n")
        check(self.out)  # again: the user may have put something there while the study ran
        with signals_held():
            _replace(self.scratch, self.out)
            self.published = True
        # The scratch path now holds the previous report, or nothing: removed in __exit__.

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


def _replace(new: Path, out: Path) -> None:
    """Put folder new at out. Missing or empty out: one rename. A previous report: exchanged with new in one
    step (Linux's renameat2), so out is never missing; new then holds the previous report."""
    if not out.exists() or not any(out.iterdir()):
        os.replace(new, out)  # rename(2) replaces an empty folder atomically
        return
    if _exchange(new, out):
        return
    # No atomic exchange here (not Linux, or a file system without it): two renames. A crash between them
    # leaves the previous report in the scratch folder, removed by the next run.
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    os.replace(out, aside)
    os.replace(new, out)
    os.replace(aside, new)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with renameat2(RENAME_EXCHANGE); False where that is not available."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    errno = ctypes.get_errno()
    if errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: the file system or kernel cannot exchange
        return False
    raise OSError(errno, os.strerror(errno), str(b))
