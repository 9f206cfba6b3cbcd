"""A booking's timeline over the whole stack: confirmed, expired, and refunded after it expired."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from local.knative import faults
from tests.helpers.client import Client
from tests.helpers.marketplace import HOLD_TTL_SECONDS, SWEEP_INTERVAL_SECONDS, Marketplace
from tests.helpers.waiting import eventually

# (type, emitted by, handled by): what every booking's saga starts with. reserve_ticket holds
# the ticket and opens the payment in one transaction; the two events it emits are the
# contract's, for whoever reads them, and no function of the saga takes them any more (the
# analytics indexer keeps nothing in PostgreSQL, so a timeline never lists it).
OPENING = [
    ("marketplace.booking.requested", "bookings", ["reserve_ticket"]),
    ("marketplace.ticket.reserved", "reserve_ticket", []),
    ("marketplace.payment.requested", "reserve_ticket", []),
]
Line = list[tuple[str, str, list[str]]]


def timeline(client: Client, booking_id: str) -> dict[str, Any]:
    result: dict[str, Any] = client.ok("GET", f"/bookings/{booking_id}/timeline")
    return result


def story(line: dict[str, Any]) -> Line:
    return [(e["type"], e["emitted_by"], sorted(h["function"] for h in e["handled_by"]))
            for e in line["events"]]


def sent(line: dict[str, Any]) -> bool:
    """No message still on its way: the notifier is listed from its claim, before it sends."""
    return all(m["status"] in {"SENT", "FAILED"} for e in line["events"] for m in e["messages"])


def settled(client: Client, booking_id: str, expected: Line) -> dict[str, Any]:
    """The timeline once every handler has run (they run after the status is visible)."""
    return eventually(lambda: timeline(client, booking_id),
                      lambda t: story(t) == expected and sent(t),
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
        ("marketplace.payment.succeeded", "stripe_webhook", ["settle_booking"]),
        ("marketplace.booking.confirmed", "settle_booking", ["send_notifications"]),
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
        assert answer.status == 404
        assert answer.headers["content-type"] == "application/problem+json"
    assert user.call("GET", "/bookings/not-a-uuid/timeline").status == 404
    assert Client(marketplace.url).call(
        "GET", f"/bookings/{booking_id}/timeline").status == 401


def test_timeline_of_an_expired_booking_whose_money_came_anyway(marketplace: Marketplace
                                                                 ) -> None:
    """The customer pays at the provider, its webhook is lost, the hold runs out: refunded."""
    course = marketplace.publish(capacity=1, price_cents=2500)
    user = marketplace.register()
    booking_id = user.book(course["course_id"])
    user.wait_status(booking_id, "AWAITING_PAYMENT")
    intent = user.ok("POST", f"/bookings/{booking_id}/payment", {}, status=202)[
        "provider_payment_id"]
    assert marketplace.stack.runtime is not None
    provider = marketplace.stack.runtime.provider.client
    faults.drop(marketplace.faults_file, "/webhooks/stripe",
                for_seconds=HOLD_TTL_SECONDS + SWEEP_INTERVAL_SECONDS + 30)
    try:
        # What Stripe.js does in the browser: the money is taken at the provider.
        provider.v1.payment_intents.update(intent, params={"payment_method": "pm_card_visa"})
        provider.v1.payment_intents.confirm(intent)
        user.wait_status(booking_id, "EXPIRED",
                         timeout=HOLD_TTL_SECONDS + SWEEP_INTERVAL_SECONDS + 20)
        line = eventually(
            lambda: timeline(user, booking_id),
            lambda t: story(t)[:3] == OPENING and story(t)[4:] == [
                ("marketplace.booking.expired", "expire_booking",
                 ["cancel_open_payment", "send_notifications"]),
                ("marketplace.payment.succeeded", "cancel_open_payment", ["settle_booking"]),
                ("marketplace.payment.refund_requested", "settle_booking", ["refund_payment"]),
                ("marketplace.payment.refunded", "refund_payment", ["send_notifications"])]
            and all(m["status"] == "SENT" for m in t["events"][-1]["messages"]) and sent(t),
            timeout=30, what="the expired and refunded booking's timeline")
    finally:
        faults.clear(marketplace.faults_file)
    hold_end = line["events"][3]
    # whichever noticed first, the Redis watcher or the sweeper: one event, one handling
    assert hold_end["type"] == "marketplace.reservation.expired"
    assert hold_end["emitted_by"] in {"hold_expiry_watcher", "sweep_expired_holds"}
    assert [h["function"] for h in hold_end["handled_by"]] == ["expire_booking"]
    assert [m["template"] for m in line["events"][4]["messages"]] == ["booking_expired"]
    assert [(m["template"], m["status"]) for m in line["events"][-1]["messages"]] == [
        ("payment_refunded", "SENT")]
    assert line["status"] == "EXPIRED"
    assert_in_order(line)
    refunds = provider.v1.refunds.list(params={"payment_intent": intent}).data
    assert [(r.status, r.amount) for r in refunds] == [("succeeded", 2500)]
