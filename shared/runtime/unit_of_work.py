"""The unit of work: one transaction, the events it emits, published once it commits.

Views and reactions change state the same way, so they share this: what a
handler writes and the events it emits are committed together (the outbox is
a table in the same transaction), and the events leave for Kafka only after
the commit, so no event announces a change that was rolled back.

    with unit_of_work(SOURCE) as uow:
        uow.tx.execute("UPDATE ...")
        uow.emit(BookingCancelled(...))
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from shared.domain.events import Event
from shared.runtime import outbox, tracing
from shared.runtime.bootstrap import Runtime, runtime
from shared.runtime.db import Tx, is_retryable
from shared.runtime.envelope import Envelope

# What a handler gives back to be emitted: nothing, one event, or several.
Emitted = Event | Envelope[Any] | Iterable[Event | Envelope[Any]] | None

DB_ATTEMPTS = 6  # 0.04 + 0.08 + ... + 0.64 s: rides out a fast PostgreSQL restart


class UnitOfWork:
    """One transaction, the events it will emit, and the process's clients."""

    def __init__(self, rt: Runtime, tx: Tx, source: str) -> None:
        self.rt = rt
        self.tx = tx
        self.source = source
        self.settings = rt.settings
        self.now = datetime.now(UTC)
        self.emitted: list[Envelope[Any]] = []
        # What the handler made of its event, for metrics and logs: a handler may
        # name a business outcome ("sold_out") instead.
        self.outcome = "handled"

    @property
    def redis(self) -> Any:
        """The process's Redis client, created on first use."""
        return self.rt.redis

    def emit(self, event: Event | Envelope[Any]) -> Envelope[Any]:
        """Queue an event for the outbox, carrying the trace context it belongs to."""
        if isinstance(event, Envelope):
            envelope = event if event.source else dataclasses.replace(event, source=self.source)
            if envelope.traceparent:  # another trace's (a booking's, read by the sweeper)
                envelope = _in_own_trace(envelope, self.source)
        else:
            envelope = Envelope(data=event, source=self.source)
        span = tracing.current()
        if span is not None and not envelope.traceparent:
            envelope = dataclasses.replace(envelope, traceparent=span.traceparent,
                                           tracestate=span.tracestate)
        self.emitted.append(envelope)
        return envelope

    def emit_all(self, events: Emitted) -> None:
        if events is None:
            return
        if isinstance(events, (Event, Envelope)):
            self.emit(events)
            return
        for event in events:
            self.emit(event)


def _in_own_trace(envelope: Envelope[Any], source: str) -> Envelope[Any]:
    """This function's span in the envelope's trace, as the parent of the envelope.

    The sweeper works on many bookings at once; each expiry it emits belongs
    to its booking's trace, so the sweeper appears in each of them.
    """
    span = tracing.begin(source.rsplit("/", 1)[-1].replace("-", "_"), "internal",
                         envelope.traceparent, envelope.tracestate)
    span.attributes.update({"cloudevents.event_id": envelope.id,
                            "cloudevents.event_type": envelope.type,
                            "cloudevents.event_subject": envelope.subject})
    tracing.end(span)
    return dataclasses.replace(envelope, traceparent=span.traceparent)


@contextmanager
def unit_of_work(source: str, rt: Runtime | None = None) -> Iterator[UnitOfWork]:
    """State change and emitted events in one transaction; publish after commit.

    Used by the HTTP functions directly and by `@reaction` under the hood.
    """
    rt = rt or runtime()
    with rt.db.transaction() as tx:
        uow = UnitOfWork(rt, tx, source)
        yield uow
        written = outbox.write(tx, uow.emitted)
    rt.announce(e.subject for e in uow.emitted)  # wakes GET ?wait_for=
    rt.publish(written)


def with_db_retries(work: Callable[[], None]) -> int:
    """Run `work`, again after a serialization failure, a deadlock or a dropped connection.

    Returns how many attempts it took.
    """
    for attempt in range(1, DB_ATTEMPTS + 1):
        try:
            work()
            return attempt
        except Exception as exc:
            if attempt == DB_ATTEMPTS or not is_retryable(exc):
                raise
            time.sleep(min(0.02 * 2**attempt, 1.0))
    raise AssertionError("unreachable")
