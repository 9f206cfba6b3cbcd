"""The database of a test: a course and a booking to start from, and what the functions wrote.

Seeded with SQL of its own rather than through the functions, so a test of one function
does not depend on every function before it in the saga.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.runtime.bootstrap import Runtime
from shared.runtime.db import Row
from tests.helpers.events import AUTHOR, BOOKING, COURSE, USER


def outbox(rt: Runtime, topic: str | None = None) -> list[dict[str, Any]]:
    """Events emitted so far, decoded, oldest first."""
    with rt.db.transaction() as tx:
        rows = tx.all("SELECT topic, value, headers FROM outbox ORDER BY created_at")
    return [
        {"topic": r["topic"], "data": json.loads(bytes(r["value"])),
         "headers": dict(r["headers"])}
        for r in rows if topic is None or r["topic"] == topic
    ]


def row(rt: Runtime, sql: str, **params: Any) -> Row | None:
    with rt.db.transaction() as tx:
        return tx.one(sql, **params)


def scalar(rt: Runtime, sql: str, **params: Any) -> Any:
    with rt.db.transaction() as tx:
        return tx.scalar(sql, **params)


def seed_course(rt: Runtime, capacity: int = 3, status: str = "ACTIVE",
                course_id: uuid.UUID = COURSE, price_cents: int = 4900) -> uuid.UUID:
    with rt.db.transaction() as tx:
        tx.execute(
            "INSERT INTO courses (course_id, author_id, title, price_cents, currency, starts_at,"
            " capacity, status) VALUES (:c, :a, 'Event sourcing', :p, 'EUR', :s, :cap, :st)",
            c=course_id, a=AUTHOR, p=price_cents, s=datetime.now(UTC) + timedelta(days=30),
            cap=capacity, st=status,
        )
        tx.execute("INSERT INTO tickets (ticket_id, course_id)"
                   " SELECT gen_random_uuid(), :c FROM generate_series(1, :n)",
                   c=course_id, n=capacity)
    return course_id


def seed_booking(rt: Runtime, booking_id: uuid.UUID = BOOKING, course_id: uuid.UUID = COURSE,
                 user_id: uuid.UUID = USER) -> uuid.UUID:
    with rt.db.transaction() as tx:
        tx.execute("INSERT INTO bookings (booking_id, course_id, user_id) VALUES (:b, :c, :u)",
                   b=booking_id, c=course_id, u=user_id)
    return booking_id


def ticket_counts(rt: Runtime, course_id: uuid.UUID = COURSE) -> dict[str, int]:
    with rt.db.transaction() as tx:
        rows = tx.all("SELECT status, count(*) AS n FROM tickets WHERE course_id = :c"
                      " GROUP BY status", c=course_id)
    counts = {"AVAILABLE": 0, "RESERVED": 0, "SOLD": 0}
    counts.update({r["status"]: r["n"] for r in rows})
    return counts
