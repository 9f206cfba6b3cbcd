"""The one API client: keep-alive, retries on 5xx and connection errors, a log; its typed calls.

The typed calls are played against a small fake of the API (the real one is
driven by the demo and the end-to-end tests): what each sends, what it makes
of the answer, the long-poll, one sign-in again after a 401.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from local.apiclient import (
    ApiClient,
    ApiError,
    FailedAttempt,
    NotInTime,
    RequestFailed,
    RetryPolicy,
)
from tests.helpers.ports import free_port

FAST = RetryPolicy(attempts=4, first_backoff=0.01, max_backoff=0.02)


class Flaky(BaseHTTPRequestHandler):
    """Answers 503 to the first `failures` requests, then 200 with the connection's count."""

    protocol_version = "HTTP/1.1"
    failures = 2
    seen = 0
    connections: set[int] = set()

    def do_GET(self) -> None:
        cls = type(self)
        cls.seen += 1
        cls.connections.add(id(self.connection))
        status = 503 if cls.seen <= cls.failures else 200
        body = json.dumps({"detail": "busy"} if status == 503 else {"n": cls.seen}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Flaky.seen, Flaky.connections = 0, set()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_5xx_is_retried_and_each_failed_attempt_kept(server: str) -> None:
    failures: list[FailedAttempt] = []
    answer = ApiClient(server, FAST).request("GET", "/x", failures=failures)
    assert (answer.status, answer.body, answer.attempts) == (200, {"n": 3}, 3)
    assert [(f.status, f.error, f.recovered) for f in failures] == [(503, "busy", True)] * 2
    assert len(Flaky.connections) == 1  # one kept-alive connection for all three


def test_connection_errors_exhaust_the_attempts() -> None:
    failures: list[FailedAttempt] = []
    with pytest.raises(RequestFailed):
        ApiClient(f"http://127.0.0.1:{free_port()}", FAST).request("POST", "/bookings", {},
                                                                   failures=failures)
    assert len(failures) == FAST.attempts
    assert all(f.status is None and not f.recovered and f.method == "POST" for f in failures)


# --- the typed calls, against a fake API -----------------------------------------------------


def token_for(user_id: str, n: int) -> str:
    """A token shaped like the API's (header.claims.signature), naming `user_id`."""
    claims = base64.urlsafe_b64encode(json.dumps({"sub": user_id, "n": n}).encode()).decode()
    return f"e30.{claims.rstrip('=')}.sig"


class FakeApi(BaseHTTPRequestHandler):
    """Just enough of the API: accounts, a course, bookings that move when polled."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str, dict[str, str], Any]] = []  # method, path, headers, body
    users: dict[str, str] = {}  # email -> user_id
    keys: dict[str, str] = {}  # Idempotency-Key -> booking id
    moves: dict[str, list[str]] = {}  # booking id -> statuses still to come, one per read
    logins = 0
    expired: set[str] = set()  # tokens answered 401
    profile_late = 0  # role changes answered 404 + Retry-After before the profile exists

    def log_message(self, *args: object) -> None:
        pass

    def answer(self, status: int, body: Any = None, headers: dict[str, str] | None = None
               ) -> None:
        raw = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def handle_any(self) -> None:
        cls = type(self)
        length = int(self.headers.get("Content-Length") or 0)
        body: Any = json.loads(self.rfile.read(length)) if length else None
        url = urlsplit(self.path)
        cls.seen.append((self.command, self.path, dict(self.headers), body))
        token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        if token in cls.expired:
            return self.answer(401, {"title": "Unauthorized"})
        parts = url.path.strip("/").split("/")
        if url.path == "/auth/register":
            user_id = cls.users.setdefault(body["email"], str(uuid.uuid4()))
            return self.answer(201, {"user_id": user_id, "access_token": token_for(user_id, 0),
                                     "refresh_token": "r0"})
        if url.path == "/auth/login":
            cls.logins += 1
            user_id = cls.users[body["email"]]
            return self.answer(200, {"access_token": token_for(user_id, cls.logins),
                                     "refresh_token": f"r{cls.logins}", "expires_in": 900})
        if url.path == "/courses":
            return self.answer(201, {"course_id": "c1", **body})
        if url.path == "/bookings":
            key = self.headers.get("Idempotency-Key") or uuid.uuid4().hex
            booking_id = cls.keys.setdefault(key, str(uuid.uuid4()))
            cls.moves.setdefault(booking_id, ["PENDING", "AWAITING_PAYMENT"])
            return self.answer(202, {"booking_id": booking_id, "status": "PENDING"})
        if parts[0] == "bookings" and len(parts) == 2:
            moves = cls.moves[parts[1]]
            status = moves.pop(0) if len(moves) > 1 else moves[0]
            return self.answer(200, {"booking_id": parts[1], "status": status, "reason": None})
        if parts[0] == "bookings" and parts[2] == "payment":
            cls.moves[parts[1]] = ["CONFIRMED"]
            return self.answer(202, {"booking_id": parts[1], "status": "PROCESSING"})
        if parts[0] == "bookings" and parts[2] == "cancel":
            return self.answer(409, {"title": "Conflict", "detail": "the booking is CONFIRMED"})
        if parts[0] == "users" and parts[2] == "role":
            if cls.profile_late:
                cls.profile_late -= 1
                return self.answer(404, {"title": "Not Found"}, {"Retry-After": "0"})
            return self.answer(200, {"user_id": parts[1], "role": body["role"]})
        return self.answer(404, {"title": "Not Found"})

    do_GET = do_POST = do_PUT = handle_any


@pytest.fixture
def api() -> Iterator[ApiClient]:
    FakeApi.seen, FakeApi.users, FakeApi.keys, FakeApi.moves = [], {}, {}, {}
    FakeApi.logins, FakeApi.expired, FakeApi.profile_late = 0, set(), 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield ApiClient(f"http://127.0.0.1:{httpd.server_address[1]}", FAST)
    httpd.shutdown()
    httpd.server_close()


def test_register_and_login_give_a_signed_in_user(api: ApiClient) -> None:
    ada = api.register("ada@example.com", "secret", "Ada", phone="+15555550100")
    assert FakeApi.seen[-1][3] == {"email": "ada@example.com", "password": "secret",
                                   "full_name": "Ada", "phone": "+15555550100"}
    again = api.login("ada@example.com", "secret")
    assert again.user_id == ada.user_id and again.token != ada.token  # read from the token
    assert again.credentials.refresh_token == "r1"


def test_a_role_is_granted_by_an_admin_once_the_profile_exists(api: ApiClient) -> None:
    admin = api.register("admin@example.com", "secret", "Admin")
    FakeApi.profile_late = 2  # the profile's reaction has not run yet: 404, Retry-After
    author = api.register("alan@example.com", "secret", "Alan", role="author", admin=admin)
    puts = [(m, p, b) for m, p, _, b in FakeApi.seen if m == "PUT"]
    assert puts == [("PUT", f"/users/{author.user_id}/role", {"role": "author"})] * 3
    assert FakeApi.seen[-1][1] == "/auth/login"  # signed in again: a token with the role
    with pytest.raises(ValueError, match="admin"):
        api.register("edsger@example.com", "secret", "Edsger", role="author")


def test_the_saga_as_a_client_plays_it(api: ApiClient) -> None:
    ada = api.register("ada@example.com", "secret", "Ada")
    course = ada.publish_course(3, title="Sagas", price_cents=4900)
    assert (course["course_id"], course["capacity"], course["price_cents"]) == ("c1", 3, 4900)
    booking_id = ada.book("c1", idempotency_key="k1")
    assert ada.book("c1", idempotency_key="k1") == booking_id  # the same key, the same booking
    assert FakeApi.seen[-1][2]["Idempotency-Key"] == "k1"
    assert FakeApi.seen[-1][2]["Authorization"] == f"Bearer {ada.token}"

    held = ada.wait_for_status(booking_id, "AWAITING_PAYMENT", timeout=10)
    assert held["status"] == "AWAITING_PAYMENT"
    polls = [urlsplit(p) for m, p, _, _ in FakeApi.seen if p.startswith(f"/bookings/{booking_id}?")]
    assert len(polls) == 2  # a long-poll each time, never a plain read in a loop
    assert parse_qs(polls[0].query) == {"wait_for": ["AWAITING_PAYMENT"], "timeout": ["10"]}

    assert ada.pay(booking_id)["status"] == "PROCESSING"
    assert FakeApi.seen[-1][3] == {"payment_method": "pm_card_visa"}
    # CONFIRMED is final: waiting for another status ends there, it cannot come any more
    assert ada.wait_for_status(booking_id, "CANCELLED", timeout=10)["status"] == "CONFIRMED"
    assert ada.booking(booking_id)["status"] == "CONFIRMED"
    assert FakeApi.seen[-1][1] == f"/bookings/{booking_id}"  # no wait asked: none sent

    with pytest.raises(ApiError) as refused:
        ada.cancel(booking_id)
    assert refused.value.status == 409 and "CONFIRMED" in str(refused.value)


def test_waiting_past_the_deadline_says_what_was_last_seen(api: ApiClient) -> None:
    ada = api.register("ada@example.com", "secret", "Ada")
    booking_id = ada.book("c1")
    FakeApi.moves[booking_id] = ["PENDING"]  # never held
    with pytest.raises(NotInTime, match=r"not AWAITING_PAYMENT within 0\.1 s; last seen PENDING"
                       ) as late:
        ada.wait_for_status(booking_id, "AWAITING_PAYMENT", timeout=0.1)
    assert late.value.last is not None and late.value.last["status"] == "PENDING"


def test_an_expired_token_signs_in_again_once_for_every_session(api: ApiClient) -> None:
    ada = api.register("ada@example.com", "secret", "Ada")
    stale = ada.token
    FakeApi.expired.add(stale)
    other_session = ada.via(api, failures=[])  # the same user, its own failure log
    other_session.book("c1")
    assert ada.token != stale and other_session.token == ada.token  # one sign-in, shared
    assert ada.request("GET", "/nothing").status == 404
    assert FakeApi.logins == 1
    only_a_token = api.signed_in(stale)
    assert only_a_token.request("GET", "/nothing").status == 401  # no password: no sign-in
    assert only_a_token.user_id == ada.user_id
    assert ada.request("GET", "/nothing").headers["content-type"] == "application/json"
