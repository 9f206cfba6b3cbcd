"""What must hold after a fault-injection run, each check with its figure.

The load generator knows what every client did and saw; PostgreSQL, the
notifications ledger, the AWS endpoint's sent mail, the analytics index and
the dead-letter topic know what the system did. Every check compares the
two, so a lost booking, a second booking for one Idempotency-Key, a ticket
sold twice, money kept without a confirmation or a second email is found and
counted, not assumed away.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import requests
from kafka import KafkaConsumer, TopicPartition  # type: ignore[import-untyped,unused-ignore]

from functions import index_event
from local.measure import load
from local.ops import consistency
from local.stack.stack import Stack
from shared.adapters import search
from shared.domain.events import DEAD_LETTER_TOPIC
from shared.runtime.db import Database

DRAIN_TIMEOUT_SECONDS = 180.0
QUIET_SECONDS = 3.0
INDEXER_SECONDS = 30.0  # at least, after the saga came to rest: a few of the indexer's ticks


@dataclass
class Check:
    name: str
    count: int  # violations found (0 = ok)
    figure: str  # what was measured, for the report

    @property
    def ok(self) -> bool:
        return self.count == 0


def drain(stack: Stack) -> None:
    """Wait until the saga is at rest (nothing unpublished, held, sending or still handled)
    and the analytics indexer has committed every event."""
    assert stack.runtime is not None
    db = stack.runtime.db
    db.close()  # the run may have restarted PostgreSQL under these connections
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    last, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        with db.transaction() as tx:
            busy = tx.one(
                "SELECT (SELECT count(*) FROM outbox WHERE published_at IS NULL) AS unpublished,"
                " (SELECT count(*) FROM bookings WHERE status IN ('PENDING', 'AWAITING_PAYMENT'))"
                " AS open,"
                " (SELECT count(*) FROM tickets WHERE status = 'RESERVED') AS reserved,"
                " (SELECT count(*) FROM notifications WHERE status IN ('SENDING', 'RETRYING'))"
                " AS sending,"
                " (SELECT count(*) FROM payments WHERE status IN ('PROCESSING', 'REFUNDING')"
                "  OR (status = 'CANCELLED' AND provider_payment_id IS NOT NULL"
                "      AND intent_cancelled_at IS NULL)) AS paying,"
                " (SELECT count(*) FROM inbox) AS handled")
        assert busy is not None
        if busy["handled"] != last:
            last, quiet_since = busy["handled"], time.monotonic()
        at_rest = not (busy["unpublished"] or busy["open"] or busy["reserved"] or busy["sending"]
                       or busy["paying"])
        if at_rest and time.monotonic() - quiet_since >= QUIET_SECONDS:
            break
        time.sleep(0.2)
    else:
        raise RuntimeError(
            f"the saga did not come to rest within {DRAIN_TIMEOUT_SECONDS:g} s: {busy}")
    # The analytics indexer reads the topics on its own schedule: the saga at rest, it
    # still has the last events to index before the index can be compared.
    allowed = max(INDEXER_SECONDS, deadline - time.monotonic())
    behind = index_event.wait_until_indexed(stack.env["KAFKA_BOOTSTRAP_SERVERS"], allowed)
    if behind:
        raise RuntimeError(f"the analytics indexer did not catch up within {allowed:.0f} s: "
                           + (f"{behind} records behind" if behind > 0 else "Kafka silent"))


def run_checks(stack: Stack, result: load.LoadResult, strays: list[str]) -> list[Check]:
    assert stack.runtime is not None
    db = stack.runtime.db
    return [
        *outcomes(db, result),
        *tickets(db, result),
        payments(db),
        provider_money(db, stack.runtime.provider),
        *emails(db, stack.env["AWS_ENDPOINT_URL"]),
        analytics(db, stack),
        dead_letters(stack.env["KAFKA_BOOTSTRAP_SERVERS"]),
        Check("every client-visible failure fell in a fault and was retried", len(strays) + sum(
            1 for a in result.failed_attempts() if not a.recovered),
            f"{len(result.failed_attempts())} failed attempts, {len(strays)} outside a fault"
            + (f" (first: {strays[0]})" if strays else "")),
    ]


def _expected(session: load.SessionRecord, row: dict[str, Any]) -> bool:
    """The booking ended as its client's behaviour calls for (or lost a fair race)."""
    status, reason, payment = row["status"], row["reason"], row["payment"]
    if session.too_late:  # refused after its hold ran out: expired, and not charged
        return (status, reason) == ("EXPIRED", "hold_expired") and payment != "SUCCEEDED"
    if session.behaviour in {"pay", "retry_post"}:
        # paid in time: confirmed; money that raced the expiry: expired and refunded
        return (status, payment) in {("CONFIRMED", "SUCCEEDED"), ("EXPIRED", "REFUNDED")}
    if session.behaviour == "decline":
        # declined in time: cancelled; a decline that reached us after the hold ran out
        # (its webhook late or dropped, the reconciler not yet round): expired, unpaid
        return (status, reason, payment) in {("CANCELLED", "payment_failed", "FAILED"),
                                             ("EXPIRED", "hold_expired", "FAILED")}
    if session.behaviour == "cancel":
        return (status, reason) == ("CANCELLED", "user_cancelled")
    if session.behaviour == "late_pay":
        return status == "EXPIRED" and session.pay_status == 409 and payment != "SUCCEEDED"
    return (status, reason) == ("EXPIRED", "hold_expired")


def _unexpected(wrong: list[load.SessionRecord], rows: dict[str, dict[str, Any]]) -> str:
    """How the unexpected ones ended, counted by (behaviour, too late, status, reason, payment)."""
    if not wrong:
        return ""
    kinds: dict[str, int] = {}
    for s in wrong:
        r = rows[str(s.booking_id)]
        kind = (f"{s.behaviour}{' (too late)' if s.too_late else ''} ended {r['status']}"
                f" {r['reason']} with payment {r['payment']}")
        kinds[kind] = kinds.get(kind, 0) + 1
    return "; unexpected: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))


def outcomes(db: Database, result: load.LoadResult) -> list[Check]:
    with db.transaction() as tx:
        rows = {str(r["booking_id"]): r for r in tx.all(
            "SELECT b.booking_id, b.status, b.reason, p.status AS payment FROM bookings b"
            " LEFT JOIN payments p USING (booking_id)")}
    sessions = result.sessions
    lost = [s for s in sessions if s.booking_id is None or s.booking_id not in rows
            or rows[s.booking_id]["status"] in {"PENDING", "AWAITING_PAYMENT"}]
    lost_ids = {s.index for s in lost}
    found = [s for s in sessions if s.index not in lost_ids]
    wrong = [s for s in found if not _expected(s, rows[str(s.booking_id)])]
    confused = [s for s in found if s.error is not None]
    ours = {s.booking_id for s in sessions}
    extra = [b for b in rows if b not in ours]
    twice = [s for s in sessions if s.second_booking_id not in (None, s.booking_id)]
    by_end: dict[str, int] = {}
    for row in rows.values():
        by_end[row["status"]] = by_end.get(row["status"], 0) + 1
    late = sum(s.too_late for s in sessions)
    return [
        Check("lost", len(lost), f"{len(lost)} of {len(sessions)} bookings never reached a"
              " final state (or were never accepted)"),
        Check("every booking ended as its client acted", len(wrong),
              f"{len(sessions) - len(wrong) - len(lost)} as expected; {by_end}"
              + (f"; {late} paid or cancelled after the hold ran out" if late else "")
              + _unexpected(wrong, rows)),
        Check("no client saw an unexpected answer", len(confused),
              confused[0].error or "" if confused else "0 sessions with an error"),
        Check("duplicated", len(extra) + len(twice),
              f"{len(extra)} bookings no client asked for, {len(twice)} retried POSTs answered"
              " with another booking"),
    ]


def tickets(db: Database, result: load.LoadResult) -> list[Check]:
    with db.transaction() as tx:
        courses = tx.all(
            "SELECT c.course_id, c.capacity,"
            " count(*) FILTER (WHERE t.status = 'AVAILABLE') AS available,"
            " count(*) FILTER (WHERE t.status = 'RESERVED') AS reserved,"
            " count(*) FILTER (WHERE t.status = 'SOLD') AS sold,"
            " (SELECT count(*) FROM bookings b WHERE b.course_id = c.course_id"
            "  AND b.status = 'CONFIRMED') AS confirmed,"
            " (SELECT count(*) - count(DISTINCT ticket_id) FROM bookings b"
            "  WHERE b.course_id = c.course_id AND b.status = 'CONFIRMED') AS shared_tickets"
            " FROM courses c JOIN tickets t USING (course_id) GROUP BY c.course_id, c.capacity")
    oversold = sum(max(0, c["sold"] - c["confirmed"]) + c["shared_tickets"] for c in courses)
    unbalanced = sum(1 for c in courses if c["available"] + c["reserved"] + c["sold"]
                     != c["capacity"] or c["reserved"] or c["sold"] != c["confirmed"])
    figures = ", ".join(f"sold {c['sold']} = confirmed {c['confirmed']}, reserved {c['reserved']}"
                        for c in courses)
    return [Check("oversold", oversold, figures),
            Check("per course: sold == confirmed, counts add up, 0 reserved", unbalanced,
                  f"{len(courses)} courses")]


def payments(db: Database) -> Check:
    with db.transaction() as tx:
        kept = tx.scalar(
            "SELECT count(*) FROM payments p JOIN bookings b USING (booking_id)"
            " WHERE p.status = 'SUCCEEDED' AND b.status <> 'CONFIRMED'")
        unpaid = tx.scalar(
            "SELECT count(*) FROM bookings b LEFT JOIN payments p"
            " ON p.booking_id = b.booking_id AND p.status = 'SUCCEEDED'"
            " WHERE b.status = 'CONFIRMED' AND p.payment_id IS NULL")
        refunded = tx.scalar("SELECT count(*) FROM payments WHERE status = 'REFUNDED'")
    return Check("no money kept without a confirmation (or refund)", int(kept) + int(unpaid),
                 f"{kept} succeeded payments of unconfirmed bookings, {unpaid} confirmed"
                 f" without one, {refunded} refunded")


def provider_money(db: Database, provider: Any) -> Check:
    """The provider's own records: money it took is for a confirmed booking, or given back.

    Every intent at the provider is read: ours (by the payment's intent id) must
    have succeeded exactly for confirmed bookings, with no refund, and every other
    one that succeeded must be refunded once, in full; an intent we never recorded
    (a stray of two concurrent opens) must not have taken money.
    """
    client = provider.client
    with db.transaction() as tx:
        ours = {r["provider_payment_id"]: r for r in tx.all(
            "SELECT p.provider_payment_id, p.amount_cents, b.status FROM payments p"
            " JOIN bookings b USING (booking_id) WHERE p.provider_payment_id IS NOT NULL")}
    intents, after = [], None
    while True:
        params: dict[str, Any] = {"limit": 100, **({"starting_after": after} if after else {})}
        page = client.v1.payment_intents.list(params=params)
        intents += page.data
        if not page.has_more or not page.data:
            break
        after = page.data[-1].id
    wrong: list[str] = []
    kept = returned = 0
    for intent in intents:
        if intent.status != "succeeded":
            continue  # it took no money
        row = ours.get(intent.id)
        refunds = [r for r in client.v1.refunds.list(params={"payment_intent": intent.id}).data
                   if r.status == "succeeded"]
        back = sum(r.amount for r in refunds)
        if row is not None and row["status"] == "CONFIRMED":
            kept += 1
            if refunds:
                wrong.append(f"{intent.id}: refunded but its booking is confirmed")
        else:
            returned += 1
            if len(refunds) != 1 or back != intent.amount:
                wrong.append(f"{intent.id}: took {intent.amount} for a booking that is"
                             f" {row['status'] if row else 'unknown'}, gave back {back}"
                             f" in {len(refunds)} refunds")
    confirmed = sum(1 for r in ours.values() if r["status"] == "CONFIRMED")
    unpaid = confirmed - kept
    return Check("the provider's records: money only for confirmations, the rest refunded",
                 len(wrong) + max(0, unpaid),
                 f"{len(intents)} intents, {kept} paid for confirmed bookings, {returned}"
                 f" refunded, {max(0, unpaid)} confirmed without the provider's money"
                 + (f" (first: {wrong[0]})" if wrong else ""))


def _confirmation_ledger(db: Database) -> tuple[list[dict[str, Any]], set[str]]:
    with db.transaction() as tx:
        ledger = tx.all(
            "SELECT o.record_key, n.provider_message_id, n.status FROM notifications n"
            " LEFT JOIN outbox o ON o.event_id = n.event_id"
            " WHERE n.template = 'booking_confirmed' AND n.channel = 'email'")
        confirmed = {str(r["booking_id"]) for r in tx.all(
            "SELECT booking_id FROM bookings WHERE status = 'CONFIRMED'")}
    return ledger, confirmed


def emails(db: Database, aws_url: str) -> list[Check]:
    # The notifier keeps no inbox row, so the drain cannot see it catch up: give it a moment.
    deadline = time.monotonic() + 30
    ledger, confirmed = _confirmation_ledger(db)
    while len(ledger) < len(confirmed) and time.monotonic() < deadline:
        time.sleep(0.5)
        ledger, confirmed = _confirmation_ledger(db)
    per_booking: dict[str, int] = {}
    for row in ledger:
        key = bytes(row["record_key"]).decode() if row["record_key"] is not None else "?"
        per_booking[key] = per_booking.get(key, 0) + 1
    sent = requests.get(f"{aws_url}/moto-api/data.json", timeout=30).json()["ses"]["Message"]
    at_endpoint = {m["id"] for m in sent}
    ours = [r["provider_message_id"] for r in ledger]
    missing = [b for b in confirmed if per_booking.get(b, 0) == 0]
    twice = [b for b, n in per_booking.items() if n > 1]
    unsent = [r for r in ledger if r["status"] != "SENT"
              or r["provider_message_id"] not in at_endpoint]
    repeated = len(ours) - len(set(ours))
    return [
        Check("exactly one confirmation email per confirmed booking",
              len(missing) + len(unsent), f"{len(ledger)} in the ledger for {len(confirmed)}"
              f" confirmed bookings, {len(missing)} missing, {len(unsent)} not at the endpoint"),
        Check("no email sent twice", len(twice) + repeated,
              f"{len(twice)} bookings mailed twice, {len(at_endpoint)} messages at the endpoint"),
    ]


def analytics(db: Database, stack: Stack) -> Check:
    es = search.client(stack.env["ELASTICSEARCH_URL"],
                       stack.env.get("ELASTICSEARCH_SERVER_MODE", "stack"))
    deadline = time.monotonic() + 30
    found = consistency.differences(db, es)
    while found and time.monotonic() < deadline:  # the index refreshes on its own schedule
        time.sleep(0.5)
        found = consistency.differences(db, es)
    return Check("the analytics consistency check is clean", len(found),
                 "; ".join(found[:3]) or "summary == PostgreSQL")


def dead_letters(bootstrap: str) -> Check:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             group_id=None, consumer_timeout_ms=2000)
    try:
        partitions = [TopicPartition(DEAD_LETTER_TOPIC, p)
                      for p in sorted(consumer.partitions_for_topic(DEAD_LETTER_TOPIC) or [])]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records = list(consumer)
    finally:
        consumer.close()
    kinds = sorted({dict(r.headers).get("ce_type", b"?").decode() for r in records})
    return Check("the dead-letter topic holds nothing the faults caused", len(records),
                 f"{len(records)} records {kinds if kinds else ''}".strip())
