"""Stopping a run cleanly on SIGINT and SIGTERM."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

from .errors import RunInterrupted


@contextlib.contextmanager
def interrupt_on_signals() -> Iterator[Callable[[], contextlib.AbstractContextManager[None]]]:
    """While a run trains, SIGINT and SIGTERM raise ``RunInterrupted`` (exit status 130 and 143).

    The exception abandons the current step and unwinds: temporary files are removed and the
    progress bar is closed. Yields ``hold``, a context in which a signal waits until the block
    is done, so that files which must agree (the checkpoint and metrics.jsonl) are written
    together. Signals the process was started ignoring stay ignored; only the main thread can
    take signals.
    """
    pending: list[RunInterrupted] = []
    holding = [False]

    def interrupt(signum: int, _frame: object) -> None:
        exc = RunInterrupted(f"interrupted by {signal.Signals(signum).name}", 128 + signum)
        if holding[0]:
            pending.append(exc)
        else:
            raise exc

    @contextlib.contextmanager
    def hold() -> Iterator[None]:
        holding[0] = True
        try:
            yield
        finally:
            holding[0] = False
        if pending:
            raise pending.pop()

    if threading.current_thread() is not threading.main_thread():
        yield contextlib.nullcontext
        return
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, interrupt)
    try:
        yield hold
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
