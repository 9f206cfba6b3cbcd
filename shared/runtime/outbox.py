"""The transactional outbox: events are rows first, Kafka records second.

A function writes the events it emits into `outbox` in the same transaction
as its state change. After commit the runtime publishes exactly those rows;
the relay publishes whatever a crash left behind. A row is marked published
only after the broker acknowledged it, so nothing is lost; a crash between
the acknowledgement and the mark re-sends the record with the same CloudEvent
id, which every consumer's inbox drops.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any, Protocol

from shared.runtime.db import Database, Tx
from shared.runtime.envelope import Envelope, KafkaRecord, to_kafka

log = logging.getLogger(__name__)


class Producer(Protocol):
    def send_all(self, records: list[KafkaRecord]) -> None:
        """Send and wait until every record is acknowledged, or raise."""


def write(tx: Tx, envelopes: Iterable[Envelope[Any]]) -> list[str]:
    """Add the envelopes to the outbox; an id already there is kept as it was."""
    ids = []
    for envelope in envelopes:
        record = to_kafka(envelope)
        tx.execute(
            "INSERT INTO outbox (event_id, topic, record_key, value, headers)"
            " VALUES (:id, :topic, :key, :value, CAST(:headers AS jsonb))"
            " ON CONFLICT (event_id) DO NOTHING",
            id=envelope.id,
            topic=record.topic,
            key=record.key,
            value=record.value,
            headers=json.dumps([[n, v.decode()] for n, v in record.headers]),
        )
        ids.append(envelope.id)
    return ids


def _record(row: dict[str, Any]) -> KafkaRecord:
    headers = [(str(n), str(v).encode()) for n, v in row["headers"]]
    return KafkaRecord(row["topic"], bytes(row["record_key"]), bytes(row["value"]), headers)


def publish(db: Database, producer: Producer, ids: list[str] | None = None,
            older_than_seconds: float = 0.0, limit: int = 500) -> int:
    """Publish unpublished rows (the given ids, or all older than a moment) and mark them.

    Rows another publisher is already sending are skipped (`SKIP LOCKED`), so
    the request path and the relay do not both send the same row.
    """
    if ids is not None and not ids:
        return 0
    with db.transaction() as tx:
        if ids is not None:
            rows = tx.all(
                "SELECT event_id, topic, record_key, value, headers FROM outbox"
                " WHERE event_id = ANY(CAST(:ids AS text[])) AND published_at IS NULL"
                " ORDER BY created_at FOR UPDATE SKIP LOCKED",
                ids=ids,
            )
        else:
            rows = tx.all(
                "SELECT event_id, topic, record_key, value, headers FROM outbox"
                " WHERE published_at IS NULL"
                " AND created_at < clock_timestamp() - make_interval(secs => :age)"
                " ORDER BY created_at LIMIT :limit FOR UPDATE SKIP LOCKED",
                age=older_than_seconds,
                limit=limit,
            )
        if not rows:
            return 0
        producer.send_all([_record(r) for r in rows])
        tx.execute(
            "UPDATE outbox SET published_at = clock_timestamp()"
            " WHERE event_id = ANY(CAST(:ids AS text[]))",
            ids=[r["event_id"] for r in rows],
        )
        return len(rows)


def prune(db: Database, keep_hours: float = 24.0) -> int:
    """Forget published rows after a while; the inbox keeps consumers idempotent."""
    with db.transaction() as tx:
        return tx.execute(
            "DELETE FROM outbox"
            " WHERE published_at < now() - CAST(:h AS float8) * interval '1 hour'",
            h=keep_hours,
        )
