"""A small, cheap HTTP client for load: keep-alive connections, bounded retries, every failure kept.

The load generator must cost the machine little next to what it measures, so
it speaks HTTP/1.1 with `http.client` over one kept-alive connection per
thread (no session objects, no connection per request). Under fault
injection a request may meet a dead host or a 5xx: it is retried with a short
backoff, and every failed attempt is recorded with whether a later attempt of
the same request succeeded, so a run can show what each fault cost.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

# gunicorn closes a kept-alive connection idle for 2 s: reconnect before that, not after.
MAX_IDLE_SECONDS = 1.5


@dataclass(frozen=True)
class RetryPolicy:
    """Retry connection errors and 5xx: `attempts` in all, backoff doubling up to a cap."""

    attempts: int = 10
    first_backoff: float = 0.05
    max_backoff: float = 2.0

    def backoff(self, attempt: int) -> float:
        return float(min(self.max_backoff, self.first_backoff * 2 ** (attempt - 1)))


@dataclass
class FailedAttempt:
    at: float  # seconds since the epoch
    method: str
    path: str
    status: int | None  # the 5xx, or None for a connection error
    error: str
    recovered: bool = False  # a later attempt of the same request succeeded

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Answer:
    status: int
    body: Any
    attempts: int = 1


class RequestFailed(RuntimeError):
    """Every attempt failed; the attempts are in the caller's log."""


@dataclass
class _Connection:
    conn: http.client.HTTPConnection
    last_used: float = field(default_factory=time.monotonic)


class ApiClient:
    """Requests to one base URL; thread-safe (one connection per thread)."""

    def __init__(self, base_url: str, retry: RetryPolicy | None = None,
                 timeout: float = 15.0, clock: Callable[[], float] = time.time) -> None:
        parsed = urlparse(base_url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"an http:// base URL is needed, got {base_url!r}")
        self.host = parsed.hostname
        self.port = parsed.port or 80
        self.prefix = parsed.path.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.clock = clock
        self.give_up = threading.Event()  # set: no more retries (the run is being abandoned)
        self._local = threading.local()

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        current: _Connection | None = getattr(self._local, "current", None)
        if current is not None and time.monotonic() - current.last_used > MAX_IDLE_SECONDS:
            current.conn.close()
            current = None
        if current is None:
            current = _Connection(http.client.HTTPConnection(self.host, self.port, timeout=timeout))
            self._local.current = current
        current.conn.timeout = timeout
        if current.conn.sock is not None:
            current.conn.sock.settimeout(timeout)
        return current.conn

    def _drop(self) -> None:
        current: _Connection | None = getattr(self._local, "current", None)
        if current is not None:
            current.conn.close()
            self._local.current = None

    def _once(self, method: str, path: str, payload: bytes | None, headers: dict[str, str],
              timeout: float) -> Answer:
        conn = self._connection(timeout)
        try:
            conn.request(method, self.prefix + path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except BaseException:
            self._drop()
            raise
        if response.will_close:
            self._drop()
        else:
            self._local.current.last_used = time.monotonic()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
        return Answer(response.status, body)

    def request(self, method: str, path: str, body: Any = None, *, token: str = "",
                headers: dict[str, str] | None = None, timeout: float | None = None,
                failures: list[FailedAttempt] | None = None) -> Answer:
        """Send until an answer below 500 arrives or the attempts run out (then raise).

        Failed attempts go to `failures` (if given), marked recovered on success.
        """
        all_headers = {"Accept": "application/json"}
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        mine: list[FailedAttempt] = []
        for attempt in range(1, self.retry.attempts + 1):
            try:
                answer = self._once(method, path, payload, all_headers, timeout or self.timeout)
            except (OSError, http.client.HTTPException) as exc:
                mine.append(FailedAttempt(self.clock(), method, path, None,
                                          f"{type(exc).__name__}: {exc}"))
            else:
                if answer.status < 500:
                    for failed in mine:
                        failed.recovered = True
                    answer.attempts = attempt
                    if failures is not None:
                        failures.extend(mine)
                    return answer
                mine.append(FailedAttempt(self.clock(), method, path, answer.status,
                                          _detail(answer.body)))
            if attempt < self.retry.attempts and not self.give_up.is_set():
                self.give_up.wait(self.retry.backoff(attempt))  # a backoff, cut short on give-up
            else:
                break
        if failures is not None:
            failures.extend(mine)
        raise RequestFailed(f"{method} {path}: {len(mine)} attempts failed, last: "
                            f"{mine[-1].status or ''} {mine[-1].error}")


def _detail(body: Any) -> str:
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("title") or body)[:200]
    return str(body)[:200]
