"""The saga, model-checked: hypothesis plays the broker, the clock, Redis and the provider.

Every step is one thing that may happen in production (a user books, pays or cancels;
a pending delivery happens; one is delivered again; a function crashes after its
commit; a hold's deadline passes; the watcher or the sweeper notices, or neither; Redis
loses a key; the provider's webhook arrives, late, twice or out of order; the reconciler
or the relay runs), played over real PostgreSQL and Redis through the functions' own
apps (`tests.helpers.saga`). After every step, and at rest, the invariants
(`tests.verify.invariants`) must hold; a broken history is shrunk by hypothesis and
printed as a story, with the seed that replays it.

    VERIFY_SECONDS=300 make verify        # explore for five minutes
    VERIFY_SEED=<n> make verify           # replay one seed
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    get_state_machine_test,
    invariant,
    precondition,
    rule,
)

from functions import hold_expiry_watcher
from shared.adapters import aws, mail
from shared.domain import holds
from shared.domain.notifications import Message
from shared.edge import tokens
from shared.runtime import config
from shared.runtime.bootstrap import Runtime
from tests.helpers.provider_double import SECRET, ProviderDouble
from tests.helpers.saga import SagaDriver, hosted
from tests.verify import invariants

TARGETS = {"reserve_ticket", "settle_booking", "expire_booking", "cancel_open_payment",
           "refund_payment", "send_notifications"}
COURSES = ((uuid.UUID("c0000000-0000-4000-8000-000000000001"), 1, 4900),
           (uuid.UUID("c0000000-0000-4000-8000-000000000002"), 2, 2500))
USERS = tuple(uuid.UUID(f"a0000000-0000-4000-8000-00000000000{i}") for i in range(1, 4))
CARDS = ("pm_card_visa", "pm_card_chargeDeclined")
PHONES = ("+15550000001", None, None)  # user 1 is also texted when a booking is confirmed
SAGA_TABLES = ("bookings", "booking_slots", "tickets", "courses", "payments", "outbox",
               "inbox", "provider_events", "idempotency_keys", "event_log", "dead_letters",
               "notifications")


class Run:
    """What a test run shares with its machines: the runtime and the figures."""

    rt: Runtime
    replay = ""
    checking_rest = True
    histories = 0
    steps = 0
    kinds: Counter[str] = Counter()
    # messages the mail provider took: (channel, recipient, template, text), which names
    # the booking, so two messages are one only if they are the same event's
    sends: Counter[tuple[str, str, str, str]] = Counter()
    messages = 0  # all the run's, for the figures
    first_violation: float | None = None  # when the first broken history was found


class SagaModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        Run.histories += 1
        self.rt = rt = Run.rt
        with rt.db.transaction() as tx:
            tx.execute(f"TRUNCATE {', '.join(invariants.tables(tx, SAGA_TABLES))}")
            for n, (user_id, phone) in enumerate(zip(USERS, PHONES, strict=True), 1):
                tx.execute("INSERT INTO accounts (user_id, email, password_hash, full_name,"
                           " phone, role) VALUES (:u, :e, 'x', :n, :p, 'user')"
                           " ON CONFLICT DO NOTHING",
                           u=user_id, e=f"user-{n}@example.com", n=f"User {n}", p=phone)
            for course_id, capacity, price in COURSES:
                tx.execute(
                    "INSERT INTO courses (course_id, author_id, title, price_cents, currency,"
                    " starts_at, capacity, status) VALUES (:c, :a, 'Sagas', :p, 'EUR', :s,"
                    " :cap, 'ACTIVE')", c=course_id, a=USERS[0], p=price,
                    s=datetime.now(UTC) + timedelta(days=30), cap=capacity)
                tx.execute("INSERT INTO tickets (ticket_id, course_id) SELECT"
                           " gen_random_uuid(), :c FROM generate_series(1, :n)",
                           c=course_id, n=capacity)
        rt.redis.flushdb()
        Run.sends = Counter()
        self.provider = rt._provider = ProviderDouble()
        self.driver = SagaDriver(rt, TARGETS, partition=self.partition)
        self.bookings: list[uuid.UUID] = []
        self.owners: dict[uuid.UUID, uuid.UUID] = {}
        self.notices: list[str] = []  # expired keys whose notification the watcher may get
        self.delivered_hooks: set[int] = set()
        self.seen: dict[uuid.UUID, str] = {}
        self.lines: list[str] = []
        self.resting = False
        self.keys: dict[bytes, int] = {}
        self.tokens = {u: tokens.issue_access(u, "user", uuid.uuid4()) for u in USERS}

    # --- the story -----------------------------------------------------------

    def say(self, kind: str, line: str) -> None:
        if self.driver.crashed:  # this step's function crashed before its publish
            line += f" (crashed before publishing {', '.join(self.driver.crashed)})"
            self.driver.crashed = []
        if self.resting:  # what at_rest lets happen is one step of the story's end
            self.lines.append(f"(at rest) {line}")
            return
        Run.steps += 1
        Run.kinds[kind] += 1
        self.lines.append(line)

    def story(self) -> str:
        return "\n".join(f"  {n:>2}. {line}" for n, line in enumerate(self.lines, 1))

    def name(self, booking_id: uuid.UUID) -> str:
        return f"booking {self.bookings.index(booking_id) + 1}"

    def booking_order(self, name: str) -> int:
        parsed = holds.parse_key(name)
        return self.bookings.index(parsed[0]) if parsed and parsed[0] in self.bookings else -1

    def partition(self, key: bytes) -> int:
        """The first key the broker sees and the third share a partition, the second has
        the other: lanes a seed replays (a hash of the random booking ids would not)."""
        return self.keys.setdefault(key, len(self.keys)) % 2

    def awaiting(self) -> list[uuid.UUID]:
        """Bookings a payment can still be for (a pay of any other is a 409, and is drawn
        only when there is none)."""
        return self.in_status("AWAITING_PAYMENT")

    def open(self) -> list[uuid.UUID]:
        """Bookings that can still be cancelled (the same: others only when there is none)."""
        return self.in_status("PENDING", "AWAITING_PAYMENT")

    def in_status(self, *statuses: str) -> list[uuid.UUID]:
        with self.rt.db.transaction() as tx:
            found = {r["booking_id"] for r in tx.all(
                "SELECT booking_id FROM bookings WHERE status = ANY(:s)", s=list(statuses))}
        return [b for b in self.bookings if b in found]

    def pick(self, items: list[Any], i: int) -> Any:
        return items[i % len(items)] if items else None

    # --- people ----------------------------------------------------------------

    def _http(self, user: uuid.UUID, path: str, body: dict[str, Any]) -> Any:
        return hosted("bookings").test_client().post(
            path, json=body, headers={"Authorization": f"Bearer {self.tokens[user]}"})

    @rule(user=st.integers(0, 2), course=st.integers(0, 1))
    def book(self, user: int, course: int) -> None:
        answer = self._http(USERS[user], "/bookings", {"course_id": str(COURSES[course][0])})
        assert answer.status_code in {202, 409}, (answer.status_code, answer.data)
        got = ""
        if answer.status_code == 202:
            booking_id = uuid.UUID(answer.get_json()["booking_id"])
            self.bookings.append(booking_id)
            self.owners[booking_id] = USERS[user]
            got = f" ({self.name(booking_id)})"
        self.say("book", f"user {user + 1} books course {course + 1}{got}"
                         f" -> {answer.status_code}")

    @precondition(lambda self: self.bookings)
    @rule(which=st.integers(0, 20), card=st.sampled_from(CARDS))
    def pay(self, which: int, card: str) -> None:
        booking_id = self.pick(self.awaiting() or self.bookings, which)
        if booking_id is None:
            return
        answer = self._http(self.owners[booking_id], f"/bookings/{booking_id}/payment",
                            {"payment_method": card})
        assert answer.status_code in {202, 409}, (answer.status_code, answer.data)
        self.say("pay", f"{self.name(booking_id)} is paid with {card} -> {answer.status_code}")

    @precondition(lambda self: self.bookings)
    @rule(which=st.integers(0, 20))
    def cancel(self, which: int) -> None:
        booking_id = self.pick(self.open() or self.bookings, which)
        if booking_id is None:
            return
        answer = self._http(self.owners[booking_id], f"/bookings/{booking_id}/cancel", {})
        assert answer.status_code in {202, 409}, (answer.status_code, answer.data)
        self.say("cancel", f"user cancels {self.name(booking_id)} -> {answer.status_code}")

    # --- the provider ------------------------------------------------------------

    @precondition(lambda self: self.provider.webhooks)
    @rule(which=st.integers(0, 20))
    def webhook(self, which: int) -> None:
        hook = self.pick(self.provider.webhooks, which)
        if hook is None:
            return
        answer = hosted("stripe_webhook").test_client().post(
            "/webhooks/stripe", data=hook.body,
            headers={"Content-Type": "application/json", "Stripe-Signature": hook.signature()})
        assert answer.status_code == 200, (answer.status_code, answer.data)
        again = " again" if hook.number in self.delivered_hooks else ""
        self.delivered_hooks.add(hook.number)
        self.say("webhook", f"the provider's {hook.type} for {hook.intent} arrives{again}"
                            f" -> {answer.get_json()['outcome']}")

    # --- the broker ----------------------------------------------------------------

    @precondition(lambda self: self.driver.pending())
    @rule(which=st.integers(0, 30), crash=st.integers(0, 7))
    def deliver(self, which: int, crash: int) -> None:
        pending = self.driver.pending()
        if not pending:
            return
        if crash == 0:
            self.crash()
        delivery = pending[which % len(pending)]
        status = self.driver.deliver(which % len(pending))
        self.say("deliver", f"deliver {delivery} ({self.subject(delivery.subject)}) -> {status}")

    # Deliveries are most of what happens: two more ways to draw one.
    deliver_more = precondition(lambda self: self.driver.pending())(
        rule(which=st.integers(0, 30), crash=st.integers(0, 7))(
            lambda self, which, crash: self.deliver(which, crash)))

    @precondition(lambda self: self.driver.pending())
    @rule(count=st.integers(1, 6))
    def catch_up(self, count: int) -> None:
        """The broker catches up: the oldest pending deliveries happen, one after another."""
        for _ in range(count):
            if not self.driver.pending():
                return
            self.deliver(0, crash=1)

    @precondition(lambda self: self.driver.delivered)
    @rule(which=st.integers(0, 30))
    def redeliver(self, which: int) -> None:
        delivered = self.driver.delivered
        if not delivered:
            return
        delivery = delivered[which % len(delivered)]
        status = self.driver.redeliver(which % len(delivered))
        self.say("redeliver", f"deliver {delivery} again -> {status}")

    def crash(self) -> None:
        self.driver.crash_next()
        self.say("crash", "the next function to commit crashes before it publishes")

    def has(self, sql: str) -> bool:
        with self.rt.db.transaction() as tx:
            return bool(tx.scalar(f"SELECT EXISTS ({sql})"))

    # The schedules are drawn when they have something to do (running with nothing to do is
    # a no-op by construction, and would crowd out the steps that matter).
    @precondition(lambda self: self.has("SELECT 1 FROM outbox WHERE published_at IS NULL"))
    @rule()
    def relay(self) -> None:
        self.say("relay", f"the relay runs (sends {self.driver.relay()})")

    # --- clocks and Redis ----------------------------------------------------------------

    @precondition(lambda self: self.bookings)
    @rule(which=st.integers(0, 20))
    def deadline_passes(self, which: int) -> None:
        with self.rt.db.transaction() as tx:
            rows = tx.all("SELECT booking_id, hold_expires_at, trace_context FROM bookings"
                          " WHERE status = 'AWAITING_PAYMENT' AND hold_expires_at > now()"
                          " ORDER BY created_at")
            if not rows:
                return
            row = rows[which % len(rows)]
            past = holds.deadline(datetime.now(UTC), -1)
            tx.execute("UPDATE bookings SET hold_expires_at = :h WHERE booking_id = :b",
                       h=past, b=row["booking_id"])
        old = holds.key(row["booking_id"], row["hold_expires_at"], row["trace_context"])
        if self.rt.redis.delete(old):  # Redis expires the key, and says so
            self.notices.append(holds.key(row["booking_id"], past, row["trace_context"]))
        self.say("deadline", f"the hold of {self.name(row['booking_id'])} runs out")

    @precondition(lambda self: self.notices)
    @rule(which=st.integers(0, 20))
    def watcher(self, which: int) -> None:
        name = self.pick(self.notices, which)
        if name is None:
            return
        hold_expiry_watcher._expired(name, self.driver.publish)
        parsed = holds.parse_key(name)
        assert parsed is not None
        self.say("watcher", f"the watcher hears {self.name(parsed[0])}'s key expire"
                            " (reservation.expired fires)")

    @precondition(lambda self: self.bookings)
    @rule(which=st.integers(0, 20))
    def redis_loses_key(self, which: int) -> None:
        keys = sorted((k.decode() for k in self.rt.redis.keys(holds.KEY_PREFIX + "*")),
                      key=self.booking_order)  # not by the random ids: a seed replays
        name = self.pick(keys, which)
        if name is None:
            return
        self.rt.redis.delete(name)
        parsed = holds.parse_key(name)
        assert parsed is not None
        self.say("lose_key", f"Redis loses {self.name(parsed[0])}'s hold key")

    @precondition(lambda self: self.has(
        "SELECT 1 FROM bookings WHERE status = 'AWAITING_PAYMENT' AND hold_expires_at <= now()"))
    @rule()
    def sweep(self) -> None:
        status = self.driver.tick("sweep_expired_holds")
        self.say("sweep", f"the sweeper runs -> {status}")

    @precondition(lambda self: self.has(
        "SELECT 1 FROM payments WHERE status IN ('REQUIRES_PAYMENT', 'PROCESSING', 'SUCCEEDED',"
        " 'REFUNDING')"))
    @rule()
    def reconcile(self) -> None:
        status = self.driver.tick("reconcile_payments")
        self.say("reconcile", f"the reconciler runs -> {status}")

    # --- the invariants ------------------------------------------------------------------

    def subject(self, key: str) -> str:
        try:
            return self.name(uuid.UUID(key))
        except ValueError:
            return key

    def fail(self, why: str) -> None:
        if Run.first_violation is None:
            Run.first_violation = time.monotonic()
        raise AssertionError(f"{why}\n\nThe story:\n{self.story()}\n\n{Run.replay}")

    @invariant()
    def always(self) -> None:
        crashed = [d for d in self.driver.delivered + self.driver.pending()
                   if 500 in d.answers]
        if crashed:
            self.fail(f"a function answered 500 to {crashed[0]}")
        if self.driver.dead_letters:  # nothing in these histories is forged or malformed
            dead = self.driver.dead_letters[0]
            self.fail(f"{dead} was dead-lettered ({dead.answers[-1]})")
        with self.rt.db.transaction() as tx:
            why = invariants.always(tx, self.seen, Run.sends)
        if why:
            self.fail(why)

    def teardown(self) -> None:
        if not Run.checking_rest:
            return
        self.at_rest()

    def settle(self) -> None:
        """Every pending delivery, oldest first, each a line of the story."""
        for _ in range(1000):
            if not self.driver.pending():
                return
            self.deliver(0, crash=1)

    def at_rest(self) -> None:
        """Let everything that is owed happen: what is left must be a rest, and a sound one."""
        Run.kinds["rest"] += 1
        self.resting = True
        for hook in self.provider.webhooks:
            if hook.number not in self.delivered_hooks:
                self.webhook(hook.number - 1)
        for _ in range(6):
            self.relay()
            self.settle()
            self.reconcile()
            self.settle()
            self.sweep()
            if not self.driver.pending():
                with self.rt.db.transaction() as tx:
                    if not tx.scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL"):
                        break
        self.always()
        with self.rt.db.transaction() as tx:
            why = invariants.at_rest(tx, self.provider.received())
        if why:
            self.fail(f"at rest: {why}")


def budget() -> float:
    return float(os.environ.get("VERIFY_SECONDS", "20"))


@pytest.fixture
def model_rt(rt: Runtime, aws_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    """The runtime as the model needs it: no rate limits, the provider double, moto's SES."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_url)
    config.settings.cache_clear()
    aws.client.cache_clear()
    send = mail.send

    def counted(message: Message, sender: str) -> str:
        # functions-framework loads each function from its own file, a module of its own:
        # the one module both share is the mail adapter, so that is where sends are counted
        sent = send(message, sender)
        Run.sends[(message.channel, message.recipient, message.template,
                   message.content.text)] += 1
        Run.messages += 1
        return sent

    monkeypatch.setattr(mail, "send", counted)
    rt.settings = dataclasses.replace(
        rt.settings, rate_limits=False, bookings_per_user_per_course=2,
        stripe_api_key="sk_test_verify", stripe_webhook_secrets=(SECRET,),
        payment_reconcile_after_seconds=0,
        aws_endpoint_url=aws_url)
    yield rt
    aws.client.cache_clear()


# The budget, then hypothesis's own limit on shrinking (five minutes), then some slack.
@pytest.mark.timeout(budget() + 300 + 120)
def test_the_saga_keeps_its_invariants_in_every_history(
        model_rt: Runtime, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    # Warnings and errors only: pytest keeps every captured record in memory, and a run
    # of many thousand deliveries logged gigabytes of INFO lines.
    caplog.set_level(logging.WARNING)
    Run.rt = model_rt
    Run.checking_rest = True
    Run.histories, Run.steps, Run.kinds, Run.first_violation = 0, 0, Counter(), None
    Run.messages = 0
    fixed = os.environ.get("VERIFY_SEED")
    started = time.monotonic()
    rounds = 0
    try:
        while True:
            chosen = int(fixed) if fixed else random.randrange(2**32)
            Run.replay = f"Replay it: VERIFY_SEED={chosen} make verify"
            test = get_state_machine_test(SagaModel, settings=settings(
                max_examples=10, stateful_step_count=25, deadline=None, database=None,
                suppress_health_check=list(HealthCheck), print_blob=False,
                report_multiple_bugs=False,
                # no explain phase: it traces every line of a replay, and a history here is
                # many thousand lines of the runtime; the story says what happened instead
                phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink]))
            seed(chosen)(test)()
            rounds += 1
            if fixed or time.monotonic() - started > budget():
                break
    finally:
        elapsed = time.monotonic() - started
        kinds = ", ".join(f"{k} {n}" for k, n in Run.kinds.most_common())
        with capsys.disabled():
            found = ("" if Run.first_violation is None else
                     f"; the first broken history after {Run.first_violation - started:.0f} s"
                     f" ({Run.replay.split(': ')[-1]})")
            print(f"\nverify: {Run.histories} histories, {Run.steps} steps in {elapsed:.0f} s"
                  f" ({rounds} seeds, {Run.messages} messages sent){found}; steps: {kinds}")
