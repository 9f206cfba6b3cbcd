"""GET /bookings/{id}?wait_for=STATUS&timeout=S: a long-poll instead of a polling loop."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.helpers.client import Client
from tests.helpers.marketplace import Marketplace


def wait(user: Client, booking_id: str, status: str, timeout: int = 30
         ) -> tuple[dict[str, Any], float]:
    """The answer of one long-poll and how long it took."""
    started = time.monotonic()
    answer = user.call("GET", f"/bookings/{booking_id}?wait_for={status}&timeout={timeout}")
    assert answer.status == 200, answer.body
    return answer.body, time.monotonic() - started


def held_booking(marketplace: Marketplace) -> tuple[Client, str]:
    course = marketplace.publish(capacity=1)
    user = marketplace.register()
    booking_id = user.book(course["course_id"])
    booking, _ = wait(user, booking_id, "AWAITING_PAYMENT")
    assert booking["status"] == "AWAITING_PAYMENT"
    return user, booking_id


def test_answers_when_the_status_changes_not_at_the_timeout(marketplace: Marketplace) -> None:
    user, booking_id = held_booking(marketplace)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(wait, user, booking_id, "CONFIRMED", 30)
        user.ok("POST", f"/bookings/{booking_id}/payment", {"payment_method": "pm_card_visa"},
                status=202)
        booking, took = waiting.result()
    assert booking["status"] == "CONFIRMED"
    assert took < 15, "answered at (or near) the timeout, not on the change"


def test_answers_at_the_timeout_with_the_current_state(marketplace: Marketplace) -> None:
    user, booking_id = held_booking(marketplace)
    booking, took = wait(user, booking_id, "CONFIRMED", timeout=1)
    assert booking["status"] == "AWAITING_PAYMENT"
    assert took >= 1.0


def test_a_final_state_answers_at_once(marketplace: Marketplace) -> None:
    user, booking_id = held_booking(marketplace)
    user.ok("POST", f"/bookings/{booking_id}/cancel", status=202)
    booking, took = wait(user, booking_id, "CONFIRMED", timeout=30)
    assert (booking["status"], booking["reason"]) == ("CANCELLED", "user_cancelled")
    assert took < 15


@pytest.mark.parametrize(("query", "field"), [
    ("wait_for=PAID", "wait_for"),
    ("wait_for=confirmed", "wait_for"),
    ("wait_for=CONFIRMED&timeout=0", "timeout"),
    ("wait_for=CONFIRMED&timeout=31", "timeout"),
    ("wait_for=CONFIRMED&timeout=2.5", "timeout"),
    ("wait_for=CONFIRMED&timeout=soon", "timeout"),
    ("timeout=5", "wait_for"),
    ("wait_for=CONFIRMED&wait=5", "wait"),
])
def test_a_bad_status_or_timeout_names_the_field(marketplace: Marketplace, query: str,
                                                  field: str) -> None:
    user = marketplace.register()
    booking_id = user.book(str(marketplace.publish(capacity=1)["course_id"]))
    answer = user.call("GET", f"/bookings/{booking_id}?{query}")
    assert answer.status == 422, answer.body
    assert answer.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in answer.body["errors"]] == [field]


def test_someone_elses_booking_is_a_404_without_waiting(marketplace: Marketplace) -> None:
    owner, booking_id = held_booking(marketplace)
    stranger = marketplace.register()
    started = time.monotonic()
    answer = stranger.call("GET", f"/bookings/{booking_id}?wait_for=CONFIRMED&timeout=30")
    assert answer.status == 404
    assert time.monotonic() - started < 15
    # an admin may wait on anyone's booking
    booking, _ = wait(marketplace.admin, booking_id, "AWAITING_PAYMENT")
    assert booking["user_id"] == owner.user_id
