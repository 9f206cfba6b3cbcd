"""Helpers for feeding CloudEvents to functions and reading what they did."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import flask
from functions_framework import create_app

from shared.runtime.bootstrap import Runtime
from shared.runtime.db import Row
from shared.runtime.routing import source_path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"

# The ids the recorded fixtures use.
BOOKING = uuid.UUID("b0000000-0000-4000-8000-000000000001")
COURSE = uuid.UUID("c0000000-0000-4000-8000-000000000001")
USER = uuid.UUID("a0000000-0000-4000-8000-000000000001")
AUTHOR = uuid.UUID("a0000000-0000-4000-8000-0000000000a1")


@cache
def app(target: str) -> flask.Flask:
    """The function's app, created from its own module as its Knative Service does."""
    return create_app(target, str(source_path(target)))


def fixture(name: str, **data: Any) -> dict[str, Any]:
    """A recorded structured-mode CloudEvent from tests/fixtures, data fields overridable."""
    event: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    if isinstance(event.get("data"), dict):
        event["data"].update({k: str(v) if isinstance(v, uuid.UUID) else v
                              for k, v in data.items()})
    return event


def post(target: str, event: dict[str, Any], mode: str = "binary") -> Any:
    """POST an event to a function the way KafkaSource (binary) or a person (structured) does."""
    client = app(target).test_client()
    if mode == "structured":
        return client.post("/", data=json.dumps(event),
                           headers={"Content-Type": "application/cloudevents+json"})
    headers = {f"ce-{k}": str(v) for k, v in event.items() if k not in {"data", "datacontenttype"}}
    headers["Content-Type"] = event.get("datacontenttype", "application/json")
    body = event.get("data")
    raw = body if isinstance(body, str) else json.dumps(body)
    return client.post("/", data=raw, headers=headers)


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
