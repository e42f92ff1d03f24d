"""Progress bars that suit where the output goes: tqdm's bar on a terminal; on a pipe or a log
file, plain lines (the first step, then at most one line every `every` seconds, and the last
step), because tqdm's carriage returns turn a log file into one line of thousands of updates.

Every progress bar in mpq comes from progress_bar(); it takes tqdm's common arguments.
"""
from __future__ import annotations

import sys
import time

# Seconds between two lines when the output is not a terminal.
LINE_SECONDS = 10.0


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or a file-like stream without a descriptor
        return False


class LineProgress:
    """tqdm's interface as far as mpq uses it (iteration, update, n, set_postfix, refresh,
    close, a `with` block), printing whole lines."""

    def __init__(self, iterable=None, *, desc: str = "", total: int | None = None, unit: str = "it",
                 file=None, every: float = LINE_SECONDS):
        self.iterable, self.desc, self.unit, self.every = iterable, desc, unit, every
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.file = total, file
        self.n, self.postfix = 0, ""
        self.start = time.perf_counter()
        self.last_print: float | None = None
        self.printed_n: int | None = None
        self.closed = False

    def _line(self) -> str:
        elapsed = time.perf_counter() - self.start
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        eta = ""
        if self.total is not None and 0 < self.n < self.total:
            left = elapsed / self.n * (self.total - self.n)  # at the mean pace so far
            eta = f", eta {left:.0f} s" if left < 120 else f", eta {left / 60:.1f} min"
        postfix = f", {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {count} {self.unit} ({elapsed:.1f} s{eta}{postfix})"

    def _emit(self) -> None:
        print(self._line(), file=self.file if self.file is not None else sys.stderr, flush=True)
        self.last_print, self.printed_n = time.perf_counter(), self.n

    def refresh(self) -> None:
        """Prints a line for the first step, the last step, or when `every` seconds have passed."""
        if self.n == self.printed_n:
            return
        done = self.total is not None and self.n >= self.total
        if self.last_print is None or done or time.perf_counter() - self.last_print >= self.every:
            self._emit()

    def update(self, n: int = 1) -> None:
        self.n += n
        self.refresh()

    def set_postfix(self, **kwargs) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kwargs.items())

    def close(self) -> None:
        if not self.closed and self.n != self.printed_n:
            self._emit()  # the final count, whatever the interval
        self.closed = True

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Silent(LineProgress):
    def refresh(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def progress_bar(iterable=None, *, desc: str = "", total: int | None = None, unit: str = "it",
                 disable: bool = False, file=None):
    """tqdm on a terminal, LineProgress elsewhere (file: default sys.stderr), nothing when
    `disable`. Use it like tqdm: wrap an iterable, or give total= and call update()."""
    if disable:
        return iter(iterable) if iterable is not None else _Silent(desc=desc, total=total, unit=unit)
    stream = file if file is not None else sys.stderr
    # A notebook's stderr is no terminal, but tqdm.auto draws a widget there.
    if _is_terminal(stream) or (file is None and "ipykernel" in sys.modules):
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, unit=unit, file=stream)
    return LineProgress(iterable, desc=desc, total=total, unit=unit, file=stream)
