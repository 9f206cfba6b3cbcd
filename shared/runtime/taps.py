"""`@tap(topic)`: a function fed a topic's records as they are, plain HTTP requests.

A `@reaction` decodes each record into one of our event types and refuses
what it cannot decode (422, dead-lettered). A function that reads the
dead-letter topic must do neither: its records are whatever failed, poison
included, and refusing one would send it back to the topic it came from. So
a tap gets the raw request and answers 2xx once it kept the record, 503 to
have it delivered again, and never 4xx. It is declared like any reaction (a
KafkaSource locally and in the cluster), so the routing declaration stays
the one list of subscriptions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import cast

import flask
import functions_framework

from shared.runtime.errors import SchemaBehind, TransientError, is_outage
from shared.runtime.routing import Reaction, register_reaction, source_of_handler

log = logging.getLogger("marketplace.runtime")

TapHandler = Callable[[flask.Request], None]
HttpFunction = Callable[[flask.Request], flask.Response]


def tap(*topics: str) -> Callable[[TapHandler], HttpFunction]:
    """Declare a function that takes every record of `topics` as it comes (ordered)."""

    def decorate(handler: TapHandler) -> HttpFunction:
        target = handler.__name__

        def function(request: flask.Request) -> flask.Response:
            try:
                handler(request)
            except SchemaBehind as exc:
                log.error("%s: %s", target, exc)
                return exc.response()
            except Exception as exc:  # never a 4xx: that would lose it
                transient = isinstance(exc, TransientError) or is_outage(exc)
                log.log(logging.WARNING if transient else logging.ERROR,
                        "%s: could not keep the record, it comes again: %s", target, exc,
                        exc_info=not transient)
                return flask.Response("not now", 503, {"Retry-After": "1"})
            return flask.Response("kept", 200)

        function.__name__ = function.__qualname__ = target
        register_reaction(Reaction(target, topics, None, "ordered", source_of_handler(handler)))
        return cast(HttpFunction, functions_framework.http(function))

    return decorate
