"""Every event on every topic becomes a document in the analytics index, read from Kafka in bulk.

A schedule, not a subscription: a KafkaSource would POST each event here on its
own (five of a paid booking's eleven deliveries), while an index needs the
events soon, not one by one. So each tick (a PingSource, once a minute in a
cluster; every `INDEX_INTERVAL_SECONDS` locally) reads what the topics hold
past the committed offsets and indexes it a few hundred documents per `_bulk`
call, until it has caught up or spent its budget.

What holds, as it did under the KafkaSource:

- at least once: offsets are committed only after their `_bulk` call
  succeeded. The document id is the CloudEvent id, so a record read twice (a
  crash before the commit, an event produced twice) overwrites its own
  document and no figure counts it twice; no inbox is needed;
- nothing stalls: a record that is no event of ours, or a document the cluster
  refuses for good, goes to the dead-letter topic as the KafkaSource would
  have sent it (the same extensions: this function, the code, the reason), and
  its partition moves on;
- an outage waits: the search cluster, PostgreSQL or Kafka down answers 503
  with nothing committed past what was indexed, and the next tick starts again
  from there.

The consumer group is the one the KafkaSource used, so its committed offsets
carry over. Its partitions are assigned by hand: no group membership, so no
rebalance and no heartbeat between ticks (a second pod would only repeat work
the document ids make harmless). Events that name only their booking get its
course and user from `bookings`, so every figure splits per course.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.adapters import search
from shared.domain.events import DEAD_LETTER_TOPIC, REGISTRY, Event
from shared.runtime import tracing
from shared.runtime.bootstrap import Runtime, runtime
from shared.runtime.config import settings
from shared.runtime.envelope import Envelope, KafkaRecord, from_kafka
from shared.runtime.errors import TransientError, is_outage
from shared.runtime.reactions import scheduled_effect, source_of

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from shared.adapters.cluster import Cluster
    from shared.runtime.kafka import KafkaPublisher

log = logging.getLogger("marketplace.index_event")

TARGET = "index_event"
NAME = "index-event"
GROUP = "marketplace-index-event"  # the KafkaSource's consumerGroup: its offsets carry over
BULK_SIZE = 300  # records per poll, and so documents per `_bulk` call
BUDGET_SECONDS = 20.0  # a tick answers by then, caught up or not (the Service times out at 60)
# An empty fetch is held by the broker this long; a poll waits less, so a tick with
# nothing to read sends one fetch and answers, and one with records gets them at once.
FETCH_WAIT_MS = 250
POLL_MS = 100
SILENCE_SECONDS = 5.0  # no broker connection for this long in a tick: Kafka is unreachable
CONNECT_SECONDS = 5.0
COMMIT_TIMEOUT_MS = 10_000
ERROR_DATA_LIMIT = 1024  # what Knative keeps of an answer in knativeerrordata

Documents = list[dict[str, Any]]
Headers = list[tuple[str, bytes]]


def enrich(docs: Documents) -> None:
    """Add course_id and user_id from `bookings` where the event names only the booking."""
    wanted = sorted({d["booking_id"] for d in docs
                     if d.get("booking_id") and not (d.get("course_id") and d.get("user_id"))})
    if not wanted:
        return
    with runtime().db.transaction() as tx:
        rows = tx.all("SELECT booking_id, course_id, user_id FROM bookings"
                      " WHERE booking_id = ANY(CAST(:ids AS uuid[]))", ids=wanted)
    known = {str(r["booking_id"]): r for r in rows}
    for doc in docs:
        row = known.get(doc.get("booking_id", ""))
        if row is not None:
            doc.setdefault("course_id", str(row["course_id"]))
            doc.setdefault("user_id", str(row["user_id"]))


@dataclass
class Progress:
    """What one tick did: the figures of its log line and of the tests."""

    read: int = 0
    indexed: int = 0
    dead_lettered: int = 0
    caught_up: bool = False
    busy: bool = False  # another tick of this process was running: this one did nothing


@dataclass(frozen=True)
class _Read:
    """A record and what became of it once decoded: a document, or why it is a dead letter."""

    record: Any
    envelope: Envelope[Event] | None = None
    document: dict[str, Any] | None = None
    code: int = 0
    reason: str = ""


class Indexer:
    """The topics' reader: one consumer kept between ticks, one tick at a time.

    Created on the first tick and kept, since making a consumer (a bootstrap,
    the group's offsets) costs more than a tick with nothing to read.
    """

    def __init__(self, bootstrap: str, topics: Iterable[str] = tuple(REGISTRY),
                 group: str = GROUP, dead_letter_topic: str = DEAD_LETTER_TOPIC,
                 es: Callable[[], Elasticsearch | Cluster] | None = None,
                 enrich: Callable[[Documents], None] = enrich) -> None:
        self.bootstrap = bootstrap
        self.topics = tuple(topics)
        self.group = group
        self.dead_letter_topic = dead_letter_topic
        self._es = es or (lambda: search.cluster())
        self._enrich = enrich
        self._consumer: Any = None
        self._publisher: KafkaPublisher | None = None
        self._destination = ""
        # Offsets past records indexed whose commit failed: committed first next tick.
        self._indexed: dict[Any, int] = {}
        self._lock = threading.Lock()

    # --- a tick -----------------------------------------------------------------------

    def tick(self, budget: float = BUDGET_SECONDS) -> Progress:
        """Index what the topics hold past the committed offsets, until caught up or `budget`.

        Raises TransientError (503: the next tick tries again) for Kafka or the
        search cluster unreachable; whatever was indexed before stays committed.
        """
        if not self._lock.acquire(blocking=False):
            return Progress(busy=True)  # a slow tick and a ping overlapping: one is enough
        try:
            return self._tick(budget)
        finally:
            self._lock.release()

    def _tick(self, budget: float) -> Progress:
        from kafka.errors import KafkaError  # type: ignore[import-untyped,unused-ignore]

        started = time.monotonic()
        progress = Progress()
        try:
            consumer = self._connect()
            self._commit(consumer, {})  # what an earlier tick indexed but could not commit
            while time.monotonic() - started < budget:
                batch = consumer.poll(timeout_ms=POLL_MS, max_records=BULK_SIZE)
                if batch:
                    self._index(consumer, batch, progress)
                    continue
                unanswered = [tp for tp in consumer.assignment() if consumer.highwater(tp) is None]
                if not unanswered and _connected(consumer):
                    progress.caught_up = True  # or records came after the poll: next tick
                    break
                if time.monotonic() - started > SILENCE_SECONDS:
                    which = f" for {len(unanswered)} partitions" if unanswered else ""
                    raise TransientError(f"Kafka ({self.bootstrap}) does not answer{which}")
        except KafkaError as exc:
            self._drop()  # started again from the committed offsets: at worst, work repeated
            raise TransientError(f"Kafka: {type(exc).__name__}: {exc}") from exc
        log.debug("%s: read %d, indexed %d, dead-lettered %d, %s in %.0f ms", TARGET,
                  progress.read, progress.indexed, progress.dead_lettered,
                  "caught up" if progress.caught_up else "not caught up yet",
                  (time.monotonic() - started) * 1000)
        return progress

    def _index(self, consumer: Any, batch: dict[Any, list[Any]], progress: Progress) -> None:
        """Index one polled batch, dead-letter what cannot be, then commit past all of it.

        On any failure every partition of the batch is sought back to its first
        record: the consumer's position must not run ahead of what was indexed.
        """
        from kafka.errors import KafkaError

        started_ns = time.time_ns()
        records = [record for rows in batch.values() for record in rows]
        progress.read += len(records)
        try:
            reads = [_decode(record) for record in records]
            indexable = [r for r in reads if r.document is not None]
            self._enrich([r.document for r in indexable if r.document is not None])
            refused = search.bulk_index(
                self._es(), [(r.envelope.id, r.document) for r in indexable
                             if r.envelope is not None and r.document is not None])
            refusals = {id(r): why for r, why in zip(indexable, refused, strict=True) if why}
            dead = [r if id(r) not in refusals else _Read(
                r.record, r.envelope, None, 422, f"not indexable: {refusals[id(r)]}")
                for r in reads if r.document is None or id(r) in refusals]
            self._dead_letter(dead)
        except Exception as exc:
            for tp, rows in batch.items():
                consumer.seek(tp, rows[0].offset)
            if isinstance(exc, search.SearchUnavailable):
                raise TransientError(f"the search cluster: {exc}") from exc
            if isinstance(exc, KafkaError):
                raise TransientError(f"the dead-letter topic: {exc}") from exc
            if is_outage(exc):
                raise TransientError(f"the database: {type(exc).__name__}: {exc}") from exc
            raise
        progress.indexed += len(indexable) - len(refusals)
        progress.dead_lettered += len(dead)
        _trace(reads, refusals, started_ns)
        self._commit(consumer, {tp: rows[-1].offset + 1 for tp, rows in batch.items()})

    # --- Kafka --------------------------------------------------------------------------

    def _connect(self) -> Any:
        """The kept consumer, or a new one assigned every partition of the topics."""
        if self._consumer is not None:
            return self._consumer
        # kafka-python starts an IO thread before it bootstraps, and a failed bootstrap
        # leaves it running: a broker that is not even listening is found out first.
        if not _listening(self.bootstrap):
            raise TransientError(f"Kafka ({self.bootstrap}) is unreachable")
        from kafka import KafkaConsumer, TopicPartition  # type: ignore[import-untyped,unused-ignore]

        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap.split(","),
            client_id=f"marketplace-{NAME}",
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # the KafkaSource's initialOffset
            fetch_max_wait_ms=FETCH_WAIT_MS,
            max_poll_records=BULK_SIZE,
            bootstrap_timeout_ms=int(CONNECT_SECONDS * 1000),
            # kafka-python's sensors cost CPU on every fetch, and nobody reads them
            metrics_enabled=False,
        )
        try:
            partitions = [TopicPartition(topic, p) for topic in self.topics
                          for p in sorted(consumer.partitions_for_topic(topic))]
        except BaseException:
            consumer.close(autocommit=False)
            raise
        missing = sorted(set(self.topics) - {tp.topic for tp in partitions})
        if missing:  # created by the topics Job or the local stack; not ours to create
            consumer.close(autocommit=False)
            raise TransientError(f"topics not created yet: {', '.join(missing)}")
        consumer.assign(partitions)
        self._consumer = consumer
        return consumer

    def _commit(self, consumer: Any, offsets: dict[Any, int]) -> None:
        """Commit past what was indexed; kept for the next tick if Kafka does not take it."""
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata  # type: ignore[import-untyped,unused-ignore]

        for tp, offset in offsets.items():
            self._indexed[tp] = max(offset, self._indexed.get(tp, 0))
        if not self._indexed:
            return
        try:
            consumer.commit({tp: OffsetAndMetadata(offset, "", -1)
                             for tp, offset in self._indexed.items()},
                            timeout_ms=COMMIT_TIMEOUT_MS)
        except KafkaError as exc:  # indexed all the same: this process reads on from there
            raise TransientError(f"indexed, but the offsets were not committed: {exc}") from exc
        self._indexed.clear()

    def _dead_letter(self, dead: list[_Read]) -> None:
        """Produce each record to the dead-letter topic as KafkaSource's dead-lettering does.

        Unlike the KafkaSource, a failed send is not let go: it raises, the batch
        is read again, and the letter is sent with it next time.
        """
        if not dead:
            return
        if self._publisher is None:
            from shared.runtime.kafka import KafkaPublisher

            self._publisher = KafkaPublisher(self.bootstrap)
        if not self._destination:
            self._destination = _destination()
        letters = []
        for read in dead:
            record = read.record
            body = json.dumps({"type": "about:blank", "title": "Not indexable",
                               "status": read.code, "detail": read.reason}).encode()
            errors = [("ce_knativeerrordest", self._destination.encode()),
                      ("ce_knativeerrorcode", str(read.code).encode()),
                      ("ce_knativeerrordata", base64.b64encode(body[:ERROR_DATA_LIMIT]))]
            names = {name for name, _ in errors}
            headers = [(n, v) for n, v in _cloudevent_headers(record) if n not in names]
            letters.append(KafkaRecord(self.dead_letter_topic, record.key or b"",
                                       record.value or b"", headers + errors))
            log.warning("dead-lettered %s[%s]@%s for %s: HTTP %s: %s", record.topic,
                        record.partition, record.offset, TARGET, read.code, read.reason[:200])
        self._publisher.send_all(letters)

    def _drop(self) -> None:
        """Forget the consumer: the next tick makes one from the committed offsets."""
        consumer, self._consumer = self._consumer, None
        self._indexed.clear()  # read again from the committed offsets, and indexed again
        if consumer is not None:
            try:
                consumer.close(autocommit=False)
            except Exception:  # closing a consumer whose broker is gone: nothing to keep
                log.debug("closing the consumer failed", exc_info=True)

    def close(self) -> None:
        with self._lock:
            self._drop()
            if self._publisher is not None:
                self._publisher.close()
                self._publisher = None


def _decode(record: Any) -> _Read:
    """The record as a document, or a dead letter saying why it can never be one."""
    from cloudevents.exceptions import GenericException

    try:
        envelope = from_kafka([(n, v or b"") for n, v in record.headers or []],
                              record.value or b"")
    except (ValueError, GenericException) as exc:  # PoisonEvent, bad UTF-8, a broken event
        return _Read(record, code=422, reason=str(exc))
    try:
        return _Read(record, envelope, search.document(envelope))
    except Exception as exc:  # a bug about this one event: it must not stall its partition
        log.exception("%s: no document for %s", TARGET, envelope.id)
        return _Read(record, envelope, code=500, reason=f"{type(exc).__name__}: {exc}")


def _cloudevent_headers(record: Any) -> Headers:
    """The record's headers, wrapped as KafkaSource wraps a record that is no CloudEvent."""
    headers: Headers = [(name, value or b"") for name, value in record.headers or []]
    if any(name == "ce_specversion" for name, _ in headers):
        return headers
    p, o = record.partition, record.offset
    wrapped = {"ce_specversion": "1.0", "ce_id": f"partition:{p}/offset:{o}",
               "ce_source": f"{source_of(TARGET)}#{record.topic}",
               "ce_type": "dev.knative.kafka.event", "ce_subject": f"partition:{p}#{o}"}
    if not any(name.lower() == "content-type" for name, _ in headers):
        wrapped["content-type"] = "application/json"
    return headers + [(name, value.encode()) for name, value in wrapped.items()]


def _destination() -> str:
    """Where a dead letter says it failed: this function's address as the redrive knows it
    (the local reactions host, a pod's Service), else its CloudEvents source."""
    from shared.domain.dead_letters import address_template

    template = address_template(os.environ)
    return template.replace("{name}", NAME) if template else source_of(TARGET)


def _listening(bootstrap: str) -> bool:
    """Does any bootstrap server accept a connection?"""
    for server in filter(None, (s.strip() for s in bootstrap.split(","))):
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "localhost", int(port or 9092)),
                                          timeout=CONNECT_SECONDS):
                return True
        except (OSError, ValueError):
            continue
    return False


def _connected(consumer: Any) -> bool:
    """Is a broker connection up? An empty poll looks the same whether Kafka is idle or gone.

    kafka-python tells only through its client; if that changes, a tick with Kafka
    gone answers 200 having read nothing, which loses nothing either.
    """
    client: Any = getattr(consumer, "_client", None)
    try:
        return any(client.connected(b.node_id) for b in client.cluster.brokers())
    except (AttributeError, TypeError):
        return True


def _trace(reads: list[_Read], refusals: dict[int, str], started_ns: int) -> None:
    """A consumer span per event in its own trace, as each delivery had, when export is on."""
    from shared.runtime import telemetry

    if not telemetry.enabled():
        return
    for read in reads:
        if read.envelope is None:
            continue
        envelope = read.envelope
        span = tracing.begin(TARGET, "consumer", envelope.traceparent, envelope.tracestate)
        span.start_ns = started_ns
        poison = read.document is None or id(read) in refusals
        span.attributes.update({"cloudevents.event_id": envelope.id,
                                "cloudevents.event_type": envelope.type,
                                "cloudevents.event_subject": envelope.subject,
                                "marketplace.outcome": "poison" if poison else "handled"})
        tracing.end(span, "PoisonEvent" if poison else "")


_indexer: Indexer | None = None
_indexer_lock = threading.Lock()
_said_unset = False


def indexer(bootstrap: str) -> Indexer:
    """This process's indexer for `bootstrap` (a new one if the setting changed)."""
    global _indexer
    with _indexer_lock:
        if _indexer is None or _indexer.bootstrap != bootstrap:
            if _indexer is not None:
                _indexer.close()
            _indexer = Indexer(bootstrap)
        return _indexer


@scheduled_effect("* * * * *", every="index_interval_seconds")
def index_event(rt: Runtime) -> None:
    global _said_unset
    bootstrap = settings().kafka_bootstrap_servers
    if not bootstrap:  # a setup without Kafka (some tests): no events to index
        if not _said_unset:
            log.debug("%s: KAFKA_BOOTSTRAP_SERVERS is not set: nothing to read", TARGET)
            _said_unset = True
        return
    indexer(bootstrap).tick()


# --- for the readers of the index: has the indexer caught up? ----------------------------

def lag(bootstrap: str, group: str = GROUP, topics: Iterable[str] = tuple(REGISTRY),
        timeout: float = 10.0) -> int:
    """Records on the topics past the group's committed offsets: what a reader waits out.

    The ends of the partitions come from a fetch answered now (the embedded broker's
    ListOffsets undercounts after a batched produce), so each call is a new consumer.
    Raises TimeoutError if Kafka does not answer for every partition in `timeout`.
    """
    from kafka import (  # type: ignore[import-untyped,unused-ignore]
        KafkaAdminClient,
        KafkaConsumer,
        TopicPartition,
    )

    if not _listening(bootstrap):  # (a client that cannot bootstrap leaves its IO thread)
        raise TimeoutError(f"Kafka ({bootstrap}) is unreachable")
    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","),
                             request_timeout_ms=int(timeout * 1000))
    try:
        committed = {tp: mark.offset for tp, mark in
                     admin.list_group_offsets(group).get(group, {}).items() if mark.offset >= 0}
    finally:
        admin.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), group_id=None,
                             enable_auto_commit=False, fetch_max_wait_ms=100,
                             max_partition_fetch_bytes=1024, metrics_enabled=False,
                             bootstrap_timeout_ms=int(timeout * 1000))
    try:
        partitions = [TopicPartition(t, p) for t in topics
                      for p in sorted(consumer.partitions_for_topic(t))]
        consumer.assign(partitions)
        uncommitted = [tp for tp in partitions if tp not in committed]
        first = consumer.beginning_offsets(uncommitted) if uncommitted else {}
        start = {tp: committed.get(tp, first.get(tp, 0)) for tp in partitions}
        for tp, offset in start.items():
            consumer.seek(tp, offset)
        deadline = time.monotonic() + timeout
        while any(consumer.highwater(tp) is None for tp in partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"Kafka did not answer for every partition in {timeout:g} s")
            consumer.poll(timeout_ms=100)
        return sum(max(0, consumer.highwater(tp) - start[tp]) for tp in partitions)
    finally:
        consumer.close(autocommit=False)


def wait_until_indexed(bootstrap: str, timeout: float, group: str = GROUP,
                       topics: Iterable[str] = tuple(REGISTRY)) -> int:
    """Poll `lag` until the indexer has committed every record, or `timeout` passes.

    Returns the records still behind (0: caught up), -1 if Kafka never answered.
    """
    deadline = time.monotonic() + timeout
    behind = -1
    while True:
        try:
            behind = lag(bootstrap, group, topics,
                         timeout=max(1.0, min(10.0, deadline - time.monotonic())))
        except Exception as exc:  # Kafka restarting, say: asked again until the deadline
            log.debug("the indexer's lag is unknown: %s", exc)
        if behind == 0 or time.monotonic() > deadline:
            return behind
        time.sleep(0.2)
