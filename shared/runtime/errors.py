"""The faults a function answers 503 for: retried by KafkaSource, and by a client after a while."""

from __future__ import annotations

import json
import sys

import flask

from shared.runtime.db import is_connection_lost

PROBLEM_JSON = "application/problem+json"


class TransientError(RuntimeError):
    """Not now, maybe later: answered 503 so the event is delivered again."""


class SchemaBehind(TransientError):
    """The database schema is older than this code: the migrations Job has not run yet."""

    def response(self) -> flask.Response:
        """The RFC 9457 answer, the same for a reaction (KafkaSource retries it) and a request."""
        body = {"type": "https://marketplace.local/problems/schema-behind",
                "title": "Schema Behind", "status": 503, "detail": str(self)}
        return flask.Response(json.dumps(body), 503, {"Retry-After": "5"},
                              mimetype=PROBLEM_JSON)


def is_outage(exc: BaseException) -> bool:
    """A database or Redis restart or fail-over, not a bug: worth trying again soon."""
    if is_connection_lost(exc):
        return True
    redis_errors = sys.modules.get("redis.exceptions")  # no import: no Redis, no Redis error
    return redis_errors is not None and isinstance(
        exc, (redis_errors.ConnectionError, redis_errors.TimeoutError))
