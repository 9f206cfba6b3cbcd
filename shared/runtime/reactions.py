"""The reaction runtime: one decorator turns a typed handler into a CloudEvents function.

Everything a reaction should not repeat lives here, once: decoding and
validating the CloudEvent, answering the way Knative's KafkaSource expects
(2xx handled, 4xx poison and dead-lettered, 5xx retried), the inbox that makes
redelivery harmless, the transaction, the outbox, and publishing after commit.

    @reaction(BookingRequested)
    def reserve_ticket(event: BookingRequested, uow: UnitOfWork) -> Emitted:
        ...
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import flask
import functions_framework
from cloudevents.http import CloudEvent

from shared.domain.events import Event
from shared.runtime import outbox
from shared.runtime.bootstrap import Runtime, runtime
from shared.runtime.db import Tx, is_retryable
from shared.runtime.envelope import Envelope, PoisonEvent, from_cloudevent
from shared.runtime.errors import SchemaBehind, TransientError
from shared.runtime.routing import Ordering, Reaction, register_reaction, source_of_handler

log = logging.getLogger("marketplace.runtime")

Emitted = Event | Envelope[Any] | Iterable[Event | Envelope[Any]] | None
ScheduledHandler = Callable[["UnitOfWork"], Emitted]
CloudEventFunction = Callable[[CloudEvent], None]

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

    @property
    def redis(self) -> Any:
        """The process's Redis client, created on first use."""
        return self.rt.redis

    def emit(self, event: Event | Envelope[Any]) -> Envelope[Any]:
        envelope = (
            dataclasses.replace(event, source=event.source or self.source)
            if isinstance(event, Envelope)
            else Envelope(data=event, source=self.source)
        )
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


@contextmanager
def unit_of_work(source: str, rt: Runtime | None = None) -> Iterator[UnitOfWork]:
    """State change and emitted events in one transaction; publish after commit.

    Used by the HTTP functions directly and by `@reaction` under the hood.
    """
    rt = rt or runtime()
    with rt.db.transaction() as tx:
        uow = UnitOfWork(rt, tx, source)
        yield uow
        ids = outbox.write(tx, uow.emitted)
    rt.announce(e.subject for e in uow.emitted)  # wakes GET ?wait_for=
    rt.publish(ids)


def source_of(target: str) -> str:
    return f"/marketplace/functions/{target.replace('_', '-')}"


def with_db_retries(work: Callable[[], None]) -> None:
    """Run `work`, again after a serialization failure, a deadlock or a dropped connection."""
    for attempt in range(1, DB_ATTEMPTS + 1):
        try:
            work()
            return
        except Exception as exc:
            if attempt == DB_ATTEMPTS or not is_retryable(exc):
                raise
            time.sleep(min(0.02 * 2**attempt, 1.0))


def handle(target: str, envelope: Envelope[Any],
           handler: Callable[[UnitOfWork], Emitted], rt: Runtime | None = None) -> bool:
    """Run `handler` once per event id; returns False when the id was handled before."""
    handled = True

    def attempt() -> None:
        nonlocal handled
        with unit_of_work(source_of(target), rt) as uow:
            first = uow.tx.execute(
                "INSERT INTO inbox (consumer, event_id, event_type) VALUES (:c, :id, :t)"
                " ON CONFLICT DO NOTHING",
                c=target, id=envelope.id, t=envelope.type,
            )
            handled = first == 1
            if handled:
                uow.emit_all(handler(uow))

    with_db_retries(attempt)
    return handled


def _answer(target: str, work: Callable[[], None]) -> None:
    try:
        work()
    except PoisonEvent as exc:
        log.warning("%s: poison event: %s", target, exc)
        flask.abort(422, description=str(exc))
    except SchemaBehind as exc:
        log.error("%s: %s", target, exc)
        flask.abort(exc.response())
    except TransientError as exc:
        log.info("%s: not now: %s", target, exc)
        flask.abort(503, description=str(exc))


def _register(target: str, function: CloudEventFunction) -> CloudEventFunction:
    function.__name__ = target
    function.__qualname__ = target
    return functions_framework.cloud_event(function)  # type: ignore[no-any-return]


def _triggered(triggers: tuple[type[Event], ...], ordering: Ordering, target: str,
               run: Callable[[Envelope[Event]], None], handler: Any) -> CloudEventFunction:
    """The CloudEvents function around `run`: decode, refuse what it does not handle, answer."""
    if not triggers:
        raise ValueError(f"{target} needs at least one event type")
    accepted = {t.cloudevent_type() for t in triggers}

    def function(cloud_event: CloudEvent) -> None:
        def work() -> None:
            envelope = from_cloudevent(cloud_event)
            if envelope.type not in accepted:
                raise PoisonEvent(f"{target} does not handle {envelope.type}")
            run(envelope)

        _answer(target, work)

    register_reaction(Reaction(target, tuple(t.topic for t in triggers), None, ordering,
                               source_of_handler(handler)))
    wrapped = _register(target, function)
    wrapped.handler = handler  # type: ignore[attr-defined]
    return wrapped


def reaction(*triggers: type[Event], ordering: Ordering = "ordered"
             ) -> Callable[[Callable[[Any, UnitOfWork], Emitted]], CloudEventFunction]:
    """Declare a function that reacts to the given event types (one Kafka topic each)."""

    def decorate(handler: Callable[[Any, UnitOfWork], Emitted]) -> CloudEventFunction:
        target = handler.__name__

        def run(envelope: Envelope[Event]) -> None:
            handle(target, envelope, lambda uow: handler(envelope.data, uow))

        return _triggered(triggers, ordering, target, run, handler)

    return decorate


EffectHandler = Callable[[Envelope[Any], Runtime], None]


def effect(*triggers: type[Event], ordering: Ordering = "ordered"
           ) -> Callable[[EffectHandler], CloudEventFunction]:
    """Declare a reaction whose effect lives outside PostgreSQL (a message, a search document).

    Decoded, checked and answered like any reaction, but with no inbox and no
    transaction around it: the handler makes its own effect idempotent (a
    document id, a ledger of sends), since a failed send must leave the event
    deliverable again. It emits nothing.
    """

    def decorate(handler: EffectHandler) -> CloudEventFunction:
        return _triggered(triggers, ordering, handler.__name__,
                          lambda envelope: handler(envelope, runtime()), handler)

    return decorate


def scheduled(cron: str) -> Callable[[ScheduledHandler], CloudEventFunction]:
    """Declare a function run on a schedule (a PingSource's cron in Knative)."""

    def decorate(handler: ScheduledHandler) -> CloudEventFunction:
        target = handler.__name__

        def function(cloud_event: CloudEvent) -> None:
            def work() -> None:
                tick_id = str(cloud_event["id"])
                with_db_retries(lambda: _run_scheduled(target, handler))
                log.debug("%s: tick %s done", target, tick_id)

            _answer(target, work)

        register_reaction(Reaction(target, (), cron, "ordered", source_of_handler(handler)))
        wrapped = _register(target, function)
        wrapped.handler = handler  # type: ignore[attr-defined]
        return wrapped

    return decorate


def _run_scheduled(target: str, handler: ScheduledHandler) -> None:
    """A tick needs no inbox: each run looks at the state as it is now."""
    with unit_of_work(source_of(target)) as uow:
        uow.emit_all(handler(uow))
