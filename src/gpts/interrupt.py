"""Stopping a long job where nothing is lost: at its next step boundary, after saving what it has.

A `StopRequest` is set by Ctrl-C or SIGTERM (through `stop_on_signals`, in the main thread) or by another thread
(a server cancelling a job). Training loops check it between steps, save a checkpoint and return; a second
signal stops at once (KeyboardInterrupt), for when a step takes too long to wait for.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from gpts.events import Message, Report

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Asks a running job to stop at its next safe point. Thread-safe."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal: int | None = None  # the signal that asked, if one did

    def set(self, signum: int | None = None) -> None:
        if not self._event.is_set():
            self.signal = signum
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    @property
    def exit_code(self) -> int:
        """What a command stopped this way exits with: 128 + the signal, as a shell reports it (130 for Ctrl-C)."""
        return 128 + (self.signal or signal.SIGINT)


@contextmanager
def stop_on_signals(stop: StopRequest, report: Report) -> Iterator[None]:
    """While the block runs, the first SIGINT or SIGTERM sets `stop` and says what happens next; a second one raises
    KeyboardInterrupt at once. Signal handlers live in the main thread only: elsewhere this changes nothing and
    whoever runs the job sets `stop` itself."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set(signum)
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        report(Message(f"{name}: stopping after this step and saving a checkpoint. Press Ctrl-C again to stop at "
                       "once without saving.", level="warning"))

    previous = {s: signal.signal(s, handle) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
