"""The transactional outbox: events are rows first, Kafka records second.

A function writes the events it emits into `outbox` in the same transaction
as its state change. After commit the runtime sends exactly those records,
from memory, and the relay sends whatever a crash left behind. A row is
marked published only after the broker acknowledged it, so nothing is lost;
a crash between the acknowledgement and the mark re-sends the record with the
same CloudEvent id, which every consumer's inbox drops.

The marks are written in batches by `PublishedMarks`, off the request path:
one UPDATE for every row acknowledged in the last few milliseconds instead of
a second transaction per event (four round trips: begin, lock, update,
commit). The relay only looks at rows older than a grace period, longer
than a batch takes, so it does not race the request path in normal running.
"""

from __future__ import annotations

import atexit
import json
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from shared.runtime.db import Database, Tx
from shared.runtime.envelope import Envelope, KafkaRecord, to_kafka

log = logging.getLogger(__name__)


class Producer(Protocol):
    def send_all(self, records: list[KafkaRecord]) -> None:
        """Send and wait until every record is acknowledged, or raise."""


@dataclass(frozen=True)
class Outgoing:
    """A row just written to the outbox, and the record to send once it is committed."""

    event_id: str
    record: KafkaRecord


def write(tx: Tx, envelopes: Iterable[Envelope[Any]]) -> list[Outgoing]:
    """Add the envelopes to the outbox; an id already there is kept as it was."""
    written = []
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
        written.append(Outgoing(envelope.id, record))
    return written


MAX_KEPT_MARKS = 10_000


class PublishedMarks:
    """Marks acknowledged rows published, many per statement, in a thread of its own.

    `add` never waits for the database. A batch that fails (PostgreSQL
    restarting) is tried again with the next one; rows a crash left unmarked
    are sent again by the relay, harmlessly. At exit the last batch is written.
    """

    def __init__(self, db: Database, linger_seconds: float = 0.02) -> None:
        self._db = db
        self._linger = linger_seconds
        self._pending: list[str] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._writing = False
        self._stopping = False

    def add(self, ids: Iterable[str]) -> None:
        with self._cond:
            self._pending.extend(ids)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="outbox-marks",
                                                daemon=True)
                self._thread.start()
                atexit.register(self.close)
            self._cond.notify()

    def flush(self, timeout: float = 10.0) -> None:
        """Write every mark added so far (tests, and before the process exits)."""
        with self._cond:
            self._cond.notify()
            self._cond.wait_for(lambda: not self._pending and not self._writing, timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._stopping)
                if not self._pending and self._stopping:
                    return
            if self._linger:
                threading.Event().wait(self._linger)  # let concurrent answers join the batch
            with self._cond:
                ids, self._pending = self._pending, []
                self._writing = True
            try:
                mark_published(self._db, ids)
            except Exception as exc:
                log.warning("marking %d outbox row(s) published failed: %s", len(ids), exc)
                with self._cond:
                    # kept for the next batch, within bounds: the relay re-sends the rest
                    self._pending[:0] = ids[-MAX_KEPT_MARKS:]
                    self._writing = False
                    self._cond.notify_all()
                threading.Event().wait(0.5)
                continue
            with self._cond:
                self._writing = False
                self._cond.notify_all()

    def close(self) -> None:
        self.flush()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()


def mark_published(db: Database, ids: list[str]) -> None:
    with db.transaction() as tx:
        tx.execute(
            "UPDATE outbox SET published_at = clock_timestamp()"
            " WHERE event_id = ANY(CAST(:ids AS text[])) AND published_at IS NULL",
            ids=ids,
        )


def _record(row: dict[str, Any]) -> KafkaRecord:
    headers = [(str(n), str(v).encode()) for n, v in row["headers"]]
    return KafkaRecord(row["topic"], bytes(row["record_key"]), bytes(row["value"]), headers)


def waiting(db: Database, older_than_seconds: float = 0.0) -> bool:
    """Whether any row older than a moment is unpublished (is there work for the relay?).

    One probe of the partial index on unpublished rows: no lock, no row read.
    """
    with db.transaction() as tx:
        return bool(tx.scalar(
            "SELECT EXISTS (SELECT 1 FROM outbox WHERE published_at IS NULL"
            " AND created_at < clock_timestamp() - make_interval(secs => :age))",
            age=older_than_seconds))


def publish(db: Database, producer: Producer, older_than_seconds: float = 0.0,
            limit: int = 500) -> int:
    """Publish unpublished rows older than a moment, and mark them (the relay's work).

    Rows another relay is already sending are skipped (`SKIP LOCKED`).
    """
    with db.transaction() as tx:
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
