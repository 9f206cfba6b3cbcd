"""Hostile clients against the whole stack: a hoarding bot, floods, bad bodies, odd passwords.

Each test that depends on a client address names its own through
X-Forwarded-For (the e2e stack trusts 127.0.0.1 as its proxy, as a cluster
trusts its Ingress), so one test's counters never touch another's.
"""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlparse

from local.apiclient import Answer
from tests.helpers.client import Client
from tests.helpers.marketplace import Marketplace
from tests.helpers.waiting import eventually


def _from(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


def test_a_bot_holds_at_most_one_ticket_of_a_sale(marketplace: Marketplace) -> None:
    course = marketplace.publish(capacity=20)
    bot = marketplace.register()
    answers = [bot.call("POST", "/bookings", {"course_id": course["course_id"]})
               for _ in range(25)]
    assert [a.status for a in answers] == [202] + [409] * 24
    first = answers[0].body["booking_id"]
    for refused in answers[1:]:  # each refusal names the booking in progress
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.body["booking_id"] == first
    bot.wait_status(first, "AWAITING_PAYMENT")
    seen = marketplace.course(course["course_id"])
    assert (seen["reserved"], seen["available"]) == (1, 19)
    assert bot.ok("GET", "/bookings")["total"] == 1
    # every real buyer still gets a ticket
    buyer = marketplace.register()
    buyer.wait_status(buyer.book(course["course_id"]), "AWAITING_PAYMENT")
    # once the bot's booking is over, it may book again
    bot.ok("POST", f"/bookings/{first}/cancel", status=202)
    eventually(lambda: bot.call("POST", "/bookings", {"course_id": course["course_id"]}),
               lambda a: a.status == 202, what="a new booking after the cancel")


def test_a_burst_of_concurrent_bookings_by_one_user(marketplace: Marketplace) -> None:
    course = marketplace.publish(capacity=5)
    user = marketplace.register()
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(
            lambda _: user.call("POST", "/bookings", {"course_id": course["course_id"]}),
            range(45)))
    statuses = sorted(a.status for a in answers)
    assert statuses.count(202) == 1, statuses
    assert statuses.count(429) >= 15, statuses  # 30 a minute per user
    assert set(statuses) == {202, 409, 429}
    for limited in (a for a in answers if a.status == 429):
        assert int(limited.headers["retry-after"]) >= 1
    assert user.ok("GET", "/bookings")["total"] == 1


def _login(marketplace: Marketplace, email: str, password: str, address: str) -> Answer:
    return marketplace.login(email, password, headers=_from(address))


def test_failed_logins_lock_out_the_guesser_not_the_owner(marketplace: Marketplace) -> None:
    email = f"owner-{uuid.uuid4().hex[:8]}@example.com"
    marketplace.register(email, "the owner's own password", "Owner")
    stranger, owner = "198.51.100.7", "203.0.113.9"
    assert [_login(marketplace, email, f"guess {i}", stranger).status
            for i in range(5)] == [401] * 5
    locked = _login(marketplace, email, "the owner's own password", stranger)
    assert locked.status == 429 and int(locked.headers["retry-after"]) > 0
    assert _login(marketplace, email, "the owner's own password", owner).status == 200


def test_a_password_is_compared_exactly_as_registered(marketplace: Marketplace) -> None:
    email = f"spaced-{uuid.uuid4().hex[:8]}@example.com"
    spaced = "  spaces at both ends  "
    marketplace.register(email, spaced, "Spaced")
    address = "192.0.2.44"
    assert _login(marketplace, email, spaced, address).status == 200
    assert _login(marketplace, email, spaced.strip(), address).status == 401


def _raw(marketplace: Marketplace, path: str, body: bytes | Iterator[bytes], token: str,
         content_type: str = "application/json", method: str = "POST") -> tuple[int, Any]:
    """A request sent as a client may: with a Content-Length for bytes, chunked for a stream."""
    url = urlparse(marketplace.url)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
    try:
        connection.request(method, path, body=body, headers=headers,
                           encode_chunked=not isinstance(body, bytes))
        answer = connection.getresponse()
        payload = answer.read()
        assert answer.getheader("Content-Type") == "application/problem+json", payload
        return answer.status, json.loads(payload)
    finally:
        connection.close()


def _chunks(data: bytes, size: int = 8192) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


def test_oversized_and_nested_bodies_are_refused_with_or_without_a_length(
        marketplace: Marketplace) -> None:
    user: Client = marketplace.register()
    nested = b"[" * 50_000
    large = json.dumps({"course_id": "x" * 70_000}).encode()
    for body in (nested, _chunks(nested)):
        status, problem = _raw(marketplace, "/bookings", body, user.token)
        assert status == 400 and "nested" in problem["detail"]
    for body in (large, _chunks(large)):
        status, problem = _raw(marketplace, "/bookings", body, user.token)
        assert status == 413, problem
    avatar = b"\x89PNG\r\n\x1a\n" + b"\0" * (3 * 1024 * 1024)
    for body in (avatar, _chunks(avatar, 65536)):
        status, _ = _raw(marketplace, "/users/me/avatar", body, user.token, "image/png", "PUT")
        assert status == 413
    for garbage in (b"{", b"\xff\xfe", b'{"course_id": ' + b"1" * 5000 + b"}", b"null"):
        status, _ = _raw(marketplace, "/bookings", garbage, user.token)
        assert 400 <= status < 500
    assert user.ok("GET", "/bookings")["total"] == 0  # nothing of it was written
