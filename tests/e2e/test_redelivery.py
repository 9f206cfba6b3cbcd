"""Every record the scenarios produced, produced again with the same ids, changes nothing.

Also checks the wire format of everything on every topic: each record a binary-mode
CloudEvent keyed by what orders it.
"""

from __future__ import annotations

from typing import Any

from kafka import KafkaAdminClient, TopicPartition

from shared.domain.events import REGISTRY
from shared.runtime.kafka import DOORBELL_VARIABLE
from tests.helpers.broker import caught_up, produce_again, read_everything
from tests.helpers.marketplace import HOLD_TTL_SECONDS, Marketplace
from tests.helpers.waiting import eventually


def snapshot(marketplace: Marketplace) -> dict[str, Any]:
    runtime = marketplace.stack.runtime
    assert runtime is not None
    with runtime.db.transaction() as tx:
        return {
            "bookings": tx.all("SELECT booking_id, status, reason, ticket_id, amount_cents"
                               " FROM bookings ORDER BY booking_id"),
            "tickets": tx.all("SELECT ticket_id, status, booking_id FROM tickets"
                              " ORDER BY ticket_id"),
            "payments": tx.all("SELECT payment_id, status FROM payments ORDER BY payment_id"),
            "outbox": tx.scalar("SELECT count(*) FROM outbox"),
            "inbox": tx.scalar("SELECT count(*) FROM inbox"),
            "unpublished": tx.scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL"),
        }


def settled(state: dict[str, Any]) -> bool:
    return state["unpublished"] == 0 and all(
        b["status"] not in {"PENDING", "AWAITING_PAYMENT"} for b in state["bookings"])


def play_scenario(marketplace: Marketplace) -> None:
    course = marketplace.publish(capacity=2)  # one sold, one held: the last booking is rejected
    course_id = course["course_id"]
    paying, declined, late, cancelling, unlucky = (marketplace.register() for _ in range(5))

    def one_ticket_left() -> None:
        eventually(lambda: marketplace.course(course_id)["available"], lambda n: n == 1,
                   what="one ticket on sale")

    for user, method in ((paying, "pm_card_visa"), (declined, "pm_card_chargeDeclined")):
        booking_id = user.book(course_id)
        user.wait_status(booking_id, "AWAITING_PAYMENT")
        user.ok("POST", f"/bookings/{booking_id}/payment", {"payment_method": method}, 202)
        user.wait_status(booking_id, "CONFIRMED", "CANCELLED")
        one_ticket_left()
    cancelled = cancelling.book(course_id)
    cancelling.wait_status(cancelled, "AWAITING_PAYMENT")
    cancelling.ok("POST", f"/bookings/{cancelled}/cancel", status=202)
    one_ticket_left()
    late.wait_status(late.book(course_id), "AWAITING_PAYMENT")  # and it will expire
    unlucky.wait_status(unlucky.book(course_id), "REJECTED")


def test_replaying_every_record_changes_nothing(marketplace: Marketplace) -> None:
    play_scenario(marketplace)
    bootstrap = marketplace.stack.env["KAFKA_BOOTSTRAP_SERVERS"]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    before = eventually(lambda: snapshot(marketplace), settled, timeout=HOLD_TTL_SECONDS + 30,
                        what="every booking settled and every event published")
    records = read_everything(bootstrap)
    produced = {r.headers and dict(r.headers).get("ce_type", b"").decode() for r in records}
    for required in ("booking.requested", "ticket.reserved", "ticket.unavailable",
                     "payment.requested", "payment.succeeded", "payment.failed",
                     "reservation.expired", "booking.confirmed", "booking.rejected",
                     "booking.cancelled", "booking.expired", "user.registered",
                     "course.published"):
        assert f"marketplace.{required}" in produced, required
    positions = {TopicPartition(r.topic, r.partition): r.offset for r in records}
    eventually(lambda: caught_up(admin, positions), what="consumers caught up")
    before = snapshot(marketplace)

    replayed = produce_again(bootstrap, records, marketplace.stack.env.get(DOORBELL_VARIABLE))
    assert len(replayed) > 0
    eventually(lambda: caught_up(admin, replayed), timeout=120, what="replay consumed")
    after = snapshot(marketplace)
    admin.close()
    assert after == before


def test_every_record_is_a_binary_mode_cloudevent(marketplace: Marketplace) -> None:
    records = read_everything(marketplace.stack.env["KAFKA_BOOTSTRAP_SERVERS"])
    assert records
    for record in records:
        headers = {name: value.decode() for name, value in record.headers}
        if headers.get("ce_source") == "/test":
            continue  # written by the tests themselves (test_dead_letter's poison)
        assert headers["content-type"] == "application/json"
        assert headers["ce_specversion"] == "1.0"
        assert headers["ce_type"] == f"marketplace.{record.topic}"
        assert headers["ce_subject"] == record.key.decode()
        assert headers["ce_source"].startswith(("/marketplace/functions/", "/marketplace/local/"))
        assert headers["ce_id"] and headers["ce_time"]
        spec = REGISTRY[record.topic]
        assert str(spec.model.model_validate_json(record.value).partition_key) == headers[
            "ce_subject"]
