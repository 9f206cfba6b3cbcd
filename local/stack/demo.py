"""`make demo`: the booking story played on a fresh stack, with its timeline and its figures.

Starts the whole stack (a hold of a few seconds, so one can be watched running
out), plays the story through the HTTP API as its users would (a user
registers, an author publishes a course, one booking pays, one is declined,
one is never paid, four race for the last two tickets), then prints the
timeline (events from the analytics index, emails and texts from the AWS
endpoint), the analytics summary and the consistency check. Exits 0 only if
every outcome was as expected.
"""

from __future__ import annotations

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

from functions import index_event
from functions.analytics import summary
from local import console
from local.apiclient import ApiClient, SignedIn
from local.ops import consistency
from local.stack import seed
from local.stack.embedded import free_port
from local.stack.stack import Stack, StackConfig
from shared.adapters import search
from shared.runtime.db import Database

HOLD_TTL_SECONDS = 8
SWEEP_INTERVAL_SECONDS = 1
ADMIN = ("admin@marketplace.local", "demo-admin-password")
PASSWORD = "correct horse battery"
T = TypeVar("T")


def eventually(fetch: Callable[[], T], until: Callable[[T], bool], timeout: float = 30.0) -> T:
    """What `fetch` returns once `until` holds, or at the deadline (the check says which)."""
    deadline = time.monotonic() + timeout
    while True:
        last = fetch()
        if until(last) or time.monotonic() > deadline:
            return last
        time.sleep(0.1)


@dataclass
class Scenario:
    """The story against a running stack; `checks` says what came out as expected."""

    api: str
    db: Database
    es: Any
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    course_id: str = ""
    client: ApiClient = field(init=False)

    def __post_init__(self) -> None:
        self.client = ApiClient(self.api)

    def check(self, what: str, ok: bool, seen: object = "") -> bool:
        self.checks.append((what, ok, str(seen)))
        console.say(f"  [{'ok' if ok else 'FAILED'}] {what}" + ("" if ok else f" (saw {seen})"))
        return ok

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.checks)

    def register(self, name: str, phone: str | None = None) -> SignedIn:
        email = f"{name.lower()}-{uuid.uuid4().hex[:6]}@example.com"
        return self.client.register(email, PASSWORD, name, phone=phone)

    def notified(self, user_id: str, template: str) -> bool:
        def fetch() -> Any:
            with self.db.transaction() as tx:
                return tx.scalar("SELECT count(*) FROM notifications WHERE user_id = :u"
                                 " AND template = :t AND status = 'SENT'",
                                 u=uuid.UUID(user_id), t=template)
        return bool(eventually(fetch, lambda n: n == 1, 15) == 1)

    def course(self) -> dict[str, Any]:
        return self.client.course(self.course_id)

    def counts(self, available: int, reserved: int, sold: int) -> bool:
        want = (available, reserved, sold)
        seen = eventually(self.course, lambda c: (c["available"], c["reserved"], c["sold"])
                          == want, 15)
        return self.check(f"course counts: available {available}, reserved {reserved},"
                          f" sold {sold}", (seen["available"], seen["reserved"], seen["sold"])
                          == want, seen)

    def play(self, admin: SignedIn) -> None:
        """The story, step by step; `admin` publishes the course."""
        console.say("1. a user registers")
        ada = self.register("Ada", phone="+15555550100")
        profile = eventually(lambda: ada.request("GET", "/users/me").status,
                             lambda status: status == 200, 15)
        self.check("the profile appears", profile == 200, profile)
        self.check("a welcome email is sent", self.notified(ada.user_id, "welcome"))

        console.say("2. an author publishes a course with 3 tickets")
        self.course_id = str(admin.publish_course(
            3, title="Sagas in practice", description="Outboxes, inboxes and retries.",
            price_cents=4900, currency="EUR", starts_at="2037-03-01T09:00:00Z")["course_id"])
        self.counts(3, 0, 0)

        console.say("3. booking 1 pays with pm_card_visa")
        first = ada.book(self.course_id)
        ada.wait_for_status(first, "AWAITING_PAYMENT")
        ada.pay(first, "pm_card_visa")
        seen = ada.wait_for_status(first, "CONFIRMED", "CANCELLED")
        self.check("booking 1 CONFIRMED", seen["status"] == "CONFIRMED", seen["status"])
        self.counts(2, 0, 1)
        self.check("confirmation email sent", self.notified(ada.user_id, "booking_confirmed"))
        self.check("confirmation SMS sent", self.notified(ada.user_id, "booking_confirmed_sms"))

        console.say("4. booking 2 pays with pm_card_chargeDeclined")
        second = ada.book(self.course_id)
        ada.wait_for_status(second, "AWAITING_PAYMENT")
        ada.pay(second, "pm_card_chargeDeclined")
        seen = ada.wait_for_status(second, "CONFIRMED", "CANCELLED")
        self.check("booking 2 CANCELLED (payment_failed)",
                   (seen["status"], seen["reason"]) == ("CANCELLED", "payment_failed"), seen)
        self.counts(2, 0, 1)

        console.say(f"5. booking 3 never pays (hold: {HOLD_TTL_SECONDS} s)")
        third = ada.book(self.course_id)
        ada.wait_for_status(third, "AWAITING_PAYMENT")
        console.say(f"  waiting for its hold to run out ({HOLD_TTL_SECONDS} s) ...")
        seen = ada.wait_for_status(third, "EXPIRED", timeout=HOLD_TTL_SECONDS + 20)
        self.check("booking 3 EXPIRED", seen["status"] == "EXPIRED", seen["status"])
        self.counts(2, 0, 1)

        console.say("6. four more bookings race for the 2 free tickets")
        racers = [self.register(name) for name in ("Alan", "Barbara", "Edsger", "Frances")]
        with ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(lambda u: u.book(self.course_id), racers))
            outcomes = list(pool.map(
                lambda p: p[0].wait_for_status(p[1], "AWAITING_PAYMENT", "REJECTED"),
                zip(racers, ids, strict=True)))
        statuses = sorted((o["status"], o["reason"] or "") for o in outcomes)
        self.check("2 AWAITING_PAYMENT, 2 REJECTED (sold_out)", statuses == [
            ("AWAITING_PAYMENT", ""), ("AWAITING_PAYMENT", ""), ("REJECTED", "sold_out"),
            ("REJECTED", "sold_out")], statuses)
        self.counts(0, 2, 1)

        console.say("7. the analytics summary and the course counts agree")
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


@console.command("demo")
def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="marketplace-demo-"))
    log = console.log_path("demo")
    console.say(f"Starting a fresh stack (hold {HOLD_TTL_SECONDS} s; this command's log:"
                f" {console.shown(log)})")
    config = StackConfig(workdir=workdir, port=free_port(), hold_ttl_seconds=HOLD_TTL_SECONDS,
                         sweep_interval_seconds=SWEEP_INTERVAL_SECONDS, threads=8,
                         progress=lambda step: console.say(f"  {step} ..."))
    with Stack(config) as stack:
        runtime = stack.runtime
        assert runtime is not None
        seed.seed_admin(runtime, *ADMIN)
        es = search.client(stack.env["ELASTICSEARCH_URL"],
                           stack.env.get("ELASTICSEARCH_SERVER_MODE", "stack"))
        scenario = Scenario(stack.api_url, runtime.db, es)
        console.say(f"The stack is up at {stack.api_url}.\n")
        try:
            scenario.play(scenario.client.login(*ADMIN))
        except Exception as exc:  # a step that could not even be tried
            scenario.check("the scenario ran to its end", False, exc)
        console.say("\nwaiting for the last messages to be sent and the last events indexed ...")
        eventually(lambda: sending(runtime.db), lambda n: n == 0, 5)
        # the indexer reads the topics every INDEX_INTERVAL_SECONDS: the timeline comes from it
        index_event.wait_until_indexed(stack.env["KAFKA_BOOTSTRAP_SERVERS"], 30)
        console.say("\nTimeline")
        for line in timeline(es, runtime.db, stack.env["AWS_ENDPOINT_URL"]):
            console.say("  " + line)
        console.say("\nAnalytics summary for the course")
        figures = summary(es, uuid.UUID(scenario.course_id))["courses"].get(
            scenario.course_id, {}) if scenario.course_id else {}
        for name, value in figures.items():
            console.say(f"  {name:<20} {value}")
        found = eventually(lambda: consistency.differences(runtime.db, es),
                           lambda d: not d, 15)  # holds may be running out right now
        console.say("\nConsistency check: " + ("analytics and PostgreSQL agree" if not found
                                                else "\n  ".join(["differences:", *found])))
        console.say("\nStopping the stack ...")
    passed = sum(ok for _, ok, _ in scenario.checks)
    console.say(f"\n{passed}/{len(scenario.checks)} outcomes as expected:"
                f" {'PASS' if scenario.ok and not found else 'FAIL'}")
    return 0 if scenario.ok and not found else 1


if __name__ == "__main__":
    sys.exit(main())
