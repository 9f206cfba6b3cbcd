"""The tests' client of the HTTP API: `local.apiclient`, as a caller with a token, asserting.

Every call goes through the one API client the demo, the load and the chaos run use. A
test states the status it expects with each call (`ok`), so a wrong answer fails at the
call that got it, with its body. The token is sent as it is and never renewed behind the
test's back: the tests of tokens read the refusals.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import cache
from typing import Any

import requests

from local.apiclient import Answer, ApiClient, Credentials, RetryPolicy, SignedIn

# Every access and refresh token the session was given: no log line may contain one.
ISSUED_TOKENS: list[str] = []
PASSWORD = "correct horse battery"
# A 5xx is a failure to see, not to ride out: one more attempt only, for a connection the
# server closed while it was idle. Long enough for the API's longest long-poll.
RETRY = RetryPolicy(attempts=2, first_backoff=0.05)
TIMEOUT_SECONDS = 60.0


@cache
def api(base: str) -> ApiClient:
    """One client per address for the session: its connections are kept alive."""
    return ApiClient(base, RETRY, timeout=TIMEOUT_SECONDS)


@dataclass
class Client:
    base: str
    token: str = ""
    user_id: str = ""
    refresh_token: str = ""

    def call(self, method: str, path: str, json: Any = None,
             headers: dict[str, str] | None = None) -> Answer:
        """The answer, whatever it is."""
        return api(self.base).request(method, path, json, token=self.token, headers=headers)

    def send(self, method: str, path: str, data: bytes, content_type: str) -> Answer:
        """A body sent as it is, not as JSON (an image, a malformed document)."""
        headers = {"Content-Type": content_type}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        answer = requests.request(method, self.base + path, data=data, headers=headers,
                                  timeout=TIMEOUT_SECONDS)
        body: Any = None
        if answer.content:
            try:
                body = answer.json()
            except ValueError:
                body = answer.text
        return Answer(answer.status_code, body,
                      headers={name.lower(): value for name, value in answer.headers.items()})

    def ok(self, method: str, path: str, json: Any = None, status: int = 200,
           headers: dict[str, str] | None = None) -> Any:
        """The body of an answer with `status`; any other answer fails the test."""
        answer = self.call(method, path, json, headers)
        assert answer.status == status, (method, path, answer.status, answer.body)
        return answer.body

    def booking(self, booking_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.ok("GET", f"/bookings/{booking_id}")
        return result

    def wait_status(self, booking_id: str, *statuses: str, timeout: float = 30.0
                    ) -> dict[str, Any]:
        """The booking once in one of `statuses`; a final status other than those fails at
        once, as a booking there moves no more."""
        caller = SignedIn(api(self.base), Credentials("", "", self.user_id, self.token))
        booking = caller.wait_for_status(booking_id, *statuses, timeout=timeout)
        assert booking["status"] in statuses, (booking_id, statuses, booking)
        return booking

    def book(self, course_id: str) -> str:
        answer = self.ok("POST", "/bookings", {"course_id": course_id}, status=202)
        assert answer["status"] == "PENDING"
        return str(answer["booking_id"])


def _issued(answer: Answer) -> Answer:
    if answer.status in {200, 201}:
        ISSUED_TOKENS.extend([answer.body["access_token"], answer.body["refresh_token"]])
    return answer


def login(base: str, email: str, password: str,
          headers: dict[str, str] | None = None) -> Answer:
    """The answer to a login, whatever it is: the tests of logins read refusals too."""
    return _issued(Client(base).call("POST", "/auth/login",
                                     {"email": email, "password": password}, headers))


def refresh(base: str, refresh_token: str) -> Answer:
    return _issued(Client(base).call("POST", "/auth/refresh", {"refresh_token": refresh_token}))


def signed_in(base: str, email: str, password: str) -> Client:
    """A client signed in with this account (which must exist)."""
    user = api(base).login(email, password)
    ISSUED_TOKENS.extend([user.token, user.credentials.refresh_token])
    return Client(base, user.token, user.user_id, user.credentials.refresh_token)


def register(base: str, email: str = "", password: str = PASSWORD,
             full_name: str = "Test User", phone: str | None = None) -> Client:
    """A new account (a fresh email unless one is given), signed in as registering signs in."""
    user = api(base).register(email or f"user-{uuid.uuid4().hex[:10]}@example.com",
                              password, full_name, phone=phone)
    ISSUED_TOKENS.extend([user.token, user.credentials.refresh_token])
    return Client(base, user.token, user.user_id, user.credentials.refresh_token)
