"""Traces, metrics and logs of the whole stack, over the real broker.

Spans reach a tiny OTLP/HTTP receiver in the test process (`tests/helpers/otlp.py`):
the functions run in the local hosts, other processes, and export exactly as
they would to a Collector.
"""

from __future__ import annotations

import json
import re
import secrets
from collections import Counter
from pathlib import Path

from kafka import KafkaProducer

from shared.runtime import tracing
from tests.helpers.client import ISSUED_TOKENS, Client
from tests.helpers.marketplace import ADMIN_EMAIL, ADMIN_PASSWORD, Marketplace
from tests.helpers.otlp import ReceivedSpan
from tests.helpers.waiting import eventually

CLIENT_SPAN = "c1" * 8  # the span id of the test's own traceparent
# Every function a paid booking's events reach, and the HTTP function that started it. The
# analytics indexer is left out: whether its spans join a booking's trace is its own affair
# (it reads the topics in batches, so no delivery of the booking's events reaches it).
PAID = {"bookings", "reserve_ticket", "stripe_webhook", "settle_booking", "send_notifications"}
# An unpaid one: after the hold, the watcher or the sweeper (or both) notice.
EXPIRED = {"bookings", "reserve_ticket", "expire_booking", "cancel_open_payment",
           "send_notifications"}
EXPIRY_PUBLISHERS = ("sweep_expired_holds", "hold_expiry_watcher")


def _complete(spans: list[ReceivedSpan], expected: set[str]) -> bool:
    """Every expected function has a span, and every span's parent is in (exporters batch)."""
    ids = {s.span_id for s in spans}
    return expected <= {s.name for s in spans} and all(
        s.parent_id in ids or s.parent_id == CLIENT_SPAN for s in spans)


def _check_trace(marketplace: Marketplace, trace_id: str, expected: set[str]) -> None:
    spans = eventually(lambda: marketplace.traces.trace(trace_id),
                       lambda found: _complete(found, expected), timeout=30,
                       what=f"spans of {sorted(expected)} in trace {trace_id}")
    assert {s.trace_id for s in spans} == {trace_id}
    consumers = [s for s in spans if "cloudevents.event_id" in s.attributes]
    # The watcher and the sweeper may both publish one expiry (the same event id), so
    # it is delivered once per publication; any other event is handled exactly once.
    published = Counter(s.attributes["cloudevents.event_id"] for s in consumers
                        if s.name in EXPIRY_PUBLISHERS)
    handled = Counter((s.name, s.attributes["cloudevents.event_id"]) for s in consumers
                      if s.name not in EXPIRY_PUBLISHERS)
    too_often = {key: n for key, n in handled.items() if n > max(1, published[key[1]])}
    assert not too_often, f"an event was handled more often than it was published: {handled}"
    assert all(s.attributes["cloudevents.event_type"].startswith("marketplace.")
               for s in consumers)


def test_a_booking_is_one_trace_with_a_span_per_function(marketplace: Marketplace) -> None:
    course = marketplace.publish(capacity=2)
    user, waiter = marketplace.register(), marketplace.register()  # one live booking each
    paid_trace, expired_trace = tracing.new_trace_id(), tracing.new_trace_id()
    paid = user.ok("POST", "/bookings", {"course_id": course["course_id"]}, status=202,
                   headers={"traceparent": f"00-{paid_trace}-{CLIENT_SPAN}-01"})["booking_id"]
    unpaid = waiter.ok("POST", "/bookings", {"course_id": course["course_id"]}, status=202,
                     headers={"traceparent": f"00-{expired_trace}-{CLIENT_SPAN}-01"}
                     )["booking_id"]
    user.wait_status(paid, "AWAITING_PAYMENT")
    # no traceparent: the payment joins the booking's trace
    user.ok("POST", f"/bookings/{paid}/payment", {"payment_method": "pm_card_visa"}, status=202)
    user.wait_status(paid, "CONFIRMED")
    _check_trace(marketplace, paid_trace, PAID)
    bookings_spans = [s for s in marketplace.traces.trace(paid_trace) if s.name == "bookings"]
    assert sorted(s.attributes["http.route"] for s in bookings_spans) == [
        "/bookings", "/bookings/<uuid:booking_id>/payment"]

    waiter.wait_status(unpaid, "EXPIRED", timeout=40)
    _check_trace(marketplace, expired_trace, EXPIRED)
    names = {s.name for s in marketplace.traces.trace(expired_trace)}
    assert names & set(EXPIRY_PUBLISHERS)


def _metrics(url: str) -> dict[str, float]:
    answer = Client(url).call("GET", "/metrics")
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/plain")
    values: dict[str, float] = {}
    for line in answer.body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def _count(values: dict[str, float], name: str, **labels: str) -> float:
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for key, v in values.items() if key.startswith(name + "{")
               and all(w in key for w in wanted))


def test_metrics_move_when_events_are_handled_duplicated_and_dead_lettered(
        marketplace: Marketplace) -> None:
    stack = marketplace.stack
    before = _metrics(stack.reactions_url)
    api_before = _metrics(stack.api_url)
    course = marketplace.publish(capacity=1)
    user = marketplace.register()
    booking = user.book(course["course_id"])
    user.wait_status(booking, "AWAITING_PAYMENT")

    def reactions() -> dict[str, float]:
        return _metrics(stack.reactions_url)

    eventually(reactions, lambda m: _count(m, "marketplace_events_total",
                                           function="reserve_ticket", outcome="handled")
               > _count(before, "marketplace_events_total", function="reserve_ticket",
                        outcome="handled"), what="reserve_ticket handled counted")
    after = reactions()
    assert _count(after, "marketplace_handler_duration_seconds_count",
                  function="reserve_ticket") > _count(
        before, "marketplace_handler_duration_seconds_count", function="reserve_ticket")
    api = _metrics(stack.api_url)
    assert _count(api, "marketplace_http_requests_total", function="bookings", method="POST",
                  route="/bookings", status="202") > _count(
        api_before, "marketplace_http_requests_total", function="bookings", method="POST",
        route="/bookings", status="202")
    assert "marketplace_outbox_waiting" in api and "marketplace_holds_open" in api
    assert api["marketplace_holds_open"] >= 1

    # the same booking.requested record again: a duplicate
    assert stack.runtime is not None
    with stack.runtime.database.transaction() as tx:
        row = tx.one("SELECT topic, record_key, value, headers FROM outbox"
                     " WHERE topic = 'booking.requested' AND record_key = :k",
                     k=booking.encode())
    assert row is not None
    producer = KafkaProducer(bootstrap_servers=stack.env["KAFKA_BOOTSTRAP_SERVERS"], acks="all")
    headers = [(str(n), str(v).encode()) for n, v in row["headers"]]
    assert any(n == "ce_traceparent" for n, _ in headers)  # the context travels in the row
    producer.send(row["topic"], key=bytes(row["record_key"]), value=bytes(row["value"]),
                  headers=headers).get(timeout=30)
    eventually(reactions, lambda m: _count(m, "marketplace_events_total",
                                           function="reserve_ticket", outcome="duplicate")
               > _count(after, "marketplace_events_total", function="reserve_ticket",
                        outcome="duplicate"), what="reserve_ticket duplicate counted")

    # a poison record: a 422, dead-lettered by the emulator
    triggers_before = _metrics(stack.triggers_url)
    producer.send("booking.requested", key=b"poison", value=b'{"booking_id": "nope"}', headers=[
        ("content-type", b"application/json"), ("ce_specversion", b"1.0"),
        ("ce_id", secrets.token_hex(8).encode()), ("ce_source", b"/test"),
        ("ce_type", b"marketplace.booking.requested")]).get(timeout=30)
    producer.close()
    eventually(lambda: _metrics(stack.triggers_url), lambda m: _count(
        m, "marketplace_dead_letters_total", function="reserve_ticket") > _count(
        triggers_before, "marketplace_dead_letters_total", function="reserve_ticket"),
        what="reserve_ticket dead letter counted")
    assert _count(reactions(), "marketplace_events_total", function="reserve_ticket",
                  outcome="poison") > _count(after, "marketplace_events_total",
                                             function="reserve_ticket", outcome="poison")
    assert "marketplace_kafkasource_lag{" in "".join(_metrics(stack.triggers_url))


def _log_lines(workdir: Path) -> list[str]:
    return [line for path in sorted(workdir.glob("*.log"))
            for line in path.read_text(errors="replace").splitlines()]


def test_one_json_line_per_event_and_request_and_no_secret_in_any(
        marketplace: Marketplace) -> None:
    course = marketplace.publish(capacity=1)
    user = marketplace.register()
    login = marketplace.login(ADMIN_EMAIL, ADMIN_PASSWORD)  # its tokens join ISSUED_TOKENS,
    assert marketplace.refresh(login.body["refresh_token"]).status == 200  # and these
    booking = user.book(course["course_id"])
    user.wait_status(booking, "AWAITING_PAYMENT")
    workdir = marketplace.stack.config.workdir

    def handled() -> list[dict[str, object]]:
        records = []
        for line in _log_lines(workdir):
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("subject") == booking or booking in str(record.get("path", "")):
                    records.append(record)
        return records

    records = eventually(handled, lambda rs: {"reserve_ticket", "bookings"} <= {
        str(r.get("function")) for r in rs}, what="log lines about the booking")
    event = next(r for r in records if r.get("function") == "reserve_ticket")
    for name in ("time", "level", "function", "event_id", "type", "subject", "trace_id",
                 "outcome", "duration_ms", "attempt"):
        assert name in event, f"{name} missing from {event}"
    assert event["outcome"] == "handled" and re.fullmatch(r"[0-9a-f]{32}", str(event["trace_id"]))
    request = next(r for r in records if r.get("function") == "bookings")
    assert request["status"] == 200 and request["route"] == "/bookings/<uuid:booking_id>"

    secrets_seen = [ADMIN_PASSWORD, *ISSUED_TOKENS]
    assert len(secrets_seen) > 6
    leaks = [(line[:120], s[:12]) for line in _log_lines(workdir) for s in secrets_seen
             if s in line]
    assert not leaks, f"secrets in the logs: {leaks[:5]}"
