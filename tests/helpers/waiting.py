"""One way to wait for a condition: poll it until it holds, and fail with what was last seen.

Everything the tests watch happens later and elsewhere (an event crosses the broker, a hold
runs out on a clock), so a test polls with a deadline instead of sleeping: a sleep is too
short on a busy machine and wasted on an idle one, and a failure that shows the last value
says how far the system got.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(fetch: Callable[[], T], until: Callable[[T], object] = bool,
               timeout: float = 30.0, interval: float = 0.1, what: str = "condition") -> T:
    """Call `fetch` until `until` holds for what it returns, and return that value.

    After `timeout` seconds it raises an AssertionError naming `what` and the last value.
    """
    deadline = time.monotonic() + timeout
    while True:
        last = fetch()
        if until(last):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s; last seen: {last!r}")
        time.sleep(interval)
