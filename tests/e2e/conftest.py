"""The whole local stack, broker included, started once for the end-to-end tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from otlp import OtlpReceiver

from local import faults, seed
from local.embedded import EmbeddedServerError
from local.stack import Stack, StackConfig, free_port

# Short enough to watch a hold run out, long enough to pay within it on a busy machine.
HOLD_TTL_SECONDS = 8
SWEEP_INTERVAL_SECONDS = 2
T = TypeVar("T")
# Every test client is on 127.0.0.1: the per-address limits are raised for the suite, and
# the tests of the limits name their own client addresses through X-Forwarded-For, as the
# Ingress would (127.0.0.1 is the trusted proxy here). Per-user limits, the booking cap and
# the per-account login throttle keep their defaults.
E2E_LIMITS = {"TRUSTED_PROXIES": "127.0.0.1",
              "RATE_LIMIT_REGISTRATIONS_PER_ADDRESS": "100000/3600",
              "RATE_LIMIT_LOGINS_PER_ADDRESS": "100000/60",
              "RATE_LIMIT_BOOKINGS_PER_ADDRESS": "100000/60",
              "RATE_LIMIT_FAILED_LOGINS_PER_ADDRESS": "100000/900"}
# Every access and refresh token the session was given: no log line may contain one.
ISSUED_TOKENS: list[str] = []
ADMIN_PASSWORD = "admin-password"


def eventually(fetch: Callable[[], T], until: Callable[[T], bool] = bool,
               timeout: float = 30.0, every: float = 0.1, what: str = "condition") -> T:
    """Poll `fetch` until `until` holds for what it returns; fail with what was last seen."""
    deadline = time.monotonic() + timeout
    while True:
        last = fetch()
        if until(last):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s; last seen: {last!r}")
        time.sleep(every)


@dataclass
class Client:
    base: str
    token: str = ""
    user_id: str = ""

    def call(self, method: str, path: str, json: Any = None,
             headers: dict[str, str] | None = None) -> requests.Response:
        all_headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        all_headers.update(headers or {})
        return requests.request(method, self.base + path, json=json, headers=all_headers,
                                timeout=30)

    def ok(self, method: str, path: str, json: Any = None, status: int = 200,
           headers: dict[str, str] | None = None) -> Any:
        answer = self.call(method, path, json, headers)
        assert answer.status_code == status, (answer.status_code, answer.text)
        return answer.json() if answer.content else None

    def booking(self, booking_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.ok("GET", f"/bookings/{booking_id}")
        return result

    def wait_status(self, booking_id: str, *statuses: str, timeout: float = 30.0
                    ) -> dict[str, Any]:
        return eventually(lambda: self.booking(booking_id), lambda b: b["status"] in statuses,
                          timeout, what=f"booking {booking_id} in {statuses}")

    def book(self, course_id: str) -> str:
        answer = self.ok("POST", "/bookings", {"course_id": course_id}, status=202)
        assert answer["status"] == "PENDING"
        return str(answer["booking_id"])


@dataclass
class Marketplace:
    stack: Stack
    admin: Client
    traces: OtlpReceiver

    @property
    def url(self) -> str:
        return self.stack.api_url

    @property
    def faults_file(self) -> Path:
        """Where a test injects a fault into the function hosts (`local.faults`)."""
        return Path(self.stack.config.env[faults.FAULTS_FILE_VARIABLE])

    def register(self) -> Client:
        email = f"user-{uuid.uuid4().hex[:10]}@example.com"
        answer = requests.post(self.url + "/auth/register", timeout=30, json={
            "email": email, "password": "correct horse battery", "full_name": "Test User"})
        assert answer.status_code == 201, answer.text
        body = answer.json()
        ISSUED_TOKENS.extend([body["access_token"], body["refresh_token"]])
        return Client(self.url, body["access_token"], body["user_id"])

    def publish(self, capacity: int, price_cents: int = 4900) -> dict[str, Any]:
        course: dict[str, Any] = self.admin.ok("POST", "/courses", {
            "title": "Kafka for people in a hurry", "description": "", "currency": "EUR",
            "price_cents": price_cents, "starts_at": "2037-01-15T09:00:00+01:00",
            "capacity": capacity}, status=201)
        return course

    def course(self, course_id: str) -> dict[str, Any]:
        result: dict[str, Any] = Client(self.url).ok("GET", f"/courses/{course_id}")
        return result


@pytest.fixture(scope="session")
def marketplace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Marketplace]:
    workdir: Path = tmp_path_factory.mktemp("e2e")
    traces = OtlpReceiver()  # the functions export their spans here, as to a Collector
    stack = Stack(StackConfig(
        workdir=workdir, port=free_port(), hold_ttl_seconds=HOLD_TTL_SECONDS,
        sweep_interval_seconds=SWEEP_INTERVAL_SECONDS, threads=8,
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": traces.url, "OTEL_BSP_SCHEDULE_DELAY": "200",
             "LOG_FORMAT": "json", faults.FAULTS_FILE_VARIABLE: str(workdir / "faults.json"),
             **E2E_LIMITS}))
    try:
        stack.start()
    except EmbeddedServerError as exc:
        pytest.exit(str(exc), returncode=1)
    try:
        assert stack.runtime is not None
        seed.seed_admin(stack.runtime, "admin@marketplace.local", ADMIN_PASSWORD)
        login = requests.post(stack.api_url + "/auth/login", timeout=30, json={
            "email": "admin@marketplace.local", "password": ADMIN_PASSWORD}).json()
        ISSUED_TOKENS.extend([login["access_token"], login["refresh_token"]])
        admin = Client(stack.api_url, login["access_token"])
        yield Marketplace(stack, admin, traces)
    finally:
        stack.stop()
        traces.close()
