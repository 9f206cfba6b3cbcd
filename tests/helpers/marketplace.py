"""The whole local stack as the end-to-end tests see it, and the settings it runs with.

The stack is started once per session (by the e2e conftest's fixture) with short holds,
so a test can watch one run out, and with the per-address limits raised, since every
test client is on 127.0.0.1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local.apiclient import Answer
from local.knative import faults
from local.stack.stack import Stack
from tests.helpers import client
from tests.helpers.client import PASSWORD, Client
from tests.helpers.otlp import OtlpReceiver

# Short enough to watch a hold run out, long enough to pay within it on a busy machine.
HOLD_TTL_SECONDS = 8
SWEEP_INTERVAL_SECONDS = 2
# Every test client is on 127.0.0.1: the per-address limits are raised for the suite, and
# the tests of the limits name their own client addresses through X-Forwarded-For, as the
# Ingress would (127.0.0.1 is the trusted proxy here). Per-user limits, the booking cap and
# the per-account login throttle keep their defaults.
E2E_LIMITS = {"TRUSTED_PROXIES": "127.0.0.1",
              "RATE_LIMIT_REGISTRATIONS_PER_ADDRESS": "100000/3600",
              "RATE_LIMIT_LOGINS_PER_ADDRESS": "100000/60",
              "RATE_LIMIT_BOOKINGS_PER_ADDRESS": "100000/60",
              "RATE_LIMIT_FAILED_LOGINS_PER_ADDRESS": "100000/900"}
ADMIN_EMAIL = "admin@marketplace.local"
ADMIN_PASSWORD = "admin-password"


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
        """Where a test injects a fault into the function hosts (`local.knative.faults`)."""
        return Path(self.stack.config.env[faults.FAULTS_FILE_VARIABLE])

    def register(self, email: str = "", password: str = PASSWORD,
                 full_name: str = "Test User", phone: str | None = None) -> Client:
        return client.register(self.url, email, password, full_name, phone)

    def login(self, email: str, password: str,
              headers: dict[str, str] | None = None) -> Answer:
        return client.login(self.url, email, password, headers)

    def refresh(self, refresh_token: str) -> Answer:
        return client.refresh(self.url, refresh_token)

    def publish(self, capacity: int, price_cents: int = 4900) -> dict[str, Any]:
        course: dict[str, Any] = self.admin.ok("POST", "/courses", {
            "title": "Kafka for people in a hurry", "description": "", "currency": "EUR",
            "price_cents": price_cents, "starts_at": "2037-01-15T09:00:00+01:00",
            "capacity": capacity}, status=201)
        return course

    def course(self, course_id: str) -> dict[str, Any]:
        result: dict[str, Any] = Client(self.url).ok("GET", f"/courses/{course_id}")
        return result
