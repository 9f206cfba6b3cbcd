"""Whole histories of the saga through the saga driver, on real PostgreSQL, Redis and SES.

The driver plays the broker (tests/helpers/saga.py): what one function emits reaches
every function subscribed to its topic, in the order a test chooses. These are the
histories worth keeping by name; `make verify` explores the rest.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from shared.adapters import aws
from shared.domain import holds
from shared.edge import tokens
from shared.runtime.bootstrap import Runtime
from shared.runtime.config import settings
from tests.helpers.events import COURSE, USER, app
from tests.helpers.provider_double import SECRET, ProviderDouble
from tests.helpers.rows import outbox, row, scalar, seed_course, ticket_counts
from tests.helpers.saga import SagaDriver

SAGA = {"reserve_ticket", "settle_booking", "expire_booking", "cancel_open_payment",
        "refund_payment", "send_notifications"}


@pytest.fixture
def saga(rt: Runtime, aws_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[SagaDriver]:
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_url)
    settings.cache_clear()
    aws.client.cache_clear()
    rt.settings = dataclasses.replace(rt.settings, stripe_api_key="sk_test_saga",
                                      stripe_webhook_secrets=(SECRET,))
    rt._provider = ProviderDouble()
    seed_course(rt, capacity=1)
    with rt.db.transaction() as tx:
        tx.execute("INSERT INTO accounts (user_id, email, password_hash, full_name, role)"
                   " VALUES (:u, 'ada@example.com', 'x', 'Ada', 'user')", u=USER)
    yield SagaDriver(rt, SAGA)
    aws.client.cache_clear()


def http(path: str, body: dict[str, Any] | None = None) -> Any:
    token = tokens.issue_access(USER, "user", uuid.uuid4())
    return app("bookings").test_client().post(path, json=body or {},
                                              headers={"Authorization": f"Bearer {token}"})


def book(saga: SagaDriver) -> uuid.UUID:
    answer = http("/bookings", {"course_id": str(COURSE)})
    assert answer.status_code == 202, answer.data
    saga.settle()
    return uuid.UUID(answer.get_json()["booking_id"])


def status(rt: Runtime, booking: uuid.UUID) -> str:
    return str(scalar(rt, "SELECT status FROM bookings WHERE booking_id = :b", b=booking))


def webhooks(rt: Runtime) -> None:
    provider: ProviderDouble = rt._provider  # type: ignore[assignment]
    for hook in provider.webhooks:
        answer = app("stripe_webhook").test_client().post(
            "/webhooks/stripe", data=hook.body,
            headers={"Content-Type": "application/json", "Stripe-Signature": hook.signature()})
        assert answer.status_code == 200, answer.data


def emails(rt: Runtime) -> list[str]:
    with rt.db.transaction() as tx:
        return [r["template"] for r in tx.all(
            "SELECT template FROM notifications WHERE status = 'SENT' ORDER BY created_at")]


def test_a_paid_booking_is_confirmed_its_ticket_sold_and_its_user_told_once(
        rt: Runtime, saga: SagaDriver) -> None:
    booking = book(saga)
    assert status(rt, booking) == "AWAITING_PAYMENT"
    assert http(f"/bookings/{booking}/payment", {"payment_method": "pm_card_visa"}
                ).status_code == 202
    webhooks(rt)
    saga.settle()
    assert status(rt, booking) == "CONFIRMED"
    assert ticket_counts(rt) == {"AVAILABLE": 0, "RESERVED": 0, "SOLD": 1}
    for i in range(len(saga.delivered)):  # every event again: nothing changes
        assert saga.redeliver(i) == 200
    assert status(rt, booking) == "CONFIRMED" and emails(rt) == ["booking_confirmed"]


def test_money_that_crosses_the_expiry_is_refunded_once_and_the_ticket_goes_back(
        rt: Runtime, saga: SagaDriver) -> None:
    booking = book(saga)
    http(f"/bookings/{booking}/payment", {"payment_method": "pm_card_visa"})
    with rt.db.transaction() as tx:  # the hold runs out while the provider's answer travels
        held = tx.one("UPDATE bookings SET hold_expires_at = now() - interval '1 second'"
                      " WHERE booking_id = :b RETURNING hold_expires_at, trace_context",
                      b=booking)
    assert held is not None
    assert saga.tick("sweep_expired_holds") == 200
    assert saga.deliver_topic("reservation.expired") == [200]
    webhooks(rt)  # ...and then the money arrives
    saga.settle()
    assert status(rt, booking) == "EXPIRED"
    assert ticket_counts(rt) == {"AVAILABLE": 1, "RESERVED": 0, "SOLD": 0}
    assert scalar(rt, "SELECT status FROM payments") == "REFUNDED"
    assert [e["data"]["reason"] for e in outbox(rt, "payment.refunded")] == ["booking_expired"]
    assert sorted(emails(rt)) == ["booking_expired", "payment_refunded"]
    assert not rt.redis.exists(holds.key(booking, held["hold_expires_at"], held["trace_context"]))


def test_a_crash_between_commit_and_publish_is_made_up_by_the_relay(
        rt: Runtime, saga: SagaDriver) -> None:
    answer = http("/bookings", {"course_id": str(COURSE)})
    booking = uuid.UUID(answer.get_json()["booking_id"])
    saga.crash_next()
    assert saga.deliver_topic("booking.requested") == [200]  # committed; its event not sent
    assert ticket_counts(rt)["RESERVED"] == 1 and saga.pending() == []
    assert saga.relay() == 2  # ticket.reserved and payment.requested
    saga.settle()
    assert status(rt, booking) == "AWAITING_PAYMENT"
    assert row(rt, "SELECT 1 FROM outbox WHERE published_at IS NULL") is None


def test_a_booking_cancelled_before_its_ticket_is_reserved_never_holds_one(
        rt: Runtime, saga: SagaDriver) -> None:
    answer = http("/bookings", {"course_id": str(COURSE)})
    booking = uuid.UUID(answer.get_json()["booking_id"])
    assert http(f"/bookings/{booking}/cancel").status_code == 202
    saga.settle()
    assert status(rt, booking) == "CANCELLED"
    assert ticket_counts(rt) == {"AVAILABLE": 1, "RESERVED": 0, "SOLD": 0}
