"""index_event and GET /analytics/summary against a real broker, search server and PostgreSQL.

The indexer reads the event log itself: each test gives it a topic, a consumer group
and a dead-letter topic of its own on one embedded broker, produces records as the
outbox does (binary mode, `ce_` headers), and runs ticks.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch
from kafka import (  # type: ignore[import-untyped,unused-ignore]
    KafkaAdminClient,
    KafkaConsumer,
    KafkaProducer,
    TopicPartition,
)

from functions import index_event
from functions.index_event import Indexer
from local.stack.embedded import EmbeddedServer, create_topics, start_kafka
from shared.adapters import search
from shared.domain import dead_letters
from shared.domain.events import (
    REGISTRY,
    BookingCancelled,
    BookingConfirmed,
    BookingExpired,
    BookingRejected,
    BookingRequested,
    Event,
    PaymentRefunded,
    PaymentRequested,
    PaymentSucceeded,
    UserRegistered,
)
from shared.edge import tokens
from shared.runtime.bootstrap import Runtime
from shared.runtime.config import settings
from shared.runtime.envelope import Envelope, kafka_headers_to_http, to_kafka
from shared.runtime.errors import TransientError
from tests.helpers.events import app, fixture, post
from tests.helpers.ports import free_port

TARGET = "index_event"
T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
PARTITIONS = 4


@pytest.fixture(scope="module")
def producer(kafka: EmbeddedServer) -> Iterator[Any]:
    client = KafkaProducer(bootstrap_servers=kafka.url, acks="all", linger_ms=0)
    yield client
    client.close(timeout=5)


@pytest.fixture
def es(rt: Runtime, search_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Elasticsearch]:
    monkeypatch.setenv("ELASTICSEARCH_URL", search_url)
    if not os.environ.get("ELASTICSEARCH_SERVER_MODE"):
        monkeypatch.setenv("ELASTICSEARCH_SERVER_MODE", "serverless")
    settings.cache_clear()
    search.client.cache_clear()
    client = search.client()
    client.indices.delete(index=search.INDEX, ignore_unavailable=True)
    search.forget_index_setup()
    yield client
    search.client.cache_clear()


@dataclass
class EventLog:
    """One test's slice of the broker: a topic, a consumer group, a dead-letter topic."""

    kafka: EmbeddedServer
    producer: Any
    topic: str = field(default_factory=lambda: f"analytics.{uuid.uuid4().hex[:8]}")
    group: str = field(default_factory=lambda: f"index-test-{uuid.uuid4().hex[:8]}")
    dead_letters: str = field(default_factory=lambda: f"dead-letter.{uuid.uuid4().hex[:8]}")
    indexers: list[Indexer] = field(default_factory=list)

    def __post_init__(self) -> None:
        create_topics(self.kafka.url, [self.topic], partitions=PARTITIONS)
        create_topics(self.kafka.url, [self.dead_letters], partitions=1)

    def indexer(self, **options: Any) -> Indexer:
        """An indexer of this slice: a new one is what a new process would be."""
        made = Indexer(self.kafka.url, topics=[self.topic], group=self.group,
                       dead_letter_topic=self.dead_letters, **options)
        self.indexers.append(made)
        return made

    def produce(self, *events: Event | Envelope[Event], at: datetime = T0) -> list[str]:
        """Each event as the outbox produces it (keyed by its aggregate); their CloudEvent ids."""
        ids = []
        for event in events:
            envelope = event if isinstance(event, Envelope) else Envelope(
                data=event, source="/marketplace/functions/test", time=at)
            record = to_kafka(envelope)
            self.producer.send(self.topic, key=record.key, value=record.value,
                               headers=record.headers).get(timeout=30)
            ids.append(envelope.id)
        return ids

    def raw(self, value: bytes, headers: list[tuple[str, bytes]], partition: int = 0) -> None:
        self.producer.send(self.topic, key=b"raw", value=value, headers=headers,
                           partition=partition).get(timeout=30)

    def committed(self) -> dict[int, int]:
        admin = KafkaAdminClient(bootstrap_servers=self.kafka.url)
        try:
            offsets = admin.list_group_offsets(self.group).get(self.group, {})
        finally:
            admin.close()
        return {tp.partition: mark.offset for tp, mark in offsets.items()
                if tp.topic == self.topic and mark.offset >= 0}

    def dead_lettered(self, expected: int) -> list[Any]:
        consumer = KafkaConsumer(bootstrap_servers=self.kafka.url, group_id=None,
                                 enable_auto_commit=False)
        try:
            partition = TopicPartition(self.dead_letters, 0)
            consumer.assign([partition])
            consumer.seek_to_beginning(partition)
            records: list[Any] = []
            deadline = time.monotonic() + 20
            while len(records) < expected and time.monotonic() < deadline:
                for rows in consumer.poll(timeout_ms=200).values():
                    records.extend(rows)
            return records
        finally:
            consumer.close()


@pytest.fixture
def log(kafka: EmbeddedServer, producer: Any) -> Iterator[EventLog]:
    made = EventLog(kafka, producer)
    yield made
    for indexer in made.indexers:
        indexer.close()


def count(es: Elasticsearch) -> int:
    es.indices.refresh(index=search.INDEX)
    return int(es.count(index=search.INDEX)["count"])


def seed_booking(rt: Runtime, course: uuid.UUID, user: uuid.UUID) -> uuid.UUID:
    booking = uuid.uuid4()
    with rt.db.transaction() as tx:
        tx.execute("INSERT INTO bookings (booking_id, course_id, user_id) VALUES (:b, :c, :u)",
                   b=booking, c=course, u=user)
    return booking


def requested() -> BookingRequested:
    return BookingRequested(booking_id=uuid.uuid4(), user_id=uuid.uuid4(),
                            course_id=uuid.uuid4(), requested_at=T0)


class Counting:
    """The cluster, its `_bulk` calls counted, an answer rewritten where a test says so."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.bulks: list[int] = []
        self.refuse = refuse
        self.cluster = search.cluster()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cluster, name)

    def bulk(self, *, operations: list[dict[str, Any]]) -> Any:
        self.bulks.append(len(operations) // 2)
        kept = [(op, doc) for op, doc in zip(operations[::2], operations[1::2], strict=True)
                if op["index"]["_id"] not in self.refuse]
        answer = self.cluster.bulk(operations=[x for pair in kept for x in pair]) if kept else {
            "items": []}
        items = iter(answer["items"])
        return {"items": [
            {"index": {"status": 400, "error": {"type": "document_parsing_exception"}}}
            if op["index"]["_id"] in self.refuse else next(items) for op in operations[::2]]}


# --- a tick -------------------------------------------------------------------------------

def test_a_tick_indexes_what_was_produced_once(rt: Runtime, es: Elasticsearch,
                                               log: EventLog) -> None:
    user, course = uuid.uuid4(), uuid.uuid4()
    booking = seed_booking(rt, course, user)
    paid = PaymentSucceeded(payment_id=uuid.uuid4(), booking_id=booking, amount_cents=4900,
                            currency="EUR", charge_id="ch_1")
    (paid_id, *_) = log.produce(paid, *(requested() for _ in range(5)))
    indexer = log.indexer()

    first = indexer.tick()
    assert (first.read, first.indexed, first.dead_lettered, first.caught_up) == (6, 6, 0, True)
    assert count(es) == 6
    doc = es.get(index=search.INDEX, id=paid_id)["_source"]
    assert doc["type"] == "payment.succeeded" and doc["status"] == "SUCCEEDED"
    assert (doc["amount_cents"], doc["currency"]) == (4900, "EUR")
    # the payment names only its booking: course and user come from `bookings`
    assert (doc["course_id"], doc["user_id"]) == (str(course), str(user))
    assert sum(log.committed().values()) == 6

    again = indexer.tick()  # nothing new: nothing read, nothing indexed
    assert (again.read, again.indexed, again.caught_up) == (0, 0, True)
    # the same event produced twice (an outbox relay retrying): one document
    log.produce(Envelope(data=paid, source="/marketplace/functions/test", id=paid_id, time=T0))
    assert indexer.tick().read == 1
    assert count(es) == 6
    # a new process starts from the group's committed offsets, not from the beginning
    assert log.indexer().tick().read == 0


def test_a_tick_with_nothing_to_read_is_cheap(rt: Runtime, es: Elasticsearch,
                                              log: EventLog) -> None:
    indexer = log.indexer()
    log.produce(requested())
    assert indexer.tick().indexed == 1
    cpu, wall = [], []
    for _ in range(5):
        started, used = time.monotonic(), time.process_time()
        assert indexer.tick().caught_up
        cpu.append(time.process_time() - used)
        wall.append(time.monotonic() - started)
    # one fetch, no long wait: the broker holds an empty fetch longer than the tick waits
    assert min(wall) < 0.5, wall
    assert min(cpu) < 0.02, cpu


def test_a_backlog_is_indexed_a_few_hundred_per_bulk_call(rt: Runtime, es: Elasticsearch,
                                                          log: EventLog) -> None:
    log.produce(*(requested() for _ in range(700)))
    cluster = Counting()
    progress = log.indexer(es=lambda: cluster).tick()
    assert (progress.indexed, progress.caught_up) == (700, True)
    assert count(es) == 700
    assert max(cluster.bulks) <= index_event.BULK_SIZE
    assert len(cluster.bulks) <= 700 // 50, cluster.bulks


def test_the_index_template_types_the_fields(rt: Runtime, es: Elasticsearch,
                                             log: EventLog) -> None:
    log.produce(UserRegistered(user_id=uuid.uuid4(), email="a@example.com", full_name="A",
                               role="user", registered_at=T0))
    log.indexer().tick()
    properties = es.indices.get_mapping(index=search.INDEX)[search.INDEX]["mappings"][
        "properties"]
    types = {name: properties[name]["type"] for name in (
        "type", "time", "course_id", "user_id", "booking_id", "amount_cents", "currency",
        "status")}
    assert types == {"type": "keyword", "time": "date", "course_id": "keyword",
                     "user_id": "keyword", "booking_id": "keyword", "amount_cents": "long",
                     "currency": "keyword", "status": "keyword"}


# --- what cannot be indexed -------------------------------------------------------------

def test_poison_is_dead_lettered_with_its_reason_and_the_partition_moves_on(
        rt: Runtime, es: Elasticsearch, log: EventLog) -> None:
    good = Envelope(data=requested(), source="/marketplace/functions/test", time=T0)
    later = Envelope(data=requested(), source="/marketplace/functions/test", time=T0)
    poison_id = str(uuid.uuid4())
    ce = [("content-type", b"application/json"), ("ce_specversion", b"1.0"),
          ("ce_source", b"/test"), ("ce_type", b"marketplace.booking.requested")]
    for value, headers in (
            (to_kafka(good).value, to_kafka(good).headers),
            (b'{"booking_id": "nope"}', [*ce, ("ce_id", poison_id.encode())]),  # its schema
            (b"not a cloudevent", []),  # no ce_ headers at all
            (to_kafka(later).value, to_kafka(later).headers)):
        log.raw(value, headers, partition=0)  # one partition: the poison sits between the two

    progress = log.indexer().tick()
    assert (progress.read, progress.indexed, progress.dead_lettered) == (4, 2, 2)
    assert count(es) == 2 and log.committed()[0] == 4
    letters = log.dead_lettered(2)
    assert len(letters) == 2
    read = [dead_letters.from_delivery(kafka_headers_to_http(r.headers), r.value)
            for r in letters]
    schema, wrapped = sorted(read, key=lambda letter: letter.event_type, reverse=True)
    assert (schema.event_id, schema.function, schema.code) == (poison_id, TARGET, 422)
    assert "does not match its schema" in schema.reason and "booking_id" in schema.reason
    assert schema.body == b'{"booking_id": "nope"}'
    # a record that is no CloudEvent is wrapped as the KafkaSource wraps it
    assert wrapped.event_type == "dev.knative.kafka.event" and wrapped.function == TARGET
    assert wrapped.event_id == "partition:0/offset:2"
    assert "lacks the ce_id header" in wrapped.reason
    assert log.indexer().tick().read == 0  # nothing comes back


def test_a_document_the_cluster_refuses_is_dead_lettered(rt: Runtime, es: Elasticsearch,
                                                        log: EventLog) -> None:
    kept, refused = log.produce(requested(), requested())
    progress = log.indexer(es=lambda: Counting(refuse=frozenset({refused}))).tick()
    assert (progress.indexed, progress.dead_lettered) == (1, 1)
    assert count(es) == 1 and es.exists(index=search.INDEX, id=kept)
    (letter,) = log.dead_lettered(1)
    read = dead_letters.from_delivery(kafka_headers_to_http(letter.headers), letter.value)
    assert (read.event_id, read.function, read.code) == (refused, TARGET, 422)
    assert "not indexable" in read.reason and "document_parsing_exception" in read.reason
    assert sum(log.committed().values()) == 2


# --- outages --------------------------------------------------------------------------------

def test_search_down_commits_nothing_and_the_next_tick_catches_up(
        rt: Runtime, es: Elasticsearch, log: EventLog) -> None:
    down = True
    indexer = log.indexer(es=lambda: search.cluster("http://127.0.0.1:9") if down
                          else search.cluster())
    log.produce(*(requested() for _ in range(8)))
    with pytest.raises(TransientError, match="search cluster"):
        indexer.tick()
    assert log.committed() == {}
    down = False  # the same process, whose consumer had read the records once already
    progress = indexer.tick()
    assert (progress.indexed, progress.caught_up) == (8, True)
    assert count(es) == 8 and sum(log.committed().values()) == 8


def test_kafka_down_is_a_503_and_a_process_back_with_it_goes_on(
        rt: Runtime, es: Elasticsearch, tmp_path: Path) -> None:
    broker = start_kafka(tmp_path / "kafka")
    try:
        create_topics(broker.url, ["analytics.down"], partitions=1)
        indexer = Indexer(broker.url, topics=["analytics.down"], group="index-down")
        assert indexer.tick().caught_up
        broker.stop()
        started = time.monotonic()
        with pytest.raises(TransientError, match="Kafka"):
            indexer.tick()
        assert time.monotonic() - started < index_event.SILENCE_SECONDS + 5
        indexer.close()
    finally:
        broker.stop()
    started = time.monotonic()
    with pytest.raises(TransientError, match="unreachable"):
        Indexer(f"127.0.0.1:{free_port()}").tick()  # nothing listening: said at once
    assert time.monotonic() - started < 2


def test_the_readers_wait_on_the_indexers_lag(rt: Runtime, es: Elasticsearch,
                                              log: EventLog) -> None:
    log.produce(*(requested() for _ in range(5)))
    assert index_event.lag(log.kafka.url, log.group, [log.topic]) == 5
    assert index_event.wait_until_indexed(log.kafka.url, 0.5, log.group, [log.topic]) == 5
    log.indexer().tick()
    assert index_event.lag(log.kafka.url, log.group, [log.topic]) == 0
    assert index_event.wait_until_indexed(log.kafka.url, 5, log.group, [log.topic]) == 0


# --- the function, as the PingSource calls it ---------------------------------------------

@pytest.fixture
def live(kafka: EmbeddedServer, producer: Any, es: Elasticsearch,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[EventLog]:
    """The event topics themselves, read by the function's own indexer."""
    create_topics(kafka.url, [*REGISTRY], partitions=PARTITIONS)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka.url)
    settings.cache_clear()
    yield EventLog(kafka, producer, topic="booking.requested", group=index_event.GROUP)
    index_event.indexer(kafka.url).close()


def test_the_function_answers_each_ping(rt: Runtime, es: Elasticsearch, live: EventLog,
                                        search_url: str, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    ping = fixture("ping")
    live.produce(requested())
    assert post(TARGET, ping).status_code == 200
    indexed = count(es)
    assert indexed >= 1  # the topics may hold what an earlier test of the module produced

    monkeypatch.setenv("ELASTICSEARCH_URL", "http://127.0.0.1:9")
    settings.cache_clear()
    live.produce(requested())
    assert post(TARGET, ping).status_code == 503  # the search cluster down: retried

    monkeypatch.setenv("ELASTICSEARCH_URL", search_url)
    settings.cache_clear()
    assert post(TARGET, ping).status_code == 200
    assert count(es) == indexed + 1

    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS")  # no Kafka configured: nothing to do
    settings.cache_clear()
    assert post(TARGET, ping).status_code == 200
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    settings.cache_clear()
    assert post(TARGET, ping).status_code == 503  # Kafka unreachable: retried


# --- the summary ----------------------------------------------------------------------------

def play(rt: Runtime, log: EventLog, course: uuid.UUID, minute: int = 0) -> None:
    """Seven bookings: confirmed, cancelled, expired (then paid late, refunded), 2 rejected,
    2 still open; every event as it would arrive."""
    at = T0 + timedelta(minutes=minute)
    user = uuid.uuid4()
    events: list[Event] = []
    bookings = [seed_booking(rt, course, user) for _ in range(7)]
    for booking in bookings:
        events.append(BookingRequested(booking_id=booking, user_id=user, course_id=course,
                                       requested_at=at))
    for booking in bookings[:3] + bookings[5:]:
        events.append(PaymentRequested(payment_id=uuid.uuid4(), booking_id=booking,
                                       user_id=user, amount_cents=4900, currency="EUR",
                                       hold_expires_at=at))
    ok, declined, late = bookings[:3]
    events += [
        PaymentSucceeded(payment_id=uuid.uuid4(), booking_id=ok, amount_cents=4900,
                         currency="EUR", charge_id="ch"),
        BookingConfirmed(booking_id=ok, user_id=user, course_id=course, ticket_id=uuid.uuid4(),
                         payment_id=uuid.uuid4(), amount_cents=4900, currency="EUR"),
        BookingCancelled(booking_id=declined, user_id=user, course_id=course,
                         reason="payment_failed"),
        BookingExpired(booking_id=late, user_id=user, course_id=course, hold_expired_at=at),
        PaymentSucceeded(payment_id=uuid.uuid4(), booking_id=late, amount_cents=4900,
                         currency="EUR", charge_id="ch"),
        PaymentRefunded(payment_id=uuid.uuid4(), booking_id=late, amount_cents=4900,
                        currency="EUR", reason="booking_expired"),
        *(BookingRejected(booking_id=b, user_id=user, course_id=course, reason="sold_out")
          for b in bookings[3:5]),
    ]
    log.produce(*events, at=at)
    assert log.indexer().tick().indexed == len(events)


def get_summary(query: str = "", role: str = "admin") -> Any:
    client = app("analytics").test_client()
    token = tokens.issue_access(uuid.uuid4(), role, uuid.uuid4())
    return client.get(f"/analytics/summary{query}", headers={"Authorization": f"Bearer {token}"})


def test_the_summary_is_answered_by_aggregations(rt: Runtime, es: Elasticsearch,
                                                 log: EventLog) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    play(rt, log, first, minute=0)
    play(rt, log, second, minute=10)
    es.indices.refresh(index=search.INDEX)

    answer = get_summary()
    assert answer.status_code == 200, answer.text
    body = answer.json
    one = {
        "bookings_by_status": {"CONFIRMED": 1, "CANCELLED": 1, "EXPIRED": 1, "REJECTED": 2,
                               "IN_PROGRESS": 2},
        "bookings_requested": 7, "tickets_sold": 1,
        "revenue": {"EUR": {"received_cents": 9800, "refunded_cents": 4900, "net_cents": 4900,
                            "confirmed_cents": 4900}},
        "conversion_rate": round(1 / 7, 4), "expiry_rate": 0.2,
    }
    for course in (str(first), str(second)):
        figures = body["courses"][course]
        assert {k: figures[k] for k in one} == one
        assert figures["events"]["booking.requested"] == 7
    overall = body["overall"]
    assert overall["bookings_by_status"]["REJECTED"] == 4 and overall["tickets_sold"] == 2
    assert overall["revenue"]["EUR"]["net_cents"] == 9800

    only_first = get_summary(f"?course_id={first}").json
    assert list(only_first["courses"]) == [str(first)]
    assert only_first["overall"]["bookings_requested"] == 7
    window = get_summary("?from=2026-11-24T10:05:00Z&to=2026-11-24T11:00:00%2B00:00").json
    assert list(window["courses"]) == [str(second)]
    assert window["overall"]["tickets_sold"] == 1


def test_the_summary_is_for_admins_with_a_valid_query(rt: Runtime, es: Elasticsearch) -> None:
    assert get_summary(role="user").status_code == 403
    assert get_summary("?course_id=nope").status_code == 422
    assert get_summary("?from=2026-11-24T10:00:00").status_code == 422  # no zone
    empty = get_summary().json
    assert empty["overall"]["bookings_requested"] == 0 and empty["courses"] == {}
    assert empty["overall"]["conversion_rate"] is None


def test_the_consistency_check_names_every_difference(rt: Runtime, es: Elasticsearch,
                                                      log: EventLog) -> None:
    from local.ops import consistency

    course = uuid.uuid4()
    play(rt, log, course)  # the events say what happened; the seeded bookings are still PENDING
    found = consistency.differences(rt.db, es)
    assert f"{course}: CONFIRMED: postgres 0, analytics 1" in found
    assert f"{course}: IN_PROGRESS: postgres 7, analytics 2" in found
    assert "overall: net_cents EUR: postgres 0, analytics 4900" in found
    assert not [line for line in found if "bookings_requested" in line]
