"""Limits for hostile clients, each function against real PostgreSQL and Redis.

Requests come from chosen socket peers (`REMOTE_ADDR`), as the test client
lets a test say, so each case is a client at an address of its own.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from typing import Any

import flask
import pytest

from shared.adapters import passwords
from shared.edge import limits, tokens
from shared.runtime.bootstrap import Runtime
from shared.runtime.config import Settings
from tests.helpers.events import USER, app
from tests.helpers.rows import scalar, seed_course


def client(target: str, address: str) -> Any:
    test_client = app(target).test_client()
    test_client.environ_base["REMOTE_ADDR"] = address
    return test_client


def register(address: str, n: int, headers: dict[str, str] | None = None) -> list[int]:
    accounts = client("accounts", address)
    return [accounts.post("/auth/register", headers=headers or {}, json={
        "email": f"u{uuid.uuid4().hex[:12]}@example.com", "password": "password one",
        "full_name": "U"}).status_code for _ in range(n)]


def test_a_registration_flood_meets_a_429_before_anything_is_written(rt: Runtime) -> None:
    answers = register("203.0.113.1", 22)
    assert answers == [201] * 20 + [429] * 2
    assert scalar(rt, "SELECT count(*) FROM accounts") == 20
    limited = client("accounts", "203.0.113.1").post("/auth/register", json={
        "email": "late@example.com", "password": "password one", "full_name": "L"})
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 3000
    assert register("203.0.113.2", 1) == [201]  # another address is not slowed


def test_spraying_many_emails_from_one_address_is_slowed(rt: Runtime) -> None:
    sprayer = client("accounts", "198.51.100.20")
    answers = [sprayer.post("/auth/login", json={
        "email": f"victim{i}@example.com", "password": "Winter2026!"}).status_code
        for i in range(40)]
    assert answers == [401] * 20 + [429] * 20


def test_a_forwarded_for_header_is_not_believed_from_an_untrusted_peer(rt: Runtime) -> None:
    answers = [register("203.0.113.3", 1, {"X-Forwarded-For": f"192.0.2.{i}"})[0]
               for i in range(21)]
    assert answers == [201] * 20 + [429]  # all counted against the peer


def test_the_client_address_behind_a_trusted_proxy() -> None:
    settings = Settings(trusted_proxies=("10.0.0.0/8",))
    cases = {
        ("10.1.2.3", "198.51.100.1"): "198.51.100.1",
        ("10.1.2.3", "203.0.113.5, 198.51.100.1, 10.9.9.9"): "198.51.100.1",  # right-most
        ("10.1.2.3", ""): "10.1.2.3",
        ("192.0.2.8", "198.51.100.1"): "192.0.2.8",  # not our proxy: the peer
    }
    for (peer, forwarded), expected in cases.items():
        headers = {"X-Forwarded-For": forwarded} if forwarded else {}
        with flask.Flask("t").test_request_context(environ_base={"REMOTE_ADDR": peer},
                                                   headers=headers):
            assert limits.client_address(flask.request, settings) == expected, (peer, forwarded)


def test_rate_limits_off_leaves_the_failed_login_throttle_on(rt: Runtime) -> None:
    rt.settings = dataclasses.replace(rt.settings, rate_limits=False)
    assert register("203.0.113.4", 25) == [201] * 25
    guesser = client("accounts", "203.0.113.4")
    answers = [guesser.post("/auth/login", json={
        "email": "someone@example.com", "password": f"guess {i}"}).status_code
        for i in range(7)]
    assert answers == [401] * 5 + [429] * 2


def test_a_busy_host_answers_503_rather_than_hash_past_its_memory(
        rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "_turns", threading.BoundedSemaphore(1))
    monkeypatch.setattr(passwords, "WAIT_SECONDS", 0.05)
    passwords._turns.acquire()  # another request is hashing
    try:
        answer = client("accounts", "203.0.113.6").post("/auth/register", json={
            "email": "busy@example.com", "password": "password one", "full_name": "B"})
    finally:
        passwords._turns.release()
    assert answer.status_code == 503 and answer.headers["Retry-After"]
    assert scalar(rt, "SELECT count(*) FROM accounts") == 0


@pytest.mark.parametrize("cap", [1, 2])
def test_concurrent_bookings_by_one_user_meet_the_cap_in_postgresql(rt: Runtime, cap: int
                                                                    ) -> None:
    rt.settings = dataclasses.replace(rt.settings, bookings_per_user_per_course=cap,
                                      rate_limits=False)
    course = seed_course(rt, capacity=10)
    token = tokens.issue_access(USER, "user", uuid.uuid4())
    answers: list[int] = []
    barrier = threading.Barrier(12)

    def book() -> None:
        bookings = app("bookings").test_client()
        barrier.wait()
        answers.append(bookings.post("/bookings", json={"course_id": str(course)},
                                     headers={"Authorization": f"Bearer {token}"}).status_code)

    threads = [threading.Thread(target=book) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [202] * cap + [409] * (12 - cap)
    assert scalar(rt, "SELECT count(*) FROM bookings") == cap


def test_a_course_not_on_sale_is_refused_and_nothing_is_written(rt: Runtime) -> None:
    inactive = seed_course(rt, status="INACTIVE")
    token = tokens.issue_access(USER, "user", uuid.uuid4())
    bookings = client("bookings", "203.0.113.7")
    headers = {"Authorization": f"Bearer {token}"}
    assert bookings.post("/bookings", json={"course_id": str(inactive)},
                         headers=headers).status_code == 409
    unknown = bookings.post("/bookings", json={"course_id": str(uuid.uuid4())}, headers=headers)
    assert unknown.status_code == 422 and unknown.get_json()["errors"][0]["field"] == "course_id"
    assert scalar(rt, "SELECT count(*) FROM bookings") == 0
    assert scalar(rt, "SELECT count(*) FROM outbox") == 0


def test_taking_a_count_back_never_leaves_a_counter_without_an_expiry(rt: Runtime) -> None:
    limits.forgive_one(rt.redis, "FAILED_LOGINS_PER_ADDRESS", "192.0.2.99")  # no window open
    assert rt.redis.keys(limits.PREFIX + "*") == []
    limits.count(rt.redis, "FAILED_LOGINS_PER_ADDRESS", "192.0.2.99")
    limits.forgive_one(rt.redis, "FAILED_LOGINS_PER_ADDRESS", "192.0.2.99")
    [key] = rt.redis.keys(limits.PREFIX + "*")
    assert int(rt.redis.get(key)) == 0 and rt.redis.ttl(key) > 0
