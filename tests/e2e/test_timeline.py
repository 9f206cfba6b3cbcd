"""A booking's timeline over the whole stack: confirmed, expired, and refunded after it expired."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from conftest import HOLD_TTL_SECONDS, SWEEP_INTERVAL_SECONDS, Client, Marketplace, eventually

from shared.domain.events import PaymentSucceeded
from shared.runtime.reactions import unit_of_work

# (type, emitted by, handled by): what every booking's saga starts with
OPENING = [
    ("marketplace.booking.requested", "bookings", ["reserve_ticket"]),
    ("marketplace.ticket.reserved", "reserve_ticket", ["open_hold"]),
    ("marketplace.payment.requested", "open_hold", ["open_payment"]),
]
Line = list[tuple[str, str, list[str]]]


def timeline(client: Client, booking_id: str) -> dict[str, Any]:
    result: dict[str, Any] = client.ok("GET", f"/bookings/{booking_id}/timeline")
    return result


def story(line: dict[str, Any]) -> Line:
    return [(e["type"], e["emitted_by"], sorted(h["function"] for h in e["handled_by"]))
            for e in line["events"]]


def settled(client: Client, booking_id: str, expected: Line) -> dict[str, Any]:
    """The timeline once every handler has run (they run after the status is visible)."""
    return eventually(lambda: timeline(client, booking_id), lambda t: story(t) == expected,
                      timeout=30, what=f"the timeline of {booking_id}")


def assert_in_order(line: dict[str, Any]) -> None:
    times = [datetime.fromisoformat(e["time"]) for e in line["events"]]
    assert times == sorted(times)
    for event in line["events"]:
        for handling in event["handled_by"]:
            assert datetime.fromisoformat(handling["at"]) >= datetime.fromisoformat(
                event["time"]), (event["type"], handling)


def test_timeline_of_a_confirmed_booking(marketplace: Marketplace) -> None:
    course = marketplace.publish(capacity=1)
    user = marketplace.register()
    booking_id = user.book(course["course_id"])
    user.wait_status(booking_id, "AWAITING_PAYMENT")
    user.ok("POST", f"/bookings/{booking_id}/payment", {"payment_method": "pm_card_visa"},
            status=202)
    user.wait_status(booking_id, "CONFIRMED")
    line = settled(user, booking_id, [
        *OPENING,
        ("marketplace.payment.succeeded", "bookings", ["settle_booking"]),
        ("marketplace.booking.confirmed", "settle_booking",
         ["send_notifications", "settle_ticket"]),
    ])
    assert line["booking_id"] == booking_id and line["status"] == "CONFIRMED"
    assert_in_order(line)
    confirmed = line["events"][-1]
    assert [(m["channel"], m["template"], m["status"]) for m in confirmed["messages"]] == [
        ("email", "booking_confirmed", "SENT")]
    assert all(not e["messages"] for e in line["events"][:-1])
    assert all(not e["dead_lettered"] for e in line["events"])
    assert len({e["event_id"] for e in line["events"]}) == 5
    # one trace per booking: the timeline names it on every event
    assert len({e["trace_id"] for e in line["events"]}) == 1 and line["events"][0]["trace_id"]

    # an admin sees the same; anyone else gets the 404 of a booking that does not exist
    assert story(timeline(marketplace.admin, booking_id)) == story(line)
    stranger = marketplace.register()
    for who, booking in ((stranger, booking_id), (user, str(uuid.uuid4()))):
        answer = who.call("GET", f"/bookings/{booking}/timeline")
        assert answer.status_code == 404
        assert answer.headers["Content-Type"] == "application/problem+json"
    assert user.call("GET", "/bookings/not-a-uuid/timeline").status_code == 404
    assert Client(marketplace.url).call(
        "GET", f"/bookings/{booking_id}/timeline").status_code == 401


def test_timeline_of_an_expired_booking_then_of_its_refund(marketplace: Marketplace) -> None:
    course = marketplace.publish(capacity=1, price_cents=2500)
    user = marketplace.register()
    booking_id = user.book(course["course_id"])
    user.wait_status(booking_id, "AWAITING_PAYMENT")
    user.wait_status(booking_id, "EXPIRED", timeout=HOLD_TTL_SECONDS + SWEEP_INTERVAL_SECONDS + 20)
    expired_at_end = [
        ("marketplace.booking.expired", "expire_booking",
         ["cancel_open_payment", "send_notifications", "settle_ticket"])]
    line = eventually(lambda: timeline(user, booking_id),
                      lambda t: story(t)[:3] == OPENING and story(t)[4:] == expired_at_end,
                      timeout=30, what="the expired booking's timeline")
    hold_end = line["events"][3]
    # whichever noticed first, the Redis watcher or the sweeper: one event, one handling
    assert hold_end["type"] == "marketplace.reservation.expired"
    assert hold_end["emitted_by"] in {"hold_expiry_watcher", "sweep_expired_holds"}
    assert [h["function"] for h in hold_end["handled_by"]] == ["expire_booking"]
    assert [m["template"] for m in line["events"][-1]["messages"]] == ["booking_expired"]
    assert_in_order(line)

    # The money arrives anyway (the card provider answered late): settle_booking refunds it.
    rt = marketplace.stack.runtime
    assert rt is not None
    with unit_of_work("/marketplace/functions/bookings", rt) as uow:
        payment = uow.tx.one("UPDATE payments SET status = 'SUCCEEDED', charge_id = 'ch_late'"
                             " WHERE booking_id = :b RETURNING payment_id, amount_cents, currency",
                             b=uuid.UUID(booking_id))
        assert payment is not None
        uow.emit(PaymentSucceeded(payment_id=payment["payment_id"], booking_id=booking_id,
                                  amount_cents=payment["amount_cents"],
                                  currency=payment["currency"], charge_id="ch_late"))
    refunded = settled(user, booking_id, [
        *story(line),
        ("marketplace.payment.succeeded", "bookings", ["settle_booking"]),
        ("marketplace.payment.refunded", "settle_booking", ["send_notifications"]),
    ])
    assert refunded["status"] == "EXPIRED"
    assert [(m["template"], m["status"]) for m in refunded["events"][-1]["messages"]] == [
        ("payment_refunded", "SENT")]
    assert_in_order(refunded)
