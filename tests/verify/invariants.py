"""What must hold in every history of the saga: after every step, and at rest."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable

from shared.domain.bookings import TERMINAL
from shared.domain.notifications import TRIGGERS
from shared.runtime.db import Tx

NOTIFIED_TOPICS = [t.topic for t in TRIGGERS]
# The events that close a booking, and the status each one announces.
CLOSING = {"booking.confirmed": "CONFIRMED", "booking.rejected": "REJECTED",
           "booking.cancelled": "CANCELLED", "booking.expired": "EXPIRED"}


def tables(tx: Tx, names: Iterable[str]) -> list[str]:
    present = {r["tablename"] for r in tx.all(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    return [n for n in names if n in present]


def always(tx: Tx, seen: dict[uuid.UUID, str],
           sends: Counter[tuple[str, str, str, str]]) -> str | None:
    """The first invariant broken now, or None.

    `seen` remembers each booking's status; `sends` counts the messages the mail
    provider took, by what they say (one per event and channel).
    """
    twice_sent = [m for m, count in sends.items() if count > 1]
    if twice_sent:
        channel, recipient, template, _ = twice_sent[0]
        return f"the {template} {channel} to {recipient} was sent twice"
    twice = tx.all("SELECT ticket_id FROM bookings WHERE status = 'CONFIRMED'"
                   " GROUP BY ticket_id HAVING count(*) > 1")
    if twice:
        return f"ticket {twice[0]['ticket_id']} is sold to two confirmed bookings"
    for r in tx.all(
            "SELECT c.course_id, c.capacity, count(t.*) FILTER (WHERE t.status IN"
            " ('AVAILABLE', 'RESERVED', 'SOLD')) AS n FROM courses c"
            " LEFT JOIN tickets t USING (course_id) GROUP BY c.course_id, c.capacity"):
        if r["n"] != r["capacity"]:
            return (f"course {r['course_id']}: available+reserved+sold = {r['n']}"
                    f" != {r['capacity']}")
    held = tx.all("SELECT t.ticket_id, t.status, b.status AS booking FROM tickets t"
                  " LEFT JOIN bookings b ON b.booking_id = t.booking_id"
                  " WHERE t.status <> 'AVAILABLE'")
    for r in held:
        if r["booking"] is None:
            return f"{r['status']} ticket {r['ticket_id']} belongs to no booking"
        if r["status"] == "SOLD" and r["booking"] != "CONFIRMED":
            return f"sold ticket {r['ticket_id']} belongs to a {r['booking']} booking"
    for r in tx.all("SELECT booking_id, status FROM bookings"):
        before = seen.get(r["booking_id"])
        if before in TERMINAL and r["status"] != before:
            return (f"booking {r['booking_id']} was {before}, a final status,"
                    f" and is now {r['status']}")
        seen[r["booking_id"]] = r["status"]
    for r in tx.all(
            "SELECT convert_from(o.record_key, 'UTF8') AS booking, array_agg(o.topic) AS said,"
            " min(b.status) AS status FROM outbox o JOIN bookings b ON b.booking_id ="
            " CAST(convert_from(o.record_key, 'UTF8') AS uuid) WHERE o.topic = ANY(:closing)"
            " GROUP BY 1", closing=list(CLOSING)):
        said = sorted(r["said"])
        if len(said) > 1 or CLOSING[said[0]] != r["status"]:
            return f"booking {r['booking']} is {r['status']} and its events say {said}"
    for r in tx.all(
            "SELECT b.booking_id, b.amount_cents, count(p.*) FILTER (WHERE p.status ="
            " 'SUCCEEDED' AND p.amount_cents = b.amount_cents) AS paid FROM bookings b"
            " LEFT JOIN payments p USING (booking_id) WHERE b.status = 'CONFIRMED'"
            " GROUP BY b.booking_id, b.amount_cents"):
        if r["paid"] != 1:
            return (f"confirmed booking {r['booking_id']} has {r['paid']} succeeded payments"
                    f" of its amount {r['amount_cents']}")
    return None


def at_rest(tx: Tx, provider_net: int) -> str | None:
    """What must hold once nothing is left to happen."""
    confirmed = tx.scalar("SELECT coalesce(sum(amount_cents), 0) FROM bookings"
                          " WHERE status = 'CONFIRMED'")
    net = tx.scalar("SELECT coalesce(sum(amount_cents) FILTER (WHERE status IN"
                    " ('SUCCEEDED', 'REFUNDING')), 0) FROM payments")
    if provider_net != confirmed:
        return (f"the provider holds {provider_net} net, confirmed bookings cost {confirmed}"
                f" (our payments say {net})")
    if net != confirmed:
        return f"our payments hold {net} not refunded, confirmed bookings cost {confirmed}"
    for r in tx.all("SELECT booking_id, status, hold_expires_at > now() AS live FROM bookings"
                    " WHERE status NOT IN ('CONFIRMED', 'REJECTED', 'CANCELLED', 'EXPIRED')"):
        if not (r["status"] == "AWAITING_PAYMENT" and r["live"]):
            return f"booking {r['booking_id']} rests {r['status']} without a live hold"
    stray = tx.all("SELECT t.ticket_id, b.status FROM tickets t JOIN bookings b"
                   " USING (booking_id) WHERE t.status = 'RESERVED'"
                   " AND b.status NOT IN ('PENDING', 'AWAITING_PAYMENT')")
    if stray:
        return f"ticket {stray[0]['ticket_id']} stays reserved for a {stray[0]['status']} booking"
    unsent = tx.all("SELECT o.topic, o.event_id FROM outbox o WHERE o.topic = ANY(:t)"
                    " AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.event_id ="
                    " o.event_id AND n.channel = 'email' AND n.status = 'SENT')",
                    t=NOTIFIED_TOPICS)
    if unsent:
        return f"no email was sent for {unsent[0]['topic']} {unsent[0]['event_id']}"
    unsettled = tx.all("SELECT event_type, channel, status FROM notifications"
                       " WHERE status <> 'SENT'")
    if unsettled:
        r = unsettled[0]
        return f"the {r['channel']} for a {r['event_type']} rests {r['status']}"
    return None
