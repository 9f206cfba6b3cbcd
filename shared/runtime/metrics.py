"""Prometheus metrics of a function host, correct however many worker processes it runs.

Counters and histograms use prometheus-client's multiprocess mode: each
gunicorn worker writes its values to memory-mapped files in one directory,
and `/metrics`, answered by whichever worker gets the scrape, sums them all.
The directory is chosen when this module is imported, in gunicorn's master
(functions-framework creates the app before forking), so every worker of a
host shares it and no other host does; `PROMETHEUS_MULTIPROC_DIR`, when set,
is used as it is. Figures about the system rather than the process (outbox
rows waiting, holds open) are read from PostgreSQL at scrape time by the
collectors a function adds (`health` does), so any worker answers the same.

prometheus-client is imported after the first answer is sent (like the Kafka
producer): counts recorded before that wait in a list, so a cold start's
first event does not pay for the import.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from typing import Any

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
PATH = "/metrics"
_CREATOR = os.getpid()
_DIR = os.environ.get(MULTIPROC_VARIABLE) or os.path.join(
    tempfile.gettempdir(), f"marketplace-metrics-{_CREATOR}-{secrets.token_hex(4)}")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_lock = threading.Lock()
_metrics: dict[str, Any] | None = None
_pending: list[tuple[str, tuple[str, ...], float]] = []
_loading = False
_collectors: list[Any] = []


def _load() -> dict[str, Any]:
    """Import prometheus-client in multiprocess mode and create the metrics (once)."""
    global _metrics
    with _lock:
        if _metrics is not None:
            return _metrics
        if not os.environ.get(MULTIPROC_VARIABLE):
            os.makedirs(_DIR, exist_ok=True)
            os.environ[MULTIPROC_VARIABLE] = _DIR
            if os.getpid() == _CREATOR:
                atexit.register(_remove_dir)
        from prometheus_client import Counter, Histogram

        _metrics = {
            "event": Counter("marketplace_events_total",
                             "Events a function answered, by outcome: handled, duplicate,"
                             " a business outcome (sold_out...), poison or transient",
                             ["function", "outcome"], registry=None),
            "duration": Histogram("marketplace_handler_duration_seconds",
                                  "Time from an event's arrival to its answer",
                                  ["function"], buckets=BUCKETS, registry=None),
            "http": Counter("marketplace_http_requests_total",
                            "HTTP requests answered, by route and status",
                            ["function", "method", "route", "status"], registry=None),
        }
        pending, _pending[:] = list(_pending), []
    for kind, labels, seconds in pending:
        _apply(_metrics, kind, labels, seconds)
    return _metrics


def load() -> None:
    """Import prometheus-client and apply what was recorded meanwhile."""
    _load()


def _remove_dir() -> None:
    if os.getpid() == _CREATOR:
        shutil.rmtree(_DIR, ignore_errors=True)


def _apply(metrics: dict[str, Any], kind: str, labels: tuple[str, ...], seconds: float) -> None:
    if kind == "event":
        metrics["event"].labels(*labels).inc()
        metrics["duration"].labels(labels[0]).observe(seconds)
    else:
        metrics["http"].labels(*labels).inc()


def _record(kind: str, labels: tuple[str, ...], seconds: float) -> None:
    global _loading
    metrics = _metrics
    if metrics is None:
        with _lock:
            metrics = _metrics
            if metrics is None:  # not loaded yet: `_load` applies it
                _pending.append((kind, labels, seconds))
                start, _loading = not _loading, True
        if metrics is None:
            if start:
                from shared.runtime.bootstrap import after_answer

                after_answer("metrics", load)
            return
    _apply(metrics, kind, labels, seconds)


def event(function: str, outcome: str, seconds: float) -> None:
    """One event answered by `function` (`outcome`: handled, duplicate, poison, ...)."""
    _record("event", (function, outcome), seconds)


def http_request(function: str, method: str, route: str, status: int) -> None:
    _record("http", (function, method, route, str(status)), 0.0)


def add_collector(collector: Any) -> None:
    """A prometheus-client collector read at every scrape (figures from PostgreSQL)."""
    _collectors.append(collector)


def exposition() -> tuple[bytes, str]:
    """This host's metrics in the Prometheus text format, every worker summed."""
    _load()
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, os.environ[MULTIPROC_VARIABLE])  # type: ignore[no-untyped-call]
    for collector in _collectors:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """`GET /metrics` as a WSGI app (the local hosts mount it in front of their functions)."""
    body, content_type = exposition()
    start_response("200 OK", [("Content-Type", content_type),
                              ("Content-Length", str(len(body)))])
    return [body]


def in_front_of(app: WSGIApp) -> WSGIApp:
    """`app`, with `GET /metrics` answered for the whole host before it reaches a function."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == PATH and environ.get("REQUEST_METHOD") == "GET":
            return serve(environ, start_response)
        return app(environ, start_response)

    return wrapped


def expose_on_current_app() -> None:
    """Add `GET /metrics` to the Flask app functions-framework is loading this function into.

    In a cluster each function is its own Service: its module is executed
    inside the app's context, so the function's declaration can add the route.
    """
    import flask

    if not flask.has_app_context():
        return
    app = flask.current_app
    if "marketplace_metrics" not in app.view_functions:
        def view() -> flask.Response:
            body, content_type = exposition()
            return flask.Response(body, 200, content_type=content_type)

        app.add_url_rule(PATH, "marketplace_metrics", view, methods=["GET"])
