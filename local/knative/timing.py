"""Per-function request counts and handler time, measured by the local host around each call.

The benchmark wants events per second and handler time for every function,
effects (notifications, search) included, which have no inbox row. Measuring
at the WSGI boundary of the local host needs no change to the runtime: wall
time and the serving thread's CPU time (`time.thread_time`) from the request
entering the function's app to its answer. `GET /__timing` on the same port
answers the counters as JSON (one gunicorn worker per host locally, so one
set of counters). The cost is two clock reads and a locked update per call.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
PATH = "/__timing"
# Upper bounds in milliseconds of the wall-time histogram.
BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 30_000, 60_000)


class Timing:
    """WSGI middleware keeping count, wall and CPU seconds, and a histogram per path prefix."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._stats: dict[str, dict[str, Any]] = {}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        if path == PATH:
            body = json.dumps(self.snapshot()).encode()
            start_response("200 OK", [("Content-Type", "application/json"),
                                      ("Content-Length", str(len(body)))])
            return [body]
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return self.app(environ, start_response)
        finally:
            self._add(path.strip("/").split("/", 1)[0] or "/",
                      time.perf_counter() - wall, time.thread_time() - cpu)

    def _add(self, name: str, wall: float, cpu: float) -> None:
        bucket = next((i for i, bound in enumerate(BUCKETS_MS) if wall * 1000 <= bound),
                      len(BUCKETS_MS))
        with self._lock:
            stats = self._stats.setdefault(
                name, {"count": 0, "wall_s": 0.0, "cpu_s": 0.0,
                       "buckets": [0] * (len(BUCKETS_MS) + 1)})
            stats["count"] += 1
            stats["wall_s"] += wall
            stats["cpu_s"] += cpu
            stats["buckets"][bucket] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"buckets_ms": list(BUCKETS_MS),
                    "functions": {name: {**s, "buckets": list(s["buckets"])}
                                  for name, s in self._stats.items()}}
