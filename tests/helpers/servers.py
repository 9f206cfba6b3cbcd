"""The backing servers of a test session: the one configured, or one started from its wheel.

A URL set in the environment (a CI service, a developer's own server) is used as it is;
otherwise the server is started embedded, so the suite needs nothing installed on the
machine. A server that cannot start ends the run with its one-line reason: every test after
it would fail for the same reason, at length.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from local.stack.embedded import EmbeddedServer, EmbeddedServerError

T = TypeVar("T")


def start_or_exit(start: Callable[[], T]) -> T:
    """What `start` returns; if it cannot start, the run ends here with the reason."""
    try:
        return start()
    except EmbeddedServerError as exc:
        pytest.exit(str(exc), returncode=1)


@contextmanager
def configured_or_embedded(variable: str, start: Callable[[Path], EmbeddedServer],
                           workdir: Path) -> Iterator[str]:
    """The URL in `variable` if it is set, else that of a server `start`ed in `workdir`."""
    configured = os.environ.get(variable)
    if configured:
        yield configured
        return
    server = start_or_exit(lambda: start(workdir))
    try:
        yield server.url
    finally:
        server.stop()
