"""The one client of the marketplace's HTTP API: the demo, the load, the chaos run and the tests.

It must cost the machine little next to what the load generator measures, so
it speaks HTTP/1.1 with `http.client` over one kept-alive connection per
thread (no session objects, no connection per request). Under fault
injection a request may meet a dead host or a 5xx: it is retried with a short
backoff, and every failed attempt is recorded with whether a later attempt of
the same request succeeded, so a run can show what each fault cost.

`ApiClient` is the transport and what anyone may call; `register` and
`login` give a `SignedIn` user, whose typed methods are the saga as a client
plays it (publish a course, book, pay, cancel, wait for a status). A call
answered otherwise than the API promises raises `ApiError` with the answer.

    client = ApiClient("http://127.0.0.1:8080")
    ada = client.register("ada@example.com", "correct horse battery", "Ada")
    booking_id = ada.book(course_id)
    ada.wait_for_status(booking_id, "AWAITING_PAYMENT")
    ada.pay(booking_id)
    assert ada.wait_for_status(booking_id, "CONFIRMED")["status"] == "CONFIRMED"
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlparse

# gunicorn closes a kept-alive connection idle for 2 s: reconnect before that, not after.
MAX_IDLE_SECONDS = 1.5
# A booking in one of these moves no more: waiting for another status is waiting in vain.
FINAL = frozenset({"CONFIRMED", "REJECTED", "CANCELLED", "EXPIRED"})
LONG_POLL_MAX_SECONDS = 30  # the API's limit for `?timeout=` with `?wait_for=`


@dataclass(frozen=True)
class RetryPolicy:
    """Retry connection errors and 5xx: `attempts` in all, backoff doubling up to a cap."""

    attempts: int = 10
    first_backoff: float = 0.05
    max_backoff: float = 2.0

    def backoff(self, attempt: int) -> float:
        return float(min(self.max_backoff, self.first_backoff * 2 ** (attempt - 1)))


@dataclass
class FailedAttempt:
    at: float  # seconds since the epoch
    method: str
    path: str
    status: int | None  # the 5xx, or None for a connection error
    error: str
    recovered: bool = False  # a later attempt of the same request succeeded

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Answer:
    status: int
    body: Any  # parsed JSON, else the text, else None
    attempts: int = 1
    headers: dict[str, str] = field(default_factory=dict)  # names in lower case


class RequestFailed(RuntimeError):
    """Every attempt failed; the attempts are in the caller's log."""


class ApiError(RuntimeError):
    """The API answered, but not what the call expects: the answer is kept."""

    def __init__(self, method: str, path: str, answer: Answer) -> None:
        super().__init__(f"{method} {path} answered {answer.status}: {_detail(answer.body)}")
        self.status = answer.status
        self.body = answer.body


class NotInTime(RuntimeError):
    """A booking did not reach the statuses waited for before the deadline."""

    def __init__(self, booking_id: str, statuses: tuple[str, ...], last: dict[str, Any] | None,
                 timeout: float) -> None:
        seen = last["status"] if last else "nothing"
        super().__init__(f"booking {booking_id} not {' or '.join(statuses)} within"
                         f" {timeout:g} s; last seen {seen}")
        self.last = last


@dataclass
class _Connection:
    conn: http.client.HTTPConnection
    last_used: float = field(default_factory=time.monotonic)


class ApiClient:
    """Requests to one base URL; thread-safe (one connection per thread)."""

    def __init__(self, base_url: str, retry: RetryPolicy | None = None,
                 timeout: float = 15.0, clock: Callable[[], float] = time.time) -> None:
        parsed = urlparse(base_url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"an http:// base URL is needed, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.host = parsed.hostname
        self.port = parsed.port or 80
        self.prefix = parsed.path.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.clock = clock
        self.give_up = threading.Event()  # set: no more retries (the run is being abandoned)
        self._local = threading.local()

    # --- the transport --------------------------------------------------------------------

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        current: _Connection | None = getattr(self._local, "current", None)
        if current is not None and time.monotonic() - current.last_used > MAX_IDLE_SECONDS:
            current.conn.close()
            current = None
        if current is None:
            current = _Connection(http.client.HTTPConnection(self.host, self.port, timeout=timeout))
            self._local.current = current
        current.conn.timeout = timeout
        if current.conn.sock is not None:
            current.conn.sock.settimeout(timeout)
        return current.conn

    def _drop(self) -> None:
        current: _Connection | None = getattr(self._local, "current", None)
        if current is not None:
            current.conn.close()
            self._local.current = None

    def _once(self, method: str, path: str, payload: bytes | None, headers: dict[str, str],
              timeout: float) -> Answer:
        conn = self._connection(timeout)
        try:
            conn.request(method, self.prefix + path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except BaseException:
            self._drop()
            raise
        if response.will_close:
            self._drop()
        else:
            self._local.current.last_used = time.monotonic()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
        return Answer(response.status, body,
                      headers={name.lower(): value for name, value in response.getheaders()})

    def request(self, method: str, path: str, body: Any = None, *, token: str = "",
                headers: dict[str, str] | None = None, timeout: float | None = None,
                failures: list[FailedAttempt] | None = None) -> Answer:
        """Send until an answer below 500 arrives or the attempts run out (then raise).

        `body` is sent as JSON; failed attempts go to `failures` (if given),
        marked recovered on success.
        """
        all_headers = {"Accept": "application/json"}
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        mine: list[FailedAttempt] = []
        for attempt in range(1, self.retry.attempts + 1):
            try:
                answer = self._once(method, path, payload, all_headers, timeout or self.timeout)
            except (OSError, http.client.HTTPException) as exc:
                mine.append(FailedAttempt(self.clock(), method, path, None,
                                          f"{type(exc).__name__}: {exc}"))
            else:
                if answer.status < 500:
                    for failed in mine:
                        failed.recovered = True
                    answer.attempts = attempt
                    if failures is not None:
                        failures.extend(mine)
                    return answer
                mine.append(FailedAttempt(self.clock(), method, path, answer.status,
                                          _detail(answer.body)))
            if attempt < self.retry.attempts and not self.give_up.is_set():
                self.give_up.wait(self.retry.backoff(attempt))  # a backoff, cut short on give-up
            else:
                break
        if failures is not None:
            failures.extend(mine)
        raise RequestFailed(f"{method} {path}: {len(mine)} attempts failed, last: "
                            f"{mine[-1].status or ''} {mine[-1].error}")

    def expect(self, method: str, path: str, body: Any = None, *, status: int = 200,
               token: str = "", headers: dict[str, str] | None = None) -> Any:
        """The body of an answer with `status`; any other answer raises `ApiError`."""
        answer = self.request(method, path, body, token=token, headers=headers)
        if answer.status != status:
            raise ApiError(method, path, answer)
        return answer.body

    # --- anyone ---------------------------------------------------------------------------

    def register(self, email: str, password: str, name: str, *, phone: str | None = None,
                 role: str | None = None, admin: SignedIn | None = None) -> SignedIn:
        """A new account, signed in; with `role` (an admin grants it) signed in again as that."""
        body = {"email": email, "password": password, "full_name": name,
                **({"phone": phone} if phone else {})}
        made = self.expect("POST", "/auth/register", body, status=201)
        user = SignedIn(self, Credentials(email, password, str(made["user_id"]),
                                          str(made["access_token"]), str(made["refresh_token"])))
        if role is None or role == "user":
            return user
        if admin is None:
            raise ValueError(f"only an admin can make {email} a {role}: pass admin=")
        admin.set_role(user.user_id, role)
        return self.login(email, password)  # a token that carries the new role

    def login(self, email: str, password: str) -> SignedIn:
        tokens = self.expect("POST", "/auth/login", {"email": email, "password": password})
        token = str(tokens["access_token"])
        return SignedIn(self, Credentials(email, password, _subject(token), token,
                                          str(tokens["refresh_token"])))

    def signed_in(self, token: str, user_id: str = "", email: str = "") -> SignedIn:
        """A user from a token got elsewhere (it cannot sign in again by itself)."""
        return SignedIn(self, Credentials(email, "", user_id or _subject(token), token))

    def course(self, course_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.expect("GET", f"/courses/{course_id}")
        return found


@dataclass
class Credentials:
    """Who a user is and their current token: shared by every session of that user."""

    email: str
    password: str  # "" when only a token is known
    user_id: str
    token: str
    refresh_token: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)


class SignedIn:
    """A user's calls: their token on every request, and one new sign-in when it expired."""

    def __init__(self, client: ApiClient, credentials: Credentials,
                 failures: list[FailedAttempt] | None = None) -> None:
        self.client = client
        self.credentials = credentials
        self.failures = failures  # where this user's failed attempts are kept, if anywhere

    @property
    def token(self) -> str:
        return self.credentials.token

    @property
    def user_id(self) -> str:
        return self.credentials.user_id

    @property
    def email(self) -> str:
        return self.credentials.email

    def via(self, client: ApiClient, failures: list[FailedAttempt] | None = None) -> SignedIn:
        """The same user (and token) through another client, keeping failures in `failures`."""
        return SignedIn(client, self.credentials, failures)

    def request(self, method: str, path: str, body: Any = None, *,
                headers: dict[str, str] | None = None, timeout: float | None = None) -> Answer:
        """One request as this user; a 401 (token expired) signs in again, once."""
        token = self.token
        answer = self.client.request(method, path, body, token=token, headers=headers,
                                     timeout=timeout, failures=self.failures)
        if answer.status == 401 and self.credentials.password:
            self._sign_in_again(token)
            answer = self.client.request(method, path, body, token=self.token, headers=headers,
                                         timeout=timeout, failures=self.failures)
        return answer

    def expect(self, method: str, path: str, body: Any = None, *, status: int = 200,
               headers: dict[str, str] | None = None, timeout: float | None = None) -> Any:
        """The body of an answer with `status`; any other answer raises `ApiError`."""
        answer = self.request(method, path, body, headers=headers, timeout=timeout)
        if answer.status != status:
            raise ApiError(method, path, answer)
        return answer.body

    def _sign_in_again(self, stale: str) -> None:
        credentials = self.credentials
        with credentials.lock:
            if credentials.token != stale:
                return  # another session of this user already did
            tokens = self.client.expect("POST", "/auth/login", {
                "email": credentials.email, "password": credentials.password})
            credentials.token = str(tokens["access_token"])
            credentials.refresh_token = str(tokens["refresh_token"])

    # --- the saga, as a client plays it ----------------------------------------------------

    def publish_course(self, capacity: int, *, title: str = "Flash sale",
                       price_cents: int = 1000, currency: str = "EUR", description: str = "",
                       starts_at: str | None = None) -> dict[str, Any]:
        """A published course (as its author or an admin); at most 10,000 tickets."""
        starts = starts_at or (datetime.now(UTC) + timedelta(days=30)).isoformat()
        course: dict[str, Any] = self.expect("POST", "/courses", {
            "title": title, "description": description, "price_cents": price_cents,
            "currency": currency, "starts_at": starts, "capacity": capacity}, status=201)
        return course

    def book(self, course_id: str, idempotency_key: str | None = None) -> str:
        """A booking requested (202): its id. The same key again answers the same booking."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        accepted = self.expect("POST", "/bookings", {"course_id": course_id}, status=202,
                               headers=headers)
        return str(accepted["booking_id"])

    def pay(self, booking_id: str, payment_method: str = "pm_card_visa") -> dict[str, Any]:
        """The payment accepted (202); the booking is confirmed when the provider says so."""
        accepted: dict[str, Any] = self.expect("POST", f"/bookings/{booking_id}/payment",
                                               {"payment_method": payment_method}, status=202)
        return accepted

    def cancel(self, booking_id: str) -> dict[str, Any]:
        accepted: dict[str, Any] = self.expect("POST", f"/bookings/{booking_id}/cancel",
                                               status=202)
        return accepted

    def booking(self, booking_id: str, wait: str | None = None,
                timeout: int | None = None) -> dict[str, Any]:
        """The booking; with `wait`, answered once it is in that status or a final one
        (or after `timeout` seconds, the API's default if not given)."""
        path = f"/bookings/{booking_id}"
        query = {k: v for k, v in {"wait_for": wait, "timeout": timeout}.items() if v}
        seconds = float(timeout or LONG_POLL_MAX_SECONDS) if wait else 0.0
        found: dict[str, Any] = self.expect(
            "GET", path + (f"?{urlencode(query)}" if query else ""),
            timeout=self.client.timeout + seconds)
        return found

    def wait_for_status(self, booking_id: str, *statuses: str, timeout: float = 30.0
                        ) -> dict[str, Any]:
        """The booking once in one of `statuses`, or in a final status it cannot leave.

        Waits with the API's long-poll (`?wait_for=` the first status), never a
        polling loop; `NotInTime` at the deadline, with the booking last seen.
        """
        if not statuses:
            raise ValueError("wait for at least one status")
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while True:
            remaining = deadline - time.monotonic()
            if last is not None and remaining <= 0:
                raise NotInTime(booking_id, statuses, last, timeout)
            seconds = max(1, min(LONG_POLL_MAX_SECONDS, math.ceil(remaining)))
            last = self.booking(booking_id, wait=statuses[0], timeout=seconds)
            if last["status"] in statuses or last["status"] in FINAL:
                return last

    # --- admin ----------------------------------------------------------------------------

    def set_role(self, user_id: str, role: str, timeout: float = 15.0) -> dict[str, Any]:
        """Make a user an author or an admin (as an admin); it applies from their next sign-in.

        A new account's profile is made by a reaction, so it may not be there yet:
        the API says so with a 404 and `Retry-After`, and the call is tried again.
        """
        path, deadline = f"/users/{user_id}/role", time.monotonic() + timeout
        while True:
            answer = self.request("PUT", path, {"role": role})
            if answer.status == 200:
                profile: dict[str, Any] = answer.body
                return profile
            later = answer.headers.get("retry-after")
            if answer.status != 404 or later is None or time.monotonic() > deadline:
                raise ApiError("PUT", path, answer)
            time.sleep(float(later))  # what the API asked for: its profile is on the way


def _subject(token: str) -> str:
    """The user id a token names (read, not verified: the API verifies it)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(claims.get("sub", ""))
    except (IndexError, ValueError):
        return ""


def _detail(body: Any) -> str:
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("title") or body)[:200]
    return str(body)[:200]
