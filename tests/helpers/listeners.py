"""A recording HTTP listener: where the system under test calls out, a test listens instead.

A webhook of the payment provider, a redrive, a span exporter: each is an HTTP request
leaving the code under test. The listener answers it as the test says and keeps it, so the
test reads afterwards exactly what arrived, and in what order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import NamedTuple

from tests.helpers.waiting import eventually


class Received(NamedTuple):
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Listener:
    """An HTTP server on 127.0.0.1 that records every request and gives every one one answer."""

    def __init__(self, status: int = 200, headers: dict[str, str] | None = None,
                 body: bytes = b"") -> None:
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                listener._record(Received(self.command, self.path, dict(self.headers),
                                          self.rfile.read(length)))
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_PATCH = do_DELETE = do_POST

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _record(self, request: Received) -> None:
        with self._lock:
            self.requests.append(request)

    def received(self) -> list[Received]:
        """What has arrived so far, oldest first (a copy: requests keep arriving)."""
        with self._lock:
            return list(self.requests)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def wait(self, matching: Callable[[Received], bool], timeout: float = 10.0,
             what: str = "a request") -> Received:
        """The first request that matches, once it has arrived."""
        found = eventually(lambda: [r for r in self.received() if matching(r)],
                           timeout=timeout, interval=0.02, what=what)
        return found[0]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
