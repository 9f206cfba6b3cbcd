"""Faults a function host can be told to play, for the fault-injection run (`make chaos`).

Only a host started with `MARKETPLACE_FAULTS_FILE` set looks for faults, so
`make run` and the tests never pay for it. The run writes the file; the host
reads it again when it changes (one `stat` per request). Today there is one
fault: answering slowly, past the KafkaSource's delivery timeout, so the same
event is delivered again while the first attempt is still to commit.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

FAULTS_FILE_VARIABLE = "MARKETPLACE_FAULTS_FILE"
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def slow_down(path: Path, prefix: str, seconds: float, for_seconds: float) -> None:
    """From now, for `for_seconds`, requests under `prefix` wait `seconds` before being handled."""
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps({"slow": {"prefix": prefix, "seconds": seconds,
                                            "until": time.time() + for_seconds}}))
    partial.replace(path)


class FaultyHost:
    """WSGI middleware: delay the requests the faults file names, while it says so."""

    def __init__(self, app: WSGIApp, path: Path) -> None:
        self.app = app
        self.path = path
        self._seen: float | None = None
        self._slow: dict[str, Any] = {}

    def _current(self) -> dict[str, Any]:
        try:
            changed = self.path.stat().st_mtime
        except OSError:
            return {}
        if changed != self._seen:
            try:
                self._slow = json.loads(self.path.read_text()).get("slow", {})
            except (OSError, ValueError):
                self._slow = {}
            self._seen = changed
        return self._slow

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        slow = self._current()
        if (slow and time.time() < slow["until"]
                and environ.get("PATH_INFO", "").startswith(slow["prefix"])):
            time.sleep(slow["seconds"])
        return self.app(environ, start_response)


def wrap(app: WSGIApp) -> WSGIApp:
    """`app` as it is, or behind `FaultyHost` when the faults file is configured."""
    path = os.environ.get(FAULTS_FILE_VARIABLE)
    return FaultyHost(app, Path(path)) if path else app
