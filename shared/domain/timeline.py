"""A booking's saga as history: each event, who emitted it, who handled it and when, what was sent.

Read from what outlives the outbox (pruned after 24 h): `event_log`, every
event a function emitted (the database copies each new outbox row there);
the inbox, every event a reaction handled, with its subject, so events no
outbox ever held (the hold-expiry watcher's) are found too; the
notifications ledger, the emails and texts, which is also how
`send_notifications` shows as a handler; and the dead letters. The analytics
indexer keeps nothing in PostgreSQL, so it is never listed as a handler.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.runtime.db import Row, Tx

FUNCTION_SOURCE_PREFIX = "/marketplace/functions/"
NOTIFIER = "send_notifications"


class _Model(BaseModel):
    model_config = ConfigDict(defer_build=True)  # built on first use, not at a cold start


class Handling(_Model):
    function: str = Field(description="the function that handled the event")
    at: datetime = Field(description="when its handling was committed")


class SentMessage(_Model):
    channel: Literal["email", "sms"]
    template: str
    subject: str
    status: Literal["SENDING", "SENT", "RETRYING", "FAILED"]
    at: datetime


class DeadLettered(_Model):
    function: str = Field(description="the function the event failed in")
    code: int = Field(description="its HTTP answer (0: no answer)")
    reason: str
    status: Literal["DEAD", "REDRIVEN"]
    at: datetime


class TimelineEvent(_Model):
    event_id: str
    time: datetime = Field(description="the CloudEvent's time, set by its emitter")
    type: str
    emitted_by: str = Field(description="the function that emitted it (else its CloudEvent source)")
    trace_id: str | None = None
    handled_by: list[Handling]
    messages: list[SentMessage]
    dead_lettered: list[DeadLettered]


class Timeline(_Model):
    booking_id: str
    status: str
    events: list[TimelineEvent]


def function_of(source: str) -> str:
    """`/marketplace/functions/reserve-ticket` -> `reserve_ticket`; any other source as it is."""
    if source.startswith(FUNCTION_SOURCE_PREFIX):
        return source.removeprefix(FUNCTION_SOURCE_PREFIX).strip("/").replace("-", "_")
    return source


_EVENTS = """
SELECT event_id, event_type, source, event_time, trace_id FROM event_log WHERE subject = :s
UNION ALL
SELECT DISTINCT ON (event_id) event_id, event_type, coalesce(source, ''),
       coalesce(event_time, handled_at), NULL
  FROM inbox i
 WHERE subject = :s AND NOT EXISTS (SELECT 1 FROM event_log l WHERE l.event_id = i.event_id)
"""


def read(tx: Tx, booking: Row) -> Timeline:
    """The timeline of `booking` (a row of `bookings`), oldest event first."""
    subject = str(booking["booking_id"])
    events = sorted(tx.all(_EVENTS, s=subject), key=lambda r: (r["event_time"], r["event_id"]))
    ids = [r["event_id"] for r in events]
    handled = _by_event(tx.all(
        "SELECT event_id, consumer, handled_at FROM inbox WHERE subject = :s"
        " ORDER BY handled_at, consumer", s=subject))
    messages = _by_event(tx.all(
        "SELECT event_id, channel, template, subject, status, updated_at FROM notifications"
        " WHERE event_id = ANY(CAST(:ids AS text[])) ORDER BY created_at, channel", ids=ids))
    dead = _by_event(tx.all(
        "SELECT event_id, function, error_code, reason, status, last_failed_at FROM dead_letters"
        " WHERE subject = :s ORDER BY last_failed_at", s=subject))
    return Timeline(booking_id=subject, status=booking["status"], events=[
        _event(row, handled.get(row["event_id"], []), messages.get(row["event_id"], []),
               dead.get(row["event_id"], []))
        for row in events
    ])


def _by_event(rows: list[Row]) -> dict[str, list[Row]]:
    grouped: dict[str, list[Row]] = {}
    for row in rows:
        grouped.setdefault(row["event_id"], []).append(row)
    return grouped


def _event(row: Row, handled: list[Row], messages: list[Row], dead: list[Row]) -> TimelineEvent:
    handlings = [Handling(function=h["consumer"], at=h["handled_at"]) for h in handled]
    if messages:  # the notifier keeps a ledger, not an inbox row
        handlings.append(Handling(function=NOTIFIER, at=max(m["updated_at"] for m in messages)))
    fields: dict[str, Any] = {
        "event_id": row["event_id"], "time": row["event_time"], "type": row["event_type"],
        "emitted_by": function_of(row["source"]), "trace_id": row["trace_id"],
        "handled_by": sorted(handlings, key=lambda h: h.at),
        "messages": [SentMessage(channel=m["channel"], template=m["template"],
                                 subject=m["subject"], status=m["status"], at=m["updated_at"])
                     for m in messages],
        "dead_lettered": [DeadLettered(function=d["function"], code=d["error_code"],
                                       reason=d["reason"], status=d["status"],
                                       at=d["last_failed_at"]) for d in dead],
    }
    return TimelineEvent(**fields)
