"""Faults a function host can be told to play: for `make chaos` and the dead-letter tests.

Only a host started with `MARKETPLACE_FAULTS_FILE` set looks for faults, so
`make run` never pays for it (the end-to-end stack pays one `stat` per
request). The run writes the file; the host reads it again when it changes.
Three faults: answering slowly, past the KafkaSource's delivery timeout, so the
same event is delivered again while the first attempt is still to commit;
refusing one booking's events with a 4xx, as a bug would, so they are
dead-lettered (the test "fixes" it by clearing the file, then redrives); and
dropping every request under a prefix for a while (the payment provider's
webhooks, which the embedded provider never sends again: the reconciler must
find out).
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
    _write(path, {"slow": {"prefix": prefix, "seconds": seconds,
                           "until": time.time() + for_seconds}})


def refuse(path: Path, prefix: str, subject: str, status: int = 422) -> None:
    """From now until `clear`, requests under `prefix` about `subject` are answered `status`."""
    _write(path, {"refuse": {"prefix": prefix, "subject": subject, "status": status}})


def drop(path: Path, prefix: str, for_seconds: float, status: int = 503) -> None:
    """From now, for `for_seconds`, every request under `prefix` is answered `status`."""
    _write(path, {"drop": {"prefix": prefix, "status": status,
                           "until": time.time() + for_seconds}})


def clear(path: Path) -> None:
    """No fault any more."""
    _write(path, {})


def _write(path: Path, faults: dict[str, Any]) -> None:
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(faults))
    partial.replace(path)


class FaultyHost:
    """WSGI middleware: delay or refuse the requests the faults file names, while it says so."""

    def __init__(self, app: WSGIApp, path: Path) -> None:
        self.app = app
        self.path = path
        self._seen: float | None = None
        self._faults: dict[str, Any] = {}

    def _current(self) -> dict[str, Any]:
        try:
            changed = self.path.stat().st_mtime_ns
        except OSError:
            return {}
        if changed != self._seen:
            try:
                self._faults = json.loads(self.path.read_text())
            except (OSError, ValueError):
                self._faults = {}
            self._seen = changed
        return self._faults

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        faults = self._current()
        path = environ.get("PATH_INFO", "")
        slow, refused, dropped = faults.get("slow"), faults.get("refuse"), faults.get("drop")
        if slow and time.time() < slow["until"] and path.startswith(slow["prefix"]):
            time.sleep(slow["seconds"])
        if dropped and time.time() < dropped["until"] and path.startswith(dropped["prefix"]):
            refused = dropped
        elif not (refused and path.startswith(refused["prefix"])
                  and environ.get("HTTP_CE_SUBJECT") == refused["subject"]):
            refused = None
        if refused:
            environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            body = json.dumps({"title": "Injected Fault", "status": refused["status"],
                               "detail": "refused by a fault the test injected"}).encode()
            start_response(f"{refused['status']} Refused", [
                ("Content-Type", "application/problem+json"), ("Content-Length", str(len(body)))])
            return [body]
        return self.app(environ, start_response)


def wrap(app: WSGIApp) -> WSGIApp:
    """`app` as it is, or behind `FaultyHost` when the faults file is configured."""
    path = os.environ.get(FAULTS_FILE_VARIABLE)
    return FaultyHost(app, Path(path)) if path else app
