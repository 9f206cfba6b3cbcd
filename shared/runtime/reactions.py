"""The reaction runtime: one decorator turns a typed handler into a CloudEvents function.

Everything a reaction should not repeat lives here, once: decoding and
validating the CloudEvent, answering the way Knative's KafkaSource expects
(2xx handled, 4xx poison and dead-lettered, 5xx retried), and the inbox that
makes redelivery harmless. The transaction, the outbox and publishing after
commit are the unit of work's (`shared.runtime.unit_of_work`), shared with
the HTTP views.

    @reaction(BookingRequested)
    def reserve_ticket(event: BookingRequested, uow: UnitOfWork) -> Emitted:
        ...
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import flask
import functions_framework
from cloudevents.http import CloudEvent
from werkzeug.exceptions import HTTPException

from shared.domain.events import Event
from shared.runtime import logs, metrics, tracing
from shared.runtime.bootstrap import Runtime, runtime
from shared.runtime.envelope import Envelope, PoisonEvent, from_cloudevent
from shared.runtime.errors import SchemaBehind, TransientError, is_outage
from shared.runtime.routing import Ordering, Reaction, register_reaction, source_of_handler
from shared.runtime.unit_of_work import Emitted, UnitOfWork, unit_of_work, with_db_retries

log = logging.getLogger("marketplace.runtime")

ScheduledHandler = Callable[[UnitOfWork], Emitted]
CloudEventFunction = Callable[[CloudEvent], None]


def source_of(target: str) -> str:
    return f"/marketplace/functions/{target.replace('_', '-')}"


def handle(target: str, envelope: Envelope[Any],
           handler: Callable[[UnitOfWork], Emitted], rt: Runtime | None = None) -> bool:
    """Run `handler` once per event id; returns False when the id was handled before."""
    handled = True
    outcome = "handled"

    def attempt() -> None:
        nonlocal handled, outcome
        with unit_of_work(source_of(target), rt) as uow:
            # subject, source and time make the row a line of its booking's timeline
            first = uow.tx.execute(
                "INSERT INTO inbox (consumer, event_id, event_type, subject, source, event_time)"
                " VALUES (:c, :id, :t, :s, :src, :at) ON CONFLICT DO NOTHING",
                c=target, id=envelope.id, t=envelope.type, s=envelope.subject,
                src=envelope.source, at=envelope.time,
            )
            handled = first == 1
            if handled:
                uow.emit_all(handler(uow))
            outcome = uow.outcome if handled else "duplicate"

    attempts = with_db_retries(attempt)
    span = tracing.current()
    if span is not None:
        span.attributes["marketplace.outcome"] = outcome
        span.attributes["marketplace.attempt"] = attempts
    return handled


def _answer(target: str, work: Callable[[], None]) -> str:
    """Run `work` and answer as KafkaSource expects; returns the kind of answer."""
    try:
        work()
        return "handled"
    except PoisonEvent as exc:
        log.warning("%s: poison event: %s", target, exc)
        flask.abort(422, description=str(exc))
    except SchemaBehind as exc:
        log.error("%s: %s", target, exc)
        flask.abort(exc.response())
    except TransientError as exc:
        log.info("%s: not now: %s", target, exc)
        flask.abort(503, description=str(exc))
    except Exception as exc:
        if not is_outage(exc):
            raise  # a bug: a 500 with its traceback, and retried
        # Still down after the in-process retries: a 503, counted `transient`, not `error`.
        log.warning("%s: a backing service is unreachable: %s", target, exc)
        flask.abort(503, description="a backing service is unreachable; try again")


def _observed(target: str, cloud_event: CloudEvent, work: Callable[[], None],
              traced: bool = True) -> None:
    """Answer one delivery inside its span; count it and log one line, whatever the answer.

    The span continues the event's `traceparent` (the CloudEvents extension, or
    the W3C header of the delivery). With export off this is a header read and
    a span id drawn; the line and the counters are always written.
    """
    started = time.perf_counter()
    event_id, event_type = str(cloud_event["id"]), str(cloud_event["type"])
    subject = str(cloud_event.get("subject") or "")
    span = tracing.begin(
        target, "consumer",
        str(cloud_event.get("traceparent") or flask.request.headers.get("traceparent") or ""),
        str(cloud_event.get("tracestate") or ""))
    span.attributes.update({"cloudevents.event_id": event_id,
                            "cloudevents.event_type": event_type,
                            "cloudevents.event_subject": subject})
    outcome = "error"  # an exception we did not expect: a 500, retried
    try:
        with tracing.active(span) if traced else _untraced(span):
            _answer(target, work)
            outcome = "handled"
    except HTTPException as exc:
        outcome = "poison" if exc.code == 422 else "transient"
        raise
    finally:
        attributes = span.attributes
        outcome = str(attributes.get("marketplace.outcome", outcome)) if outcome == "handled" \
            else outcome
        attributes["marketplace.outcome"] = outcome
        seconds = time.perf_counter() - started
        metrics.event(target, outcome, seconds)
        logs.event(target, event_id, event_type, subject, span.trace_id if traced else "",
                   outcome, seconds, int(attributes.get("marketplace.attempt", 1)))


@contextmanager
def _untraced(span: tracing.Span) -> Iterator[tracing.Span]:
    """A schedule's tick: each PingSource ping would be a trace of its own, with nothing in it."""
    yield span


def _register(target: str, function: CloudEventFunction) -> CloudEventFunction:
    logs.setup()
    metrics.expose_on_current_app()
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

        _observed(target, cloud_event, work)

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


def scheduled(cron: str, every: str = "sweep_interval_seconds"
              ) -> Callable[[ScheduledHandler], CloudEventFunction]:
    """Declare a function run on a schedule (a PingSource's cron in Knative).

    `every` names the setting of its period on one machine (the local ping).
    """

    def decorate(handler: ScheduledHandler) -> CloudEventFunction:
        target = handler.__name__
        return _scheduled(target, cron, every, handler,
                          lambda: with_db_retries(lambda: _run_scheduled(target, handler)))

    return decorate


ScheduledEffect = Callable[[Runtime], None]


def scheduled_effect(cron: str, every: str = "sweep_interval_seconds"
                     ) -> Callable[[ScheduledEffect], CloudEventFunction]:
    """A schedule whose work calls out (the payment provider): no transaction around it.

    The handler opens its own short units of work around its calls, as an `effect` does.
    """

    def decorate(handler: ScheduledEffect) -> CloudEventFunction:
        return _scheduled(handler.__name__, cron, every, handler, lambda: handler(runtime()))

    return decorate


def _scheduled(target: str, cron: str, every: str, handler: Any,
               run: Callable[[], object]) -> CloudEventFunction:
    def function(cloud_event: CloudEvent) -> None:
        def work() -> None:
            run()

        _observed(target, cloud_event, work, traced=False)

    register_reaction(Reaction(target, (), cron, "ordered", source_of_handler(handler), every))
    wrapped = _register(target, function)
    wrapped.handler = handler  # type: ignore[attr-defined]
    return wrapped


def _run_scheduled(target: str, handler: ScheduledHandler) -> None:
    """A tick needs no inbox: each run looks at the state as it is now."""
    with unit_of_work(source_of(target)) as uow:
        uow.emit_all(handler(uow))
