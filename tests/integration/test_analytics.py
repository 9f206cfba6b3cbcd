"""index_event and GET /analytics/summary against the embedded search server and PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from functions.index_event import indexer
from shared.adapters import search
from shared.domain.events import (
    BookingCancelled,
    BookingConfirmed,
    BookingExpired,
    BookingRejected,
    BookingRequested,
    Event,
    PaymentRefunded,
    PaymentRequested,
    PaymentSucceeded,
    UserRegistered,
)
from shared.edge import tokens
from shared.runtime.bootstrap import Runtime
from shared.runtime.config import settings
from shared.runtime.envelope import Envelope
from tests.helpers.events import app, post

TARGET = "index_event"
T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


@pytest.fixture
def es(rt: Runtime, search_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Elasticsearch]:
    monkeypatch.setenv("ELASTICSEARCH_URL", search_url)
    if not os.environ.get("ELASTICSEARCH_SERVER_MODE"):
        monkeypatch.setenv("ELASTICSEARCH_SERVER_MODE", "serverless")
    settings.cache_clear()
    search.client.cache_clear()
    client = search.client()
    client.indices.delete(index=search.INDEX, ignore_unavailable=True)
    search.forget_index_setup()
    yield client
    search.client.cache_clear()


def cloudevent(event: Event, time: datetime = T0, event_id: str | None = None
               ) -> dict[str, Any]:
    envelope = Envelope(data=event, source="/marketplace/functions/test", time=time)
    return {"specversion": "1.0", "id": event_id or envelope.id, "source": envelope.source,
            "type": envelope.type, "subject": envelope.subject,
            "time": envelope.time.isoformat(), "datacontenttype": "application/json",
            "data": event.model_dump(mode="json")}


def count(es: Elasticsearch) -> int:
    es.indices.refresh(index=search.INDEX)
    return int(es.count(index=search.INDEX)["count"])


def seed_booking(rt: Runtime, course: uuid.UUID, user: uuid.UUID) -> uuid.UUID:
    booking = uuid.uuid4()
    with rt.db.transaction() as tx:
        tx.execute("INSERT INTO bookings (booking_id, course_id, user_id) VALUES (:b, :c, :u)",
                   b=booking, c=course, u=user)
    return booking


def test_an_event_is_one_document_whatever_the_redelivery(rt: Runtime, es: Elasticsearch
                                                          ) -> None:
    user, course = uuid.uuid4(), uuid.uuid4()
    booking = seed_booking(rt, course, user)
    ce = cloudevent(PaymentSucceeded(payment_id=uuid.uuid4(), booking_id=booking,
                                     amount_cents=4900, currency="EUR", charge_id="ch_1"))
    for mode in ("binary", "structured", "binary"):
        assert post(TARGET, ce, mode).status_code == 200
    assert count(es) == 1
    doc = es.get(index=search.INDEX, id=ce["id"])["_source"]
    assert doc["type"] == "payment.succeeded" and doc["status"] == "SUCCEEDED"
    assert (doc["amount_cents"], doc["currency"]) == (4900, "EUR")
    # the payment names only its booking: course and user come from `bookings`
    assert (doc["course_id"], doc["user_id"]) == (str(course), str(user))


def test_the_index_template_types_the_fields(rt: Runtime, es: Elasticsearch) -> None:
    assert post(TARGET, cloudevent(UserRegistered(
        user_id=uuid.uuid4(), email="a@example.com", full_name="A", role="user",
        registered_at=T0))).status_code == 200
    properties = es.indices.get_mapping(index=search.INDEX)[search.INDEX]["mappings"][
        "properties"]
    types = {name: properties[name]["type"] for name in (
        "type", "time", "course_id", "user_id", "booking_id", "amount_cents", "currency",
        "status")}
    assert types == {"type": "keyword", "time": "date", "course_id": "keyword",
                     "user_id": "keyword", "booking_id": "keyword", "amount_cents": "long",
                     "currency": "keyword", "status": "keyword"}


def test_a_burst_is_indexed_in_few_bulk_calls(rt: Runtime, es: Elasticsearch) -> None:
    events = [cloudevent(BookingRequested(booking_id=uuid.uuid4(), user_id=uuid.uuid4(),
                                          course_id=uuid.uuid4(), requested_at=T0))
              for _ in range(40)]
    before = indexer.flushes
    with ThreadPoolExecutor(20) as pool:
        assert set(pool.map(lambda ce: post(TARGET, ce).status_code, events)) == {200}
    assert count(es) == 40
    assert indexer.flushes - before < 40


def test_poison_is_refused(rt: Runtime, es: Elasticsearch) -> None:
    ce = cloudevent(BookingRequested(booking_id=uuid.uuid4(), user_id=uuid.uuid4(),
                                     course_id=uuid.uuid4(), requested_at=T0))
    ce["data"] = {"booking_id": "not-a-uuid"}
    assert post(TARGET, ce).status_code == 422


def test_search_down_is_retryable(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ELASTICSEARCH_URL", "http://127.0.0.1:9")
    settings.cache_clear()
    search.client.cache_clear()
    ce = cloudevent(BookingRequested(booking_id=uuid.uuid4(), user_id=uuid.uuid4(),
                                     course_id=uuid.uuid4(), requested_at=T0))
    assert post(TARGET, ce).status_code == 503
    search.client.cache_clear()


def play(rt: Runtime, course: uuid.UUID, minute: int = 0) -> None:
    """Seven bookings: confirmed, cancelled, expired (then paid late, refunded), 2 rejected,
    2 still open; every event as it would arrive."""
    at = T0 + timedelta(minutes=minute)
    user = uuid.uuid4()
    events: list[Event] = []
    bookings = [seed_booking(rt, course, user) for _ in range(7)]
    for booking in bookings:
        events.append(BookingRequested(booking_id=booking, user_id=user, course_id=course,
                                       requested_at=at))
    for booking in bookings[:3] + bookings[5:]:
        events.append(PaymentRequested(payment_id=uuid.uuid4(), booking_id=booking,
                                       user_id=user, amount_cents=4900, currency="EUR",
                                       hold_expires_at=at))
    ok, declined, late = bookings[:3]
    events += [
        PaymentSucceeded(payment_id=uuid.uuid4(), booking_id=ok, amount_cents=4900,
                         currency="EUR", charge_id="ch"),
        BookingConfirmed(booking_id=ok, user_id=user, course_id=course, ticket_id=uuid.uuid4(),
                         payment_id=uuid.uuid4(), amount_cents=4900, currency="EUR"),
        BookingCancelled(booking_id=declined, user_id=user, course_id=course,
                         reason="payment_failed"),
        BookingExpired(booking_id=late, user_id=user, course_id=course, hold_expired_at=at),
        PaymentSucceeded(payment_id=uuid.uuid4(), booking_id=late, amount_cents=4900,
                         currency="EUR", charge_id="ch"),
        PaymentRefunded(payment_id=uuid.uuid4(), booking_id=late, amount_cents=4900,
                        currency="EUR", reason="booking_expired"),
        *(BookingRejected(booking_id=b, user_id=user, course_id=course, reason="sold_out")
          for b in bookings[3:5]),
    ]
    for event in events:
        assert post(TARGET, cloudevent(event, at)).status_code == 200


def get_summary(query: str = "", role: str = "admin") -> Any:
    client = app("analytics").test_client()
    token = tokens.issue_access(uuid.uuid4(), role, uuid.uuid4())
    return client.get(f"/analytics/summary{query}", headers={"Authorization": f"Bearer {token}"})


def test_the_summary_is_answered_by_aggregations(rt: Runtime, es: Elasticsearch) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    play(rt, first, minute=0)
    play(rt, second, minute=10)
    es.indices.refresh(index=search.INDEX)

    answer = get_summary()
    assert answer.status_code == 200, answer.text
    body = answer.json
    one = {
        "bookings_by_status": {"CONFIRMED": 1, "CANCELLED": 1, "EXPIRED": 1, "REJECTED": 2,
                               "IN_PROGRESS": 2},
        "bookings_requested": 7, "tickets_sold": 1,
        "revenue": {"EUR": {"received_cents": 9800, "refunded_cents": 4900, "net_cents": 4900,
                            "confirmed_cents": 4900}},
        "conversion_rate": round(1 / 7, 4), "expiry_rate": 0.2,
    }
    for course in (str(first), str(second)):
        figures = body["courses"][course]
        assert {k: figures[k] for k in one} == one
        assert figures["events"]["booking.requested"] == 7
    overall = body["overall"]
    assert overall["bookings_by_status"]["REJECTED"] == 4 and overall["tickets_sold"] == 2
    assert overall["revenue"]["EUR"]["net_cents"] == 9800

    only_first = get_summary(f"?course_id={first}").json
    assert list(only_first["courses"]) == [str(first)]
    assert only_first["overall"]["bookings_requested"] == 7
    window = get_summary("?from=2026-11-24T10:05:00Z&to=2026-11-24T11:00:00%2B00:00").json
    assert list(window["courses"]) == [str(second)]
    assert window["overall"]["tickets_sold"] == 1


def test_the_summary_is_for_admins_with_a_valid_query(rt: Runtime, es: Elasticsearch) -> None:
    assert get_summary(role="user").status_code == 403
    assert get_summary("?course_id=nope").status_code == 422
    assert get_summary("?from=2026-11-24T10:00:00").status_code == 422  # no zone
    empty = get_summary().json
    assert empty["overall"]["bookings_requested"] == 0 and empty["courses"] == {}
    assert empty["overall"]["conversion_rate"] is None


def test_the_consistency_check_names_every_difference(rt: Runtime, es: Elasticsearch) -> None:
    from local.ops import consistency

    course = uuid.uuid4()
    play(rt, course)  # the events say what happened; the seeded bookings are still PENDING
    found = consistency.differences(rt.db, es)
    assert f"{course}: CONFIRMED: postgres 0, analytics 1" in found
    assert f"{course}: IN_PROGRESS: postgres 7, analytics 2" in found
    assert "overall: net_cents EUR: postgres 0, analytics 4900" in found
    assert not [line for line in found if "bookings_requested" in line]
