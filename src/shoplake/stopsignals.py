"""Ctrl-C and SIGTERM as a request to stop, for the long-running commands."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM set ``stop`` instead of raising: the loops check it
    between rounds and finish cleanly. An interrupt raised inside native code could be
    swallowed: DuckDB polls for signals during a query and drops the KeyboardInterrupt when
    the query completes anyway, so a run went on after Ctrl-C. A second Ctrl-C raises
    KeyboardInterrupt, for a user who does not want to wait for the round to end."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def on_stop_signal(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    for sig in previous:
        signal.signal(sig, on_stop_signal)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
