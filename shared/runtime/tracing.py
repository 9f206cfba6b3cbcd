"""W3C trace context: where a request or event belongs, carried as a few strings.

A booking's saga is one trace: the HTTP edge continues an incoming
`traceparent` (or starts a trace), every event written to the outbox carries
the context of the function that emitted it (the CloudEvents
distributed-tracing extension: `ce_traceparent`/`ce_tracestate` on Kafka, the
`traceparent` header on delivery), and every reaction continues it.

This module never imports OpenTelemetry: propagation always happens, and
costs a header parsed, a random span id and a header written per event.
Only when export is on (`telemetry.enabled()`) is each finished `Span`
handed to the OpenTelemetry SDK, with exactly the ids it already gave the
events it emitted, so the exported spans and the events agree.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["server", "consumer", "internal"]
SAMPLED = "01"
_HEX = frozenset("0123456789abcdef")


def _hex(value: str, length: int) -> bool:
    return len(value) == length and set(value) <= _HEX and value != "0" * length


def parse(traceparent: str | None) -> tuple[str, str, str] | None:
    """(trace id, parent span id, flags) of a version-00 `traceparent`, or None if unusable."""
    if not traceparent:
        return None
    parts = traceparent.strip().lower().split("-")
    if len(parts) < 4 or parts[0] == "ff" or not _hex(parts[1], 32) or not _hex(parts[2], 16):
        return None
    flags = parts[3][:2]
    return parts[1], parts[2], flags if len(flags) == 2 and set(flags) <= _HEX else SAMPLED


def new_span_id() -> str:
    return f"{random.getrandbits(64) or 1:016x}"


def new_trace_id() -> str:
    return f"{random.getrandbits(128) or 1:032x}"


@dataclass
class Span:
    """One function's handling of one request or event, in its trace."""

    name: str
    kind: Kind
    trace_id: str
    span_id: str
    parent_id: str = ""  # empty: the trace starts here
    flags: str = SAMPLED
    tracestate: str = ""
    continued: bool = False  # the context came with the request or event
    start_ns: int = field(default_factory=time.time_ns)
    attributes: dict[str, str | int] = field(default_factory=dict)

    @property
    def traceparent(self) -> str:
        """The header for what this span emits: its children's parent is this span."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def adopt(self, traceparent: str | None, tracestate: str = "") -> None:
        """Join a stored trace (a booking's), unless the caller sent a context of its own.

        Used where the aggregate is known only once the work has begun: a
        payment for a booking belongs to that booking's trace.
        """
        parsed = parse(traceparent)
        if self.continued or parsed is None:
            return
        self.trace_id, self.parent_id, self.flags = parsed
        self.tracestate = tracestate
        self.continued = True


_current: ContextVar[Span | None] = ContextVar("marketplace_span", default=None)


def current() -> Span | None:
    return _current.get()


def current_traceparent() -> str:
    span = _current.get()
    return span.traceparent if span is not None else ""


def adopt(traceparent: str | None, tracestate: str = "") -> None:
    """The current span joins a stored trace (see `Span.adopt`); nothing if there is none."""
    span = _current.get()
    if span is not None:
        span.adopt(traceparent, tracestate)


def begin(name: str, kind: Kind, traceparent: str | None = None, tracestate: str = ""
          ) -> Span:
    """A span continuing `traceparent` (or a new trace); not yet current."""
    parsed = parse(traceparent)
    if parsed is None:
        return Span(name, kind, new_trace_id(), new_span_id())
    trace_id, parent_id, flags = parsed
    return Span(name, kind, trace_id, new_span_id(), parent_id, flags, tracestate or "",
                continued=True)


def end(span: Span, error: str = "") -> None:
    """Hand a finished span to the exporter, if one is on (else nothing)."""
    from shared.runtime import telemetry

    if telemetry.enabled():
        telemetry.record(span, time.time_ns(), error)


@contextmanager
def active(span: Span) -> Iterator[Span]:
    """Make `span` the current one; end it when the block ends (an exception marks it)."""
    token = _current.set(span)
    error = ""
    try:
        yield span
    except BaseException as exc:
        error = type(exc).__name__
        raise
    finally:
        _current.reset(token)
        end(span, span.attributes.pop("error", "") or error)  # type: ignore[arg-type]
