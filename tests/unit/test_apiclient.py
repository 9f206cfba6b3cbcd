"""The load generator's HTTP client: keep-alive, retries on 5xx and connection errors, a log."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from local.apiclient import ApiClient, FailedAttempt, RequestFailed, RetryPolicy
from local.stack import free_port

FAST = RetryPolicy(attempts=4, first_backoff=0.01, max_backoff=0.02)


class Flaky(BaseHTTPRequestHandler):
    """Answers 503 to the first `failures` requests, then 200 with the connection's count."""

    protocol_version = "HTTP/1.1"
    failures = 2
    seen = 0
    connections: set[int] = set()

    def do_GET(self) -> None:
        cls = type(self)
        cls.seen += 1
        cls.connections.add(id(self.connection))
        status = 503 if cls.seen <= cls.failures else 200
        body = json.dumps({"detail": "busy"} if status == 503 else {"n": cls.seen}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Flaky.seen, Flaky.connections = 0, set()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_5xx_is_retried_and_each_failed_attempt_kept(server: str) -> None:
    failures: list[FailedAttempt] = []
    answer = ApiClient(server, FAST).request("GET", "/x", failures=failures)
    assert (answer.status, answer.body, answer.attempts) == (200, {"n": 3}, 3)
    assert [(f.status, f.error, f.recovered) for f in failures] == [(503, "busy", True)] * 2
    assert len(Flaky.connections) == 1  # one kept-alive connection for all three


def test_connection_errors_exhaust_the_attempts() -> None:
    failures: list[FailedAttempt] = []
    with pytest.raises(RequestFailed):
        ApiClient(f"http://127.0.0.1:{free_port()}", FAST).request("POST", "/bookings", {},
                                                                   failures=failures)
    assert len(failures) == FAST.attempts
    assert all(f.status is None and not f.recovered and f.method == "POST" for f in failures)
