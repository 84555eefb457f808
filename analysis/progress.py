"""The log of a long command: lines stamped with the seconds since the start, and progress bars."""

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Progress:
    """Log lines stamped with the seconds since the start. Long loops show a progress bar (tqdm) when
    the output is a terminal, and otherwise a plain line every `every` seconds and at the end."""

    def __init__(self, stream=None, every: float = 10.0):
        self.stream = sys.stdout if stream is None else stream
        self.every = every
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.start:7.1f} s] {message}", file=self.stream, flush=True)

    @contextmanager
    def counting(self, what: str, total: int, unit: str) -> Iterator[Callable[[int], None]]:
        """Yield advance(n): n more of `total` units are done."""
        if self.stream.isatty():
            from tqdm import tqdm

            with tqdm(total=total, desc=what, unit=unit, file=self.stream, dynamic_ncols=True) as bar:
                yield bar.update
            return
        began = last = time.perf_counter()
        done = 0

        def advance(n: int) -> None:
            nonlocal done, last
            done += n
            now = time.perf_counter()
            if now - last >= self.every or done == total:
                last = now
                self(f"{what}: {done}/{total} {unit}s, {done / max(now - began, 1e-9):.1f} {unit}s/s")

        yield advance
