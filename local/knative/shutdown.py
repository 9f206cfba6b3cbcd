"""Stopping a long-running local process cleanly on Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import time
from contextlib import suppress


def stop_on_signals() -> None:
    """Make Ctrl-C and SIGTERM raise KeyboardInterrupt once, then ignore both.

    The handler only raises: taking a lock in a signal handler (`Event.set`) can
    deadlock the main thread it interrupted, which once left a stack running.
    Ignoring later signals lets the cleanup that follows run to its end.
    """

    def stop(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def wait_for_stop() -> None:
    """Block until `stop_on_signals` turns a signal into KeyboardInterrupt."""
    with suppress(KeyboardInterrupt):
        while True:
            time.sleep(3600)
