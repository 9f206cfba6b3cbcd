"""The KafkaSource emulator follows Knative's delivery rules against a real broker.

A real embedded Tansu broker and a scripted local HTTP sink: the point is to
catch handlers that would pass locally and misbehave under the real
KafkaSource (wrong status codes, non-idempotent retries, stalled partitions).
"""

from __future__ import annotations

import base64
import logging
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from kafka import (  # type: ignore[import-untyped,unused-ignore]
    KafkaConsumer,
    KafkaProducer,
    TopicPartition,
)
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from local.knative.doorbell import DoorbellListener
from local.knative.kafkasource import KafkaSourceEmulator
from local.stack.embedded import EmbeddedServer, create_topics
from shared.runtime.kafka import Doorbell
from shared.runtime.routing import Ordering, Reaction
from tests.helpers import waiting

DEADLINE_S = 20.0


# --- a scripted HTTP sink ------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b""
    delay: float = 0.0


@dataclass(frozen=True)
class Hit:
    method: str
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass
class Sink:
    """Answers POST /<target> from a per-target script (the last answer repeats)."""

    server: BaseWSGIServer | None = None
    scripts: dict[str, list[Answer]] = field(default_factory=dict)
    hits: dict[str, list[Hit]] = field(default_factory=lambda: defaultdict(list))
    in_flight: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    max_in_flight: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_port}"

    def url_for(self, reaction: Reaction) -> str:
        return f"{self.url}/{reaction.target}"

    def script(self, reaction: Reaction, *answers: Answer) -> None:
        self.scripts[reaction.target] = list(answers)

    def received(self, reaction: Reaction) -> list[Hit]:
        with self.lock:
            return list(self.hits[reaction.target])

    def __call__(self, environ: Any, start_response: Any) -> Any:
        request = Request(environ)
        target = request.path.strip("/")
        with self.lock:
            script = self.scripts.get(target) or [Answer()]
            answer = script[min(len(self.hits[target]), len(script) - 1)]
            self.hits[target].append(
                Hit(
                    request.method,
                    {k.lower(): v for k, v in request.headers.items()},
                    request.get_data(),
                )
            )
            self.in_flight[target] += 1
            self.max_in_flight[target] = max(self.max_in_flight[target], self.in_flight[target])
        time.sleep(answer.delay)  # only where a test asks for overlap
        with self.lock:
            self.in_flight[target] -= 1
        return Response(answer.body, status=answer.status)(environ, start_response)


# --- fixtures and helpers --------------------------------------------------------


@pytest.fixture(scope="module")
def doorbell() -> Iterator[DoorbellListener]:
    """The local stack's doorbell: `produce` rings it, as the stack's producers do."""
    listener = DoorbellListener()
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def producer(kafka: EmbeddedServer, doorbell: DoorbellListener) -> Iterator[Any]:
    client = KafkaProducer(bootstrap_servers=kafka.url, acks="all", linger_ms=0)
    client.doorbell = Doorbell(doorbell.address)  # rung by produce()
    yield client
    client.close(timeout=5)


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    sink = Sink()
    sink.server = make_server("127.0.0.1", 0, sink, threaded=True)
    thread = threading.Thread(target=sink.server.serve_forever, daemon=True)
    thread.start()
    yield sink
    sink.server.shutdown()
    sink.server.server_close()
    thread.join(5)


def fresh(label: str, ordering: Ordering = "ordered") -> Reaction:
    """A reaction with its own topic and consumer group: tests never share offsets."""
    suffix = uuid.uuid4().hex[:8]
    return Reaction(
        target=f"ks_{label}_{suffix}",
        topics=(f"ks.{label}.{suffix}",),
        ordering=ordering,
    )


def eventually(condition: Callable[[], bool], what: str) -> None:
    waiting.eventually(condition, timeout=DEADLINE_S, interval=0.02, what=what)


def produce(
    producer: Any,
    topic: str,
    value: bytes,
    key: bytes = b"k",
    headers: list[tuple[str, bytes]] | None = None,
    ring: bool = True,
) -> Any:
    """Produce one record and, like the stack's producers, ring the doorbell once it is in."""
    sent = producer.send(topic, key=key, value=value, headers=headers or []).get(timeout=10)
    if ring:
        producer.doorbell.ring([topic])
    return sent


def ce_headers(event_id: str) -> list[tuple[str, bytes]]:
    return [
        ("content-type", b"application/json"),
        ("ce_specversion", b"1.0"),
        ("ce_id", event_id.encode()),
        ("ce_source", b"/marketplace/tests"),
        ("ce_type", b"marketplace.test.happened"),
        ("ce_subject", b"order-1"),
        ("ce_partitionkey", b"order-1"),
    ]


def dead_letter_topic() -> str:
    return f"ks.dead-letter.{uuid.uuid4().hex[:8]}"


@contextmanager
def emulate(
    kafka: EmbeddedServer,
    reactions: list[Reaction],
    sink_url: Callable[[Reaction], str],
    dead_letters: str,
    doorbell: DoorbellListener | None = None,
    **options: Any,
) -> Iterator[KafkaSourceEmulator]:
    """Run an emulator (with a doorbell: as the local stack does); on the way out check
    that stop is quick and leaves no thread."""
    create_topics(kafka.url, [t for r in reactions for t in r.topics], partitions=4)
    create_topics(kafka.url, [dead_letters], partitions=1)
    before = set(threading.enumerate())
    emulator = KafkaSourceEmulator(
        kafka.url,
        reactions,
        sink_url,
        dead_letter_topic=dead_letters,
        doorbell=doorbell,
        **{"backoff_delay": 0.01, "timeout": 5.0, **options},
    )
    emulator.start()
    try:
        emulator.wait_ready(DEADLINE_S)
        yield emulator
    finally:
        started = time.monotonic()
        emulator.stop()
        stop_took = time.monotonic() - started
    assert stop_took < 5.0, f"stop took {stop_took:.1f}s"
    leftover = [
        t.name
        for t in threading.enumerate()
        if t not in before and "process_request_thread" not in t.name  # the sink's
    ]
    assert not leftover, f"threads left running: {leftover}"


def read_topic(kafka: EmbeddedServer, topic: str, count: int) -> list[Any]:
    """The first ``count`` records of a one-partition topic, read without a group."""
    consumer = KafkaConsumer(bootstrap_servers=kafka.url, enable_auto_commit=False)
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        records: list[Any] = []
        deadline = time.monotonic() + DEADLINE_S
        while len(records) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        assert len(records) >= count, f"{topic}: {len(records)} of {count} records"
        return records
    finally:
        consumer.close()


def headers_of(record: Any) -> dict[str, bytes]:
    return dict(record.headers)


# --- tests --------------------------------------------------------------------------


def test_cloudevent_record_is_posted_in_binary_mode(
    kafka: EmbeddedServer, producer: Any, sink: Sink, doorbell: DoorbellListener
) -> None:
    reaction = fresh("binary")
    with emulate(kafka, [reaction], sink.url_for, dead_letter_topic(), doorbell) as emulator:
        produce(producer, reaction.topics[0], b'{"n": 1}', headers=ce_headers("evt-1"))
        eventually(lambda: emulator.stats()[reaction.target].delivered == 1, "delivery")

    [hit] = sink.received(reaction)
    assert hit.method == "POST"
    assert hit.body == b'{"n": 1}'
    assert hit.headers["content-type"] == "application/json"
    assert {k: v for k, v in hit.headers.items() if k.startswith("ce-")} == {
        "ce-specversion": "1.0",
        "ce-id": "evt-1",
        "ce-source": "/marketplace/tests",
        "ce-type": "marketplace.test.happened",
        "ce-subject": "order-1",
        "ce-partitionkey": "order-1",
    }
    stats = emulator.stats()[reaction.target]
    assert (stats.delivered, stats.retried, stats.dead_lettered) == (1, 0, 0)


def test_ordered_delivers_a_partition_one_by_one_unordered_in_parallel(
    kafka: EmbeddedServer, producer: Any, sink: Sink, doorbell: DoorbellListener
) -> None:
    ordered, unordered = fresh("ordered"), fresh("unordered", "unordered")
    create_topics(kafka.url, ordered.topics + unordered.topics, partitions=4)
    for reaction in (ordered, unordered):
        sink.script(reaction, Answer(delay=0.02))
        for i in range(20):  # one key: one partition; produced first, so one batch
            produce(producer, reaction.topics[0], b"{}", headers=ce_headers(f"e{i}"))

    with emulate(kafka, [ordered, unordered], sink.url_for, dead_letter_topic(),
                 doorbell) as emulator:
        eventually(
            lambda: all(emulator.stats()[r.target].delivered == 20 for r in (ordered, unordered)),
            "40 deliveries",
        )

    ids = [hit.headers["ce-id"] for hit in sink.received(ordered)]
    assert ids == [f"e{i}" for i in range(20)]
    assert sink.max_in_flight[ordered.target] == 1
    assert sink.max_in_flight[unordered.target] > 1
    assert len(sink.received(unordered)) == 20


def test_retryable_answers_are_retried_with_the_same_event(
    kafka: EmbeddedServer, producer: Any, sink: Sink, doorbell: DoorbellListener
) -> None:
    reaction = fresh("retry")
    sink.script(reaction, Answer(503), Answer(503), Answer(200))
    with emulate(kafka, [reaction], sink.url_for, dead_letter_topic(), doorbell) as emulator:
        produce(producer, reaction.topics[0], b"{}", headers=ce_headers("evt-r"))
        eventually(lambda: emulator.stats()[reaction.target].delivered == 1, "delivery")

    assert [hit.headers["ce-id"] for hit in sink.received(reaction)] == ["evt-r"] * 3
    stats = emulator.stats()[reaction.target]
    assert (stats.delivered, stats.retried, stats.dead_lettered) == (1, 2, 0)


def test_client_error_is_dead_lettered_at_once_with_knative_error_extensions(
    kafka: EmbeddedServer,
    producer: Any,
    sink: Sink,
    doorbell: DoorbellListener,
    caplog: pytest.LogCaptureFixture,
) -> None:
    reaction, dead_letters = fresh("poison"), dead_letter_topic()
    sink.script(reaction, Answer(400, b"price is missing"))
    caplog.set_level(logging.WARNING, logger="marketplace.kafkasource")
    with emulate(kafka, [reaction], sink.url_for, dead_letters, doorbell) as emulator:
        produce(
            producer,
            reaction.topics[0],
            b'{"bad": true}',
            key=b"order-9",
            headers=ce_headers("evt-p"),
        )
        eventually(lambda: emulator.stats()[reaction.target].dead_lettered == 1, "DLQ")
        [record] = read_topic(kafka, dead_letters, 1)

    assert len(sink.received(reaction)) == 1
    assert emulator.stats()[reaction.target].retried == 0
    assert (record.key, record.value) == (b"order-9", b'{"bad": true}')
    headers = headers_of(record)
    assert headers["ce_id"] == b"evt-p"
    assert headers["ce_type"] == b"marketplace.test.happened"
    assert headers["content-type"] == b"application/json"
    assert headers["ce_knativeerrordest"] == sink.url_for(reaction).encode()
    assert headers["ce_knativeerrorcode"] == b"400"
    assert base64.b64decode(headers["ce_knativeerrordata"]) == b"price is missing"
    logged = [r.getMessage() for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert len(logged) == 1 and "HTTP 400" in logged[0]


def test_exhausted_retries_and_connection_errors_are_dead_lettered(
    kafka: EmbeddedServer, producer: Any, sink: Sink, doorbell: DoorbellListener
) -> None:
    failing, unreachable = fresh("failing"), fresh("unreachable")
    dead_letters = dead_letter_topic()
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    urls = {
        failing.target: sink.url_for(failing),
        unreachable.target: f"http://127.0.0.1:{closed_port}/",
    }
    sink.script(failing, Answer(500, b"boom " * 400))  # longer than 1024 bytes
    with emulate(
        kafka, [failing, unreachable], lambda r: urls[r.target], dead_letters, doorbell, retry=2
    ) as emulator:
        produce(producer, failing.topics[0], b"{}", headers=ce_headers("evt-f"))
        produce(producer, unreachable.topics[0], b"{}", headers=ce_headers("evt-u"))
        records = read_topic(kafka, dead_letters, 2)

    assert len(sink.received(failing)) == 3
    for reaction in (failing, unreachable):
        stats = emulator.stats()[reaction.target]
        assert (stats.delivered, stats.retried, stats.dead_lettered) == (0, 2, 1)
    by_id = {headers_of(r)["ce_id"]: headers_of(r) for r in records}
    assert by_id[b"evt-f"]["ce_knativeerrorcode"] == b"500"
    assert base64.b64decode(by_id[b"evt-f"]["ce_knativeerrordata"]) == (b"boom " * 400)[:1024]
    assert by_id[b"evt-u"]["ce_knativeerrorcode"] == b"0"
    assert by_id[b"evt-u"]["ce_knativeerrordest"] == urls[unreachable.target].encode()
    assert b"ConnectionRefusedError" in base64.b64decode(by_id[b"evt-u"]["ce_knativeerrordata"])


def test_plain_record_is_wrapped_as_a_knative_kafka_event(
    kafka: EmbeddedServer, producer: Any, sink: Sink, doorbell: DoorbellListener
) -> None:
    reaction = fresh("plain")
    topic = reaction.topics[0]
    with emulate(kafka, [reaction], sink.url_for, dead_letter_topic(), doorbell) as emulator:
        json_meta = produce(producer, topic, b'{"hello": "world"}')
        text_meta = produce(producer, topic, b"hi", headers=[("content-type", b"text/plain")])
        eventually(lambda: emulator.stats()[reaction.target].delivered == 2, "deliveries")

    json_hit, text_hit = sink.received(reaction)
    p, o = json_meta.partition, json_meta.offset
    assert json_hit.body == b'{"hello": "world"}'
    assert json_hit.headers["ce-specversion"] == "1.0"
    assert json_hit.headers["ce-type"] == "dev.knative.kafka.event"
    assert json_hit.headers["ce-id"] == f"partition:{p}/offset:{o}"
    assert json_hit.headers["ce-subject"] == f"partition:{p}#{o}"
    assert (
        json_hit.headers["ce-source"]
        == f"/apis/v1/namespaces/local/kafkasources/{reaction.name}#{topic}"
    )
    assert json_hit.headers["content-type"] == "application/json"
    assert text_hit.headers["content-type"] == "text/plain"
    assert text_hit.headers["ce-id"] == f"partition:{p}/offset:{text_meta.offset}"


def test_poison_record_does_not_stall_its_partition(
    kafka: EmbeddedServer, producer: Any, sink: Sink, doorbell: DoorbellListener
) -> None:
    reaction, dead_letters = fresh("nostall"), dead_letter_topic()
    topic = reaction.topics[0]
    sink.script(reaction, Answer(422, b"unknown field"), Answer(200))
    create_topics(kafka.url, [topic], partitions=4)
    poison = produce(producer, topic, b"not json")  # plain: gets wrapped
    good = produce(producer, topic, b"{}", headers=ce_headers("evt-next"))
    assert good.partition == poison.partition  # same key, same partition

    with emulate(kafka, [reaction], sink.url_for, dead_letters, doorbell) as emulator:
        eventually(lambda: emulator.stats()[reaction.target].delivered == 1, "delivery")
        [record] = read_topic(kafka, dead_letters, 1)

    hits = sink.received(reaction)
    assert [h.headers["ce-type"] for h in hits] == [
        "dev.knative.kafka.event",
        "marketplace.test.happened",
    ]
    headers = headers_of(record)
    assert record.value == b"not json"
    assert headers["ce_type"] == b"dev.knative.kafka.event"
    assert headers["ce_id"] == f"partition:{poison.partition}/offset:{poison.offset}".encode()
    assert headers["ce_knativeerrorcode"] == b"422"
    # Both offsets were committed: a restart would not see the poison again.
    assert committed_offset(kafka, reaction, poison.partition) == good.offset + 1


def committed_offset(kafka: EmbeddedServer, reaction: Reaction, partition: int) -> Any:
    check = KafkaConsumer(bootstrap_servers=kafka.url, group_id=reaction.consumer_group)
    try:
        return check.committed(TopicPartition(reaction.topics[0], partition))
    finally:
        check.close()


def test_a_delivery_longer_than_a_poll_interval_is_delivered_once_and_committed(
    kafka: EmbeddedServer, producer: Any, sink: Sink, doorbell: DoorbellListener
) -> None:
    """A sink slower than kafka-python's 10 s poll interval neither repeats the record nor
    stalls the next. (A group member would be kicked out unless it kept polling; the
    emulator is no member, so nothing times out.) Takes ~12 s.
    """
    reaction = fresh("slow")
    sink.script(reaction, Answer(delay=11.0), Answer())
    create_topics(kafka.url, reaction.topics, partitions=4)
    slow = produce(producer, reaction.topics[0], b"{}", headers=ce_headers("slow"))
    produce(producer, reaction.topics[0], b"{}", headers=ce_headers("after"))

    with emulate(kafka, [reaction], sink.url_for, dead_letter_topic(), doorbell,
                 timeout=30.0) as emulator:
        eventually(lambda: emulator.stats()[reaction.target].delivered == 2, "both")
        eventually(lambda: committed_offset(kafka, reaction, slow.partition) == 2, "commit")

    assert [h.headers["ce-id"] for h in sink.received(reaction)] == ["slow", "after"]


# --- waiting for records: the doorbell, the look, the long poll ----------------------------


def test_an_idle_consumer_does_not_poll_and_a_rung_record_reaches_it_at_once(
    kafka: EmbeddedServer, producer: Any, sink: Sink, doorbell: DoorbellListener
) -> None:
    """At rest a consumer neither polls nor has a fetch waiting at the broker; a record
    whose producer rang is delivered within a fraction of a second all the same."""
    reaction = fresh("idle")
    with emulate(kafka, [reaction], sink.url_for, dead_letter_topic(), doorbell,
                 look_seconds=(30.0, 30.0)) as emulator:
        time.sleep(0.5)  # the start's poll is over
        polls = emulator.stats()[reaction.target].polls
        time.sleep(2.0)
        assert emulator.stats()[reaction.target].polls == polls, "an idle consumer polled"
        took = []
        for i in range(5):
            started = time.monotonic()
            produce(producer, reaction.topics[0], b"{}", headers=ce_headers(f"rung-{i}"))
            eventually(lambda n=i: emulator.stats()[reaction.target].delivered == n + 1,
                       "delivery")
            took.append(time.monotonic() - started)
            time.sleep(0.3)
    assert max(took) < 1.0, f"rung records took {took}"
    assert sorted(took)[2] < 0.25, f"rung records took {took}"


def test_a_record_nobody_rang_for_is_found_by_the_paced_look(
    kafka: EmbeddedServer, producer: Any, sink: Sink, doorbell: DoorbellListener
) -> None:
    """A test's or a tool's producer rings no bell: the look at the end offsets finds its
    record within the look's longest pause."""
    reaction = fresh("unrung")
    with emulate(kafka, [reaction], sink.url_for, dead_letter_topic(), doorbell,
                 look_seconds=(0.2, 1.0)) as emulator:
        time.sleep(2.5)  # the look has backed off to its longest pause
        started = time.monotonic()
        produce(producer, reaction.topics[0], b"{}", headers=ce_headers("unrung"), ring=False)
        eventually(lambda: emulator.stats()[reaction.target].delivered == 1, "delivery")
        took = time.monotonic() - started
    assert took < 3.0, f"found after {took:.1f} s"


def test_without_a_doorbell_consumers_long_poll(
    kafka: EmbeddedServer, producer: Any, sink: Sink
) -> None:
    """Against real Kafka (docker-compose) there is no doorbell: a consumer waits in a long
    fetch, which real Kafka answers as soon as a record arrives. The embedded broker does
    not, so here the wait is short; the delivery rules are the same."""
    reaction = fresh("longpoll")
    with emulate(kafka, [reaction], sink.url_for, dead_letter_topic(),
                 long_poll_ms=200) as emulator:
        sent = produce(producer, reaction.topics[0], b"{}", headers=ce_headers("lp-1"),
                       ring=False)
        eventually(lambda: emulator.stats()[reaction.target].delivered == 1, "delivery")
        eventually(lambda: committed_offset(kafka, reaction, sent.partition) == sent.offset + 1,
                   "commit")
