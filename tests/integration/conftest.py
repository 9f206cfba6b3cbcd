"""Fixtures the integration tests share beyond the session's backing servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from local.stack.embedded import EmbeddedServer, start_kafka


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """A broker of the module's own, so no test module sees another's records."""
    server = start_kafka(Path(tmp_path_factory.mktemp("kafka")))
    yield server
    server.stop()
