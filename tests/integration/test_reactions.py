"""Each saga function against real PostgreSQL and Redis, fed recorded CloudEvents."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from shared.domain import holds
from shared.domain.payments import payment_id_for
from shared.runtime.bootstrap import Runtime
from tests.helpers.events import BOOKING, fixture, post
from tests.helpers.rows import outbox, row, scalar, seed_booking, seed_course, ticket_counts


def booking(rt: Runtime) -> dict[str, object]:
    found = row(rt, "SELECT * FROM bookings WHERE booking_id = :b", b=BOOKING)
    assert found is not None
    return found


def set_booking(rt: Runtime, **columns: object) -> None:
    sets = ", ".join(f"{name} = :{name}" for name in columns)
    with rt.db.transaction() as tx:
        tx.execute(f"UPDATE bookings SET {sets} WHERE booking_id = :b", b=BOOKING, **columns)


def reserve(rt: Runtime) -> uuid.UUID:
    """Drive the fixture booking through reserve_ticket; returns its ticket."""
    assert post("reserve_ticket", fixture("booking.requested")).status_code == 200
    ticket = booking(rt)["ticket_id"]
    assert isinstance(ticket, uuid.UUID)
    return ticket


def awaiting_payment(rt: Runtime, expires_in: timedelta = timedelta(minutes=10)) -> uuid.UUID:
    seed_course(rt)
    seed_booking(rt)
    ticket = reserve(rt)
    set_booking(rt, status="AWAITING_PAYMENT",
                hold_expires_at=holds.deadline(datetime.now(UTC) + expires_in, 0))
    return ticket


# --- reserve_ticket -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_reserve_ticket_reserves_one_ticket_holds_it_and_opens_its_payment(
        rt: Runtime, mode: str) -> None:
    seed_course(rt, capacity=3, price_cents=4900)
    seed_booking(rt)
    assert post("reserve_ticket", fixture("booking.requested"), mode).status_code == 200
    assert ticket_counts(rt) == {"AVAILABLE": 2, "RESERVED": 1, "SOLD": 0}
    assert [e["topic"] for e in outbox(rt)] == ["ticket.reserved", "payment.requested"]
    [event] = outbox(rt, "ticket.reserved")
    assert event["data"]["amount_cents"] == 4900 and event["data"]["currency"] == "EUR"
    assert event["headers"]["ce_source"] == "/marketplace/functions/reserve-ticket"
    found = booking(rt)
    assert found["amount_cents"] == 4900 and found["status"] == "AWAITING_PAYMENT"
    expires = found["hold_expires_at"]
    assert isinstance(expires, datetime)
    assert timedelta(seconds=590) < expires - datetime.now(UTC) <= timedelta(seconds=600)
    [key] = [k.decode() for k in rt.redis.scan_iter(f"{holds.KEY_PREFIX}*")]
    assert holds.parse_key(key) == (BOOKING, expires)
    assert 590_000 < rt.redis.pttl(key) <= 600_000
    [requested] = outbox(rt, "payment.requested")
    assert requested["data"]["payment_id"] == str(payment_id_for(BOOKING))
    assert datetime.fromisoformat(requested["data"]["hold_expires_at"]) == expires
    payment = row(rt, "SELECT * FROM payments WHERE booking_id = :b", b=BOOKING)
    assert payment is not None
    assert payment["status"] == "REQUIRES_PAYMENT" and payment["amount_cents"] == 4900
    assert payment["payment_id"] == payment_id_for(BOOKING)


@pytest.mark.parametrize(("capacity", "status", "exists", "reason"), [
    (1, "ACTIVE", True, "sold_out"),
    (3, "INACTIVE", True, "course_inactive"),
    (3, "ACTIVE", False, "course_not_found"),
])
def test_reserve_ticket_says_why_no_ticket(rt: Runtime, capacity: int, status: str,
                                           exists: bool, reason: str) -> None:
    if exists:
        seed_course(rt, capacity=capacity, status=status)
    if reason == "sold_out":
        other = seed_booking(rt, booking_id=uuid.uuid4())
        first = fixture("booking.requested", booking_id=other) | {"id": str(uuid.uuid4())}
        assert post("reserve_ticket", first).status_code == 200
    seed_booking(rt)
    for _ in range(3):
        assert post("reserve_ticket", fixture("booking.requested")).status_code == 200
    unavailable = outbox(rt, "ticket.unavailable")
    assert [e["data"]["reason"] for e in unavailable] == [reason]
    assert [e["data"]["reason"] for e in outbox(rt, "booking.rejected")] == [reason]
    found = booking(rt)
    assert found["ticket_id"] is None
    assert (found["status"], found["reason"]) == ("REJECTED", reason)


def test_reserve_ticket_three_deliveries_one_reservation(rt: Runtime) -> None:
    seed_course(rt, capacity=3)
    seed_booking(rt)
    for _ in range(3):
        assert post("reserve_ticket", fixture("booking.requested")).status_code == 200
    assert ticket_counts(rt)["RESERVED"] == 1
    assert len(outbox(rt)) == 2  # ticket.reserved and payment.requested, once
    assert scalar(rt, "SELECT count(*) FROM payments") == 1


def test_reserve_ticket_skips_a_booking_cancelled_before_it_ran(rt: Runtime) -> None:
    seed_course(rt)
    seed_booking(rt)
    set_booking(rt, status="CANCELLED", reason="user_cancelled")
    assert post("reserve_ticket", fixture("booking.requested")).status_code == 200
    assert ticket_counts(rt)["RESERVED"] == 0 and outbox(rt) == []


@pytest.mark.parametrize("name", ["poison.unknown-type", "poison.schema-mismatch",
                                  "poison.not-json"])
def test_poison_event_is_a_4xx_and_changes_nothing(rt: Runtime, name: str) -> None:
    seed_course(rt)
    seed_booking(rt)
    answer = post("reserve_ticket", fixture(name))
    assert 400 <= answer.status_code < 500 and answer.status_code not in {404, 408, 409, 429}
    assert ticket_counts(rt)["RESERVED"] == 0
    assert scalar(rt, "SELECT count(*) FROM inbox") == 0 and outbox(rt) == []


def test_an_event_for_another_function_is_poison_there(rt: Runtime) -> None:
    answer = post("reserve_ticket", fixture("payment.failed"))
    assert answer.status_code == 422
    assert b"does not handle" in answer.data


def test_reserve_ticket_with_redis_down_answers_503_and_changes_nothing(
        rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Redis restart is an outage, not a bug: 503 (counted `transient`), and the
    hold opens on the redelivery once Redis is back."""
    import redis

    seed_course(rt)
    seed_booking(rt)
    working = rt.redis
    monkeypatch.setattr(rt, "_redis", redis.Redis(port=1, socket_connect_timeout=0.2))
    answer = post("reserve_ticket", fixture("booking.requested"))
    assert answer.status_code == 503
    assert b"unreachable" in answer.data
    assert booking(rt)["status"] == "PENDING" and outbox(rt) == []
    assert ticket_counts(rt)["RESERVED"] == 0
    assert scalar(rt, "SELECT count(*) FROM inbox WHERE consumer = 'reserve_ticket'") == 0
    monkeypatch.setattr(rt, "_redis", working)
    assert post("reserve_ticket", fixture("booking.requested")).status_code == 200
    assert booking(rt)["status"] == "AWAITING_PAYMENT"


# --- settle_booking -------------------------------------------------------------------


def paid(rt: Runtime, status: str = "SUCCEEDED") -> None:
    """The booking's payment (opened by reserve_ticket) as the fixtures name it, in `status`."""
    with rt.db.transaction() as tx:
        tx.execute("UPDATE payments SET payment_id = :p, status = :s WHERE booking_id = :b",
                   p=uuid.UUID("e0000000-0000-4000-8000-000000000001"), b=BOOKING, s=status)


def test_settle_booking_confirms_a_paid_booking_once(rt: Runtime) -> None:
    awaiting_payment(rt)
    paid(rt)
    for _ in range(3):
        assert post("settle_booking", fixture("payment.succeeded")).status_code == 200
    assert booking(rt)["status"] == "CONFIRMED"
    assert ticket_counts(rt) == {"AVAILABLE": 2, "RESERVED": 0, "SOLD": 1}
    assert [e["topic"] for e in outbox(rt)][2:] == ["booking.confirmed"]


def test_settle_booking_cancels_when_the_payment_failed(rt: Runtime) -> None:
    awaiting_payment(rt)
    paid(rt, "FAILED")
    assert post("settle_booking", fixture("payment.failed")).status_code == 200
    assert booking(rt)["status"] == "CANCELLED" and booking(rt)["reason"] == "payment_failed"
    assert ticket_counts(rt) == {"AVAILABLE": 3, "RESERVED": 0, "SOLD": 0}
    [cancelled] = outbox(rt, "booking.cancelled")
    assert cancelled["data"]["reason"] == "payment_failed"


@pytest.mark.parametrize("status", ["EXPIRED", "CANCELLED"])
def test_settle_booking_asks_back_money_that_came_too_late(rt: Runtime, status: str) -> None:
    awaiting_payment(rt)
    set_booking(rt, status=status)
    paid(rt)
    for _ in range(3):
        assert post("settle_booking", fixture("payment.succeeded")).status_code == 200
    assert booking(rt)["status"] == status
    assert scalar(rt, "SELECT status FROM payments") == "REFUNDING"
    [refund] = outbox(rt, "payment.refund_requested")
    assert refund["data"]["reason"] == f"booking_{status.lower()}"
    assert outbox(rt, "payment.refunded") == []  # only once the provider refunded it


# --- expire_booking -------------------------------------------------------------------


def expired_event(rt: Runtime, detected_by: str = "watcher") -> dict[str, object]:
    deadline = booking(rt)["hold_expires_at"]
    assert isinstance(deadline, datetime)
    envelope = holds.expiry_event(BOOKING, deadline, detected_by)  # type: ignore[arg-type]
    event = envelope.to_cloudevent()
    return {**{k: v for k, v in event.get_attributes().items()},
            "source": "/test", "data": event.get_data()}


def test_expire_booking_once_whichever_path_fires(rt: Runtime) -> None:
    awaiting_payment(rt, expires_in=timedelta(seconds=-1))
    from_watcher, from_sweeper = expired_event(rt, "watcher"), expired_event(rt, "sweeper")
    assert from_watcher["id"] == from_sweeper["id"]
    for event in (from_watcher, from_sweeper, from_watcher):
        assert post("expire_booking", event).status_code == 200
    assert booking(rt)["status"] == "EXPIRED"
    assert ticket_counts(rt) == {"AVAILABLE": 3, "RESERVED": 0, "SOLD": 0}
    assert len(outbox(rt, "booking.expired")) == 1


def test_expire_booking_ignores_a_paid_booking_and_a_stale_hold(rt: Runtime) -> None:
    awaiting_payment(rt, expires_in=timedelta(seconds=-1))
    stale = expired_event(rt)
    set_booking(rt, hold_expires_at=holds.deadline(datetime.now(UTC), -5))
    assert post("expire_booking", stale).status_code == 200
    assert booking(rt)["status"] == "AWAITING_PAYMENT"


def test_expire_booking_early_alarm_is_retried(rt: Runtime) -> None:
    awaiting_payment(rt, expires_in=timedelta(minutes=5))
    answer = post("expire_booking", expired_event(rt))
    assert answer.status_code == 503
    assert booking(rt)["status"] == "AWAITING_PAYMENT"
    assert scalar(rt, "SELECT count(*) FROM inbox WHERE consumer = 'expire_booking'") == 0


# --- cancel_open_payment ------------------------------------------------------------


@pytest.mark.parametrize("event", ["booking.cancelled", "booking.expired"])
def test_cancel_open_payment(rt: Runtime, event: str) -> None:
    awaiting_payment(rt)
    paid(rt, "REQUIRES_PAYMENT")
    assert post("cancel_open_payment", fixture(event)).status_code == 200
    assert scalar(rt, "SELECT status FROM payments") == "CANCELLED"


def test_cancel_open_payment_leaves_a_paid_payment_alone(rt: Runtime) -> None:
    awaiting_payment(rt)
    paid(rt, "SUCCEEDED")
    assert post("cancel_open_payment", fixture("booking.expired")).status_code == 200
    assert scalar(rt, "SELECT status FROM payments") == "SUCCEEDED"


# --- sweep_expired_holds --------------------------------------------------------------


def test_sweeper_emits_the_same_expiry_the_watcher_would(rt: Runtime) -> None:
    awaiting_payment(rt, expires_in=timedelta(seconds=-2))
    for _ in range(2):
        assert post("sweep_expired_holds", fixture("ping")).status_code == 200
    [expired] = outbox(rt, "reservation.expired")
    deadline = booking(rt)["hold_expires_at"]
    assert isinstance(deadline, datetime)
    assert expired["headers"]["ce_id"] == holds.expiry_event(BOOKING, deadline, "watcher").id
    assert expired["data"]["detected_by"] == "sweeper"


def test_sweeper_leaves_running_holds_alone(rt: Runtime) -> None:
    awaiting_payment(rt, expires_in=timedelta(minutes=1))
    assert post("sweep_expired_holds", fixture("ping")).status_code == 200
    assert outbox(rt, "reservation.expired") == []


def test_a_settled_booking_forgets_its_hold_key(rt: Runtime) -> None:
    awaiting_payment(rt)
    deadline = booking(rt)["hold_expires_at"]
    assert isinstance(deadline, datetime)
    holds.open_hold(rt.redis, BOOKING, deadline, datetime.now(UTC))
    paid(rt)
    assert rt.redis.exists(holds.key(BOOKING, deadline))
    assert post("settle_booking", fixture("payment.succeeded")).status_code == 200
    assert not rt.redis.exists(holds.key(BOOKING, deadline))
