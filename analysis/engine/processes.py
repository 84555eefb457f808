"""Two pieces of work at once, one in a forked process: how the study draws its figures on two cores.

Speed machinery, not the study: drawing both halves of the figures one after the other gives the same files.
"""

import ctypes
import os
import pickle
import signal
import sys
import traceback
from collections.abc import Callable

from outdir import SIGNALS, WriteError


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
    # Blocking them holds them for this thread only: another thread (torch's workers) may still take one,
    # and Python then runs the handler in this thread wherever it is, at-fork callbacks included. So the
    # handlers too are replaced over the fork, by one that only notes the signal; it is raised after.
    arrived = []
    handlers = {s: signal.signal(s, lambda signum, _frame: arrived.append(signum)) for s in SIGNALS}
    held = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)

    def release() -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        for s, handler in handlers.items():
            signal.signal(s, handler)
        for signum in arrived:
            signal.raise_signal(signum)

    try:
        pid = os.fork()
    except BaseException:
        os.close(read_end)
        os.close(write_end)
        release()
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
        release()  # a signal held over the fork arrives here
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
