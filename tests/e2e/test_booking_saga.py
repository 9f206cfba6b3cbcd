"""The booking saga through the HTTP API, the real broker, PostgreSQL and Redis."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

from tests.helpers.marketplace import HOLD_TTL_SECONDS, SWEEP_INTERVAL_SECONDS, Marketplace
from tests.helpers.waiting import eventually


def counts_add_up(course: dict[str, int]) -> bool:
    return course["available"] + course["reserved"] + course["sold"] == course["capacity"]


def test_paid_booking_is_confirmed_and_its_ticket_sold(marketplace: Marketplace) -> None:
    course = marketplace.publish(capacity=3, price_cents=12_500)
    user = marketplace.register()
    booking_id = user.book(course["course_id"])
    held = user.wait_status(booking_id, "AWAITING_PAYMENT")
    assert held["amount_cents"] == 12_500 and held["currency"] == "EUR"
    assert held["ticket_id"] and held["hold_expires_at"]
    user.ok("POST", f"/bookings/{booking_id}/payment", {"payment_method": "pm_card_visa"},
            status=202)
    confirmed = user.wait_status(booking_id, "CONFIRMED")
    assert confirmed["reason"] is None
    after = eventually(lambda: marketplace.course(course["course_id"]),
                       lambda c: c["sold"] == 1, what="ticket sold")
    assert (after["available"], after["reserved"], after["sold"]) == (2, 0, 1)
    # a confirmed booking can be neither paid again nor cancelled
    assert user.call("POST", f"/bookings/{booking_id}/payment",
                     {"payment_method": "pm_card_visa"}).status == 409
    assert user.call("POST", f"/bookings/{booking_id}/cancel").status == 409


def test_declined_card_cancels_and_releases_the_ticket(marketplace: Marketplace) -> None:
    course = marketplace.publish(capacity=2)
    user = marketplace.register()
    booking_id = user.book(course["course_id"])
    user.wait_status(booking_id, "AWAITING_PAYMENT")
    user.ok("POST", f"/bookings/{booking_id}/payment",
            {"payment_method": "pm_card_chargeDeclined"}, status=202)
    cancelled = user.wait_status(booking_id, "CANCELLED")
    assert cancelled["reason"] == "payment_failed"
    eventually(lambda: marketplace.course(course["course_id"])["available"],
               lambda available: available == 2, what="ticket back on sale")


def test_unpaid_hold_expires_and_the_ticket_goes_back(marketplace: Marketplace) -> None:
    course = marketplace.publish(capacity=1)
    user = marketplace.register()
    booking_id = user.book(course["course_id"])
    user.wait_status(booking_id, "AWAITING_PAYMENT")
    expired = user.wait_status(booking_id, "EXPIRED",
                               timeout=HOLD_TTL_SECONDS + SWEEP_INTERVAL_SECONDS + 20)
    assert expired["reason"] == "hold_expired"
    eventually(lambda: marketplace.course(course["course_id"])["available"],
               lambda available: available == 1, what="ticket back on sale")
    # too late to pay
    assert user.call("POST", f"/bookings/{booking_id}/payment",
                     {"payment_method": "pm_card_visa"}).status == 409


def test_an_expired_hold_cancels_its_intent_at_the_provider(marketplace: Marketplace) -> None:
    course = marketplace.publish(capacity=1)
    user = marketplace.register()
    booking_id = user.book(course["course_id"])
    user.wait_status(booking_id, "AWAITING_PAYMENT")
    opened = user.ok("POST", f"/bookings/{booking_id}/payment", {}, status=202)
    assert opened["status"] == "REQUIRES_PAYMENT" and opened["client_secret"]
    user.wait_status(booking_id, "EXPIRED", timeout=HOLD_TTL_SECONDS + SWEEP_INTERVAL_SECONDS + 20)
    assert marketplace.stack.runtime is not None
    provider = marketplace.stack.runtime.provider
    eventually(lambda: provider.retrieve(opened["provider_payment_id"]).status,
               lambda status: status == "canceled", what="the intent cancelled at the provider")


def test_user_cancels_and_the_ticket_goes_back(marketplace: Marketplace) -> None:
    course = marketplace.publish(capacity=1)
    user = marketplace.register()
    booking_id = user.book(course["course_id"])
    user.wait_status(booking_id, "AWAITING_PAYMENT")
    assert user.ok("POST", f"/bookings/{booking_id}/cancel", status=202)["status"] == "CANCELLED"
    assert user.booking(booking_id)["reason"] == "user_cancelled"
    eventually(lambda: marketplace.course(course["course_id"])["available"],
               lambda available: available == 1, what="ticket back on sale")
    assert user.call("POST", f"/bookings/{booking_id}/payment",
                     {"payment_method": "pm_card_visa"}).status == 409


def test_sold_out_booking_is_rejected(marketplace: Marketplace) -> None:
    course = marketplace.publish(capacity=1)
    first, second = marketplace.register(), marketplace.register()
    first.wait_status(first.book(course["course_id"]), "AWAITING_PAYMENT")
    rejected = second.wait_status(second.book(course["course_id"]), "REJECTED")
    assert rejected["reason"] == "sold_out"


def test_unknown_course_is_refused_and_nothing_is_written(marketplace: Marketplace) -> None:
    user = marketplace.register()
    refused = user.call("POST", "/bookings", {"course_id": str(uuid.uuid4())})
    assert refused.status == 422 and refused.body["errors"][0]["field"] == "course_id"
    assert user.ok("GET", "/bookings")["total"] == 0


def test_thirty_concurrent_bookings_for_five_tickets(marketplace: Marketplace) -> None:
    course = marketplace.publish(capacity=5)
    users = [marketplace.register() for _ in range(30)]
    with ThreadPoolExecutor(max_workers=30) as pool:
        booking_ids = list(pool.map(lambda u: u.book(course["course_id"]), users))
    final = [u.wait_status(b, "AWAITING_PAYMENT", "EXPIRED", "REJECTED")
             for u, b in zip(users, booking_ids, strict=True)]
    held = [b for b in final if b["status"] in {"AWAITING_PAYMENT", "EXPIRED"}]
    rejected = [b for b in final if b["status"] == "REJECTED"]
    assert len(held) == 5 and len(rejected) == 25
    assert {b["reason"] for b in rejected} == {"sold_out"}
    assert len({b["ticket_id"] for b in held}) == 5
    assert counts_add_up(marketplace.course(course["course_id"]))


def test_idempotency_key_returns_the_first_answer(marketplace: Marketplace) -> None:
    course = marketplace.publish(capacity=3)
    user = marketplace.register()
    key = {"Idempotency-Key": uuid.uuid4().hex}
    body = {"course_id": course["course_id"]}
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda _: user.ok("POST", "/bookings", body, 202, key), range(4)))
    assert len({a["booking_id"] for a in answers}) == 1
    user.wait_status(answers[0]["booking_id"], "AWAITING_PAYMENT")
    assert marketplace.course(course["course_id"])["reserved"] == 1
    other = {"course_id": str(uuid.uuid4())}
    assert user.call("POST", "/bookings", other, key).status == 422


def test_bad_input_is_a_clear_4xx(marketplace: Marketplace) -> None:
    user = marketplace.register()
    bad = user.call("POST", "/bookings", {"course_id": "not-a-uuid"})
    assert bad.status == 422
    assert bad.headers["content-type"] == "application/problem+json"
    assert bad.body["errors"][0]["field"] == "course_id"
    assert user.call("POST", "/bookings", {"course_id": str(uuid.uuid4()), "x": 1}
                     ).status == 422
    assert user.call("GET", "/bookings/not-a-uuid").status == 404
    assert user.call("POST", f"/bookings/{uuid.uuid4()}/payment",
                     {"payment_method": 42}).status == 422
    anonymous = marketplace.register()
    anonymous.token = "garbage"
    assert anonymous.call("POST", "/bookings", {"course_id": str(uuid.uuid4())}
                          ).status == 401
    assert user.call("POST", "/courses", {"title": "x"}).status == 403


def test_nobody_reads_another_users_booking(marketplace: Marketplace) -> None:
    course = marketplace.publish(capacity=1)
    owner, stranger = marketplace.register(), marketplace.register()
    booking_id = owner.book(course["course_id"])
    assert stranger.call("GET", f"/bookings/{booking_id}").status == 404
    assert stranger.call("POST", f"/bookings/{booking_id}/cancel").status == 404
    assert marketplace.admin.booking(booking_id)["user_id"] == owner.user_id


def test_health_reports_every_component(marketplace: Marketplace) -> None:
    health = marketplace.admin.ok("GET", "/healthz")
    assert health["status"] == "ok"
    assert health["components"] == {
        "kafka": "up", "postgres": "up", "redis": "up", "search": "up", "aws": "up"}
