"""`make demo`: CONTRACT section 6 played on a fresh stack, with its timeline and its figures.

Starts the whole stack (a hold of a few seconds), plays the scenario through
the HTTP API, then prints the timeline (events from the analytics index,
emails and texts from the AWS endpoint), the analytics summary and the
consistency check. Exits 0 only if every outcome was as expected.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests

from functions.analytics import summary
from local import consistency, seed
from local.stack import Stack, StackConfig, free_port
from shared.adapters import search
from shared.runtime.db import Database

HOLD_TTL_SECONDS = 8
SWEEP_INTERVAL_SECONDS = 1
ADMIN = ("admin@marketplace.local", "demo-admin-password")
T = TypeVar("T")


def eventually(fetch: Callable[[], T], until: Callable[[T], bool], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        last = fetch()
        if until(last) or time.monotonic() > deadline:
            return last
        time.sleep(0.1)


@dataclass
class User:
    api: str
    token: str
    user_id: str
    email: str

    def call(self, method: str, path: str, body: Any = None) -> Any:
        answer = requests.request(method, self.api + path, json=body, timeout=30,
                                  headers={"Authorization": f"Bearer {self.token}"})
        if answer.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {answer.status_code} {answer.text}")
        return answer.json() if answer.content else None

    def book(self, course_id: str) -> str:
        return str(self.call("POST", "/bookings", {"course_id": course_id})["booking_id"])

    def wait(self, booking_id: str, *statuses: str, timeout: float = 30.0) -> dict[str, Any]:
        result: dict[str, Any] = eventually(
            lambda: self.call("GET", f"/bookings/{booking_id}"),
            lambda b: b["status"] in statuses, timeout)
        return result


@dataclass
class Scenario:
    """CONTRACT section 6 against a running stack; `checks` says what came out as expected."""

    api: str
    db: Database
    es: Any
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    course_id: str = ""

    def check(self, what: str, ok: bool, seen: object = "") -> bool:
        self.checks.append((what, ok, str(seen)))
        print(f"  [{'ok' if ok else 'FAILED'}] {what}" + ("" if ok else f" (saw {seen})"))
        return ok

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.checks)

    def register(self, name: str, phone: str | None = None) -> User:
        email = f"{name.lower()}-{uuid.uuid4().hex[:6]}@example.com"
        body = {"email": email, "password": "correct horse battery", "full_name": name,
                **({"phone": phone} if phone else {})}
        answer = requests.post(self.api + "/auth/register", json=body, timeout=30)
        answer.raise_for_status()
        return User(self.api, answer.json()["access_token"], answer.json()["user_id"], email)

    def login(self, email: str, password: str) -> User:
        answer = requests.post(self.api + "/auth/login", timeout=30,
                               json={"email": email, "password": password})
        answer.raise_for_status()
        return User(self.api, answer.json()["access_token"], "", email)

    def notified(self, user_id: str, template: str) -> bool:
        def fetch() -> Any:
            with self.db.transaction() as tx:
                return tx.scalar("SELECT count(*) FROM notifications WHERE user_id = :u"
                                 " AND template = :t AND status = 'SENT'",
                                 u=uuid.UUID(user_id), t=template)
        return bool(eventually(fetch, lambda n: n == 1, 15) == 1)

    def course(self) -> dict[str, Any]:
        result: dict[str, Any] = requests.get(
            f"{self.api}/courses/{self.course_id}", timeout=30).json()
        return result

    def counts(self, available: int, reserved: int, sold: int) -> bool:
        want = (available, reserved, sold)
        seen = eventually(self.course, lambda c: (c["available"], c["reserved"], c["sold"])
                          == want, 15)
        return self.check(f"course counts: available {available}, reserved {reserved},"
                          f" sold {sold}", (seen["available"], seen["reserved"], seen["sold"])
                          == want, seen)

    def play(self, admin: User) -> None:
        print("1. a user registers")
        ada = self.register("Ada", phone="+15555550100")
        profile = eventually(lambda: requests.get(self.api + "/users/me", timeout=30, headers={
            "Authorization": f"Bearer {ada.token}"}), lambda r: r.status_code == 200, 15)
        self.check("the profile appears", profile.status_code == 200, profile.status_code)
        self.check("a welcome email is sent", self.notified(ada.user_id, "welcome"))

        print("2. an author publishes a course with 3 tickets")
        self.course_id = admin.call("POST", "/courses", {
            "title": "Sagas in practice", "description": "Outboxes, inboxes and retries.",
            "price_cents": 4900, "currency": "EUR", "starts_at": "2037-03-01T09:00:00Z",
            "capacity": 3})["course_id"]
        self.counts(3, 0, 0)

        print("3. booking 1 pays with pm_card_visa")
        first = ada.book(self.course_id)
        ada.wait(first, "AWAITING_PAYMENT")
        ada.call("POST", f"/bookings/{first}/payment", {"payment_method": "pm_card_visa"})
        seen = ada.wait(first, "CONFIRMED", "CANCELLED")
        self.check("booking 1 CONFIRMED", seen["status"] == "CONFIRMED", seen["status"])
        self.counts(2, 0, 1)
        self.check("confirmation email sent", self.notified(ada.user_id, "booking_confirmed"))
        self.check("confirmation SMS sent", self.notified(ada.user_id, "booking_confirmed_sms"))

        print("4. booking 2 pays with pm_card_chargeDeclined")
        second = ada.book(self.course_id)
        ada.wait(second, "AWAITING_PAYMENT")
        ada.call("POST", f"/bookings/{second}/payment",
                 {"payment_method": "pm_card_chargeDeclined"})
        seen = ada.wait(second, "CONFIRMED", "CANCELLED")
        self.check("booking 2 CANCELLED (payment_failed)",
                   (seen["status"], seen["reason"]) == ("CANCELLED", "payment_failed"), seen)
        self.counts(2, 0, 1)

        print(f"5. booking 3 never pays (hold: {HOLD_TTL_SECONDS} s)")
        third = ada.book(self.course_id)
        ada.wait(third, "AWAITING_PAYMENT")
        seen = ada.wait(third, "EXPIRED", timeout=HOLD_TTL_SECONDS + 20)
        self.check("booking 3 EXPIRED", seen["status"] == "EXPIRED", seen["status"])
        self.counts(2, 0, 1)

        print("6. four more bookings race for the 2 free tickets")
        racers = [self.register(name) for name in ("Alan", "Barbara", "Edsger", "Frances")]
        with ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(lambda u: u.book(self.course_id), racers))
            outcomes = list(pool.map(lambda p: p[0].wait(p[1], "AWAITING_PAYMENT", "REJECTED"),
                                     zip(racers, ids, strict=True)))
        statuses = sorted((o["status"], o["reason"] or "") for o in outcomes)
        self.check("2 AWAITING_PAYMENT, 2 REJECTED (sold_out)", statuses == [
            ("AWAITING_PAYMENT", ""), ("AWAITING_PAYMENT", ""), ("REJECTED", "sold_out"),
            ("REJECTED", "sold_out")], statuses)
        self.counts(0, 2, 1)

        print("7. the analytics summary and the course counts agree")
        self.agree()

    def agree(self) -> None:
        expected = {"bookings_requested": 7, "tickets_sold": 1, "bookings_by_status": {
            "CONFIRMED": 1, "CANCELLED": 1, "EXPIRED": 1, "REJECTED": 2, "IN_PROGRESS": 2}}
        course = uuid.UUID(self.course_id)

        def figures() -> dict[str, Any]:
            self.es.indices.refresh(index=search.INDEX)
            result: dict[str, Any] = summary(self.es, course)["courses"].get(self.course_id, {})
            return result

        seen = eventually(figures, lambda f: {k: f.get(k) for k in expected} == expected, 15)
        self.check("summary: 7 requested, 1 confirmed, 1 cancelled, 1 expired, 2 rejected,"
                   " 2 in progress, 1 ticket sold",
                   {k: seen.get(k) for k in expected} == expected, seen)
        course_now = self.course()
        self.check("summary and course counts agree: sold, and reserved = in progress",
                   (course_now["sold"], course_now["reserved"]) == (
                       seen["tickets_sold"], seen["bookings_by_status"]["IN_PROGRESS"]),
                   course_now)
        self.check("revenue 49.00 EUR", seen["revenue"].get("EUR", {}).get("net_cents") == 4900,
                   seen["revenue"])
        found = eventually(lambda: consistency.differences(self.db, self.es),
                           lambda d: not d, 15)
        self.check("consistency check: no difference", not found, found)


def sending(db: Database) -> int:
    with db.transaction() as tx:
        return int(tx.scalar("SELECT count(*) FROM notifications WHERE status = 'SENDING'"))


def timeline(es: Any, db: Database, aws_url: str) -> list[str]:
    """Events from the analytics index and messages from the AWS endpoint, in time order."""
    es.indices.refresh(index=search.INDEX)
    hits = es.search(index=search.INDEX, size=1000, sort=[{"time": "asc"}],
                     query={"match_all": {}})["hits"]["hits"]
    data = requests.get(f"{aws_url}/moto-api/data.json", timeout=30).json()
    mails = {m["id"]: m for m in data["ses"]["Message"]}
    texts = {m["message_id"]: m["message"] for m in data["sns"]["SMS"]}
    with db.transaction() as tx:
        notes = tx.all("SELECT updated_at, channel, recipient, subject, status,"
                       " provider_message_id, template FROM notifications")
    lines: list[tuple[str, str]] = []
    for hit in hits:
        doc = hit["_source"]
        facts = " ".join(f"{k}={str(doc[k])[:8]}" for k in ("booking_id", "course_id")
                         if doc.get(k) and doc["type"] != "course.published")
        extra = " ".join(str(doc[k]) for k in ("status", "reason") if doc.get(k))
        if doc.get("amount_cents") is not None:
            extra += f" {doc['amount_cents'] / 100:.2f} {doc.get('currency', '')}"
        if doc["type"] == "course.published":
            extra = f'"{doc.get("title", "")}"'
        lines.append((doc["time"], f"event  {doc['type']:<20} {facts} {extra}".rstrip()))
    for note in notes:
        mail = mails.get(note["provider_message_id"] or "")
        provider_id = note["provider_message_id"] or ""
        subject = mail["subject"] if mail else texts.get(provider_id, note["subject"])
        shown = "at the AWS endpoint" if mail or provider_id in texts else note["status"]
        label = "email " if note["channel"] == "email" else "sms   "
        lines.append((note["updated_at"].isoformat(),
                      f"{label} -> {note['recipient']:<32} \"{subject}\" ({shown})"))
    return [f"{moment[11:23]}  {text}" for moment, text in sorted(lines)]


def main() -> int:
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # its shutdown chatter
    workdir = Path(tempfile.mkdtemp(prefix="marketplace-demo-"))
    print(f"Starting a fresh stack (hold {HOLD_TTL_SECONDS} s, logs in {workdir}) ...")
    config = StackConfig(workdir=workdir, port=free_port(), hold_ttl_seconds=HOLD_TTL_SECONDS,
                         sweep_interval_seconds=SWEEP_INTERVAL_SECONDS, threads=8)
    with Stack(config) as stack:
        runtime = stack.runtime
        assert runtime is not None
        seed.seed_admin(runtime, *ADMIN)
        es = search.client(stack.env["ELASTICSEARCH_URL"],
                           stack.env.get("ELASTICSEARCH_SERVER_MODE", "stack"))
        scenario = Scenario(stack.api_url, runtime.db, es)
        admin = scenario.login(*ADMIN)
        try:
            scenario.play(admin)
        except Exception as exc:  # a step that could not even be tried
            scenario.check("the scenario ran to its end", False, exc)
        eventually(lambda: sending(runtime.db), lambda n: n == 0, 5)
        print("\nTimeline")
        for line in timeline(es, runtime.db, stack.env["AWS_ENDPOINT_URL"]):
            print("  " + line)
        print("\nAnalytics summary for the course")
        figures = summary(es, uuid.UUID(scenario.course_id))["courses"].get(
            scenario.course_id, {}) if scenario.course_id else {}
        for name, value in figures.items():
            print(f"  {name:<20} {value}")
        found = eventually(lambda: consistency.differences(runtime.db, es),
                           lambda d: not d, 15)  # holds may be running out right now
        print("\nConsistency check: " + ("analytics and PostgreSQL agree" if not found
                                         else "\n  ".join(["differences:", *found])))
    passed = sum(ok for _, ok, _ in scenario.checks)
    print(f"\n{passed}/{len(scenario.checks)} outcomes as expected:"
          f" {'PASS' if scenario.ok and not found else 'FAIL'}")
    return 0 if scenario.ok and not found else 1


if __name__ == "__main__":
    sys.exit(main())
