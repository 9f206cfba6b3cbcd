"""The embedded servers really start and behave like the services we deploy against."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pg8000.native  # type: ignore[import-untyped]
import pytest
import redis
from kafka import (  # type: ignore[import-untyped]
    KafkaConsumer,
    KafkaProducer,
    TopicPartition,
)

from local.stack.embedded import (
    EmbeddedServer,
    create_topics,
    start_kafka,
    start_postgres,
    start_redis,
)

DEADLINE_S = 20.0


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embedded")


@pytest.fixture(scope="module")
def kafka(workdir: Path) -> Iterator[EmbeddedServer]:
    server = start_kafka(workdir)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def postgres(workdir: Path) -> Iterator[EmbeddedServer]:
    server = start_postgres(workdir)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_server(workdir: Path) -> Iterator[EmbeddedServer]:
    server = start_redis(workdir)
    yield server
    server.stop()


def test_topics_get_the_partitions_asked_for_and_an_existing_one_keeps_its_own(
    kafka: EmbeddedServer, caplog: pytest.LogCaptureFixture
) -> None:
    """TOPIC_PARTITIONS reaches the broker; changing it never re-partitions a topic (README)."""
    assert create_topics(kafka.url, ["partitions.seven"], partitions=7) == {"partitions.seven": 7}
    with caplog.at_level(logging.WARNING, logger="marketplace.topics"):
        counts = create_topics(kafka.url, ["partitions.seven", "partitions.two"], partitions=2)
    assert counts == {"partitions.seven": 7, "partitions.two": 2}
    assert "topic partitions.seven has 7 partitions, not 2" in caplog.text
    assert "partitions.two" not in caplog.text


def test_kafka_roundtrip_with_cloudevent_headers_and_group_commit(
    kafka: EmbeddedServer,
) -> None:
    topic = "embedded.test"
    create_topics(kafka.url, [topic], partitions=4)
    create_topics(kafka.url, [topic], partitions=4)  # idempotent

    producer = KafkaProducer(bootstrap_servers=kafka.url, acks="all", linger_ms=0)
    sent: dict[bytes, list[tuple[str, bytes]]] = {}
    for i in range(10):
        key = f"order-{i}".encode()
        headers = [
            ("ce_specversion", b"1.0"),
            ("ce_id", f"evt-{i}".encode()),
            ("ce_source", b"/marketplace/tests"),
            ("ce_type", b"marketplace.order.placed"),
            ("content-type", b"application/json"),
        ]
        producer.send(
            topic, key=key, value=json.dumps({"n": i}).encode(), headers=headers
        )
        sent[key] = headers
    producer.flush(timeout=10)
    producer.close()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka.url,
        group_id="embedded-test",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        # Tansu completes a group join after about session_timeout_ms / 2, and
        # the 300 s max_poll_interval_ms default stalls it: keep both low.
        max_poll_interval_ms=10000,
        session_timeout_ms=2000,  # real Kafka brokers require >= 6000
        heartbeat_interval_ms=500,
    )
    received: dict[bytes, Any] = {}
    deadline = time.monotonic() + DEADLINE_S
    try:
        while len(received) < len(sent) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    received[record.key] = record
        consumer.commit()
        partitions = [TopicPartition(topic, p) for p in range(4)]
        committed = sum(consumer.committed(tp) or 0 for tp in partitions)
    finally:
        consumer.close()

    assert set(received) == set(sent)
    for key, record in received.items():
        assert list(record.headers) == sent[key]
        assert json.loads(record.value) == {"n": int(key.decode().split("-")[1])}
    # Committed offsets (unlike end_offsets on Tansu) are trustworthy.
    assert committed == len(sent)
    assert len({r.partition for r in received.values()}) > 1


def test_postgres_commits_are_visible_across_connections(
    postgres: EmbeddedServer,
) -> None:
    assert "?host=/" in postgres.url
    sock_dir = postgres.url.split("?host=", 1)[1]
    port = postgres.url.split("@localhost:", 1)[1].split("/", 1)[0]
    unix_sock = f"{sock_dir}/.s.PGSQL.{port}"

    writer = pg8000.native.Connection(
        "postgres", unix_sock=unix_sock, database="postgres"
    )
    reader = pg8000.native.Connection(
        "postgres", host="127.0.0.1", port=int(port), database="postgres"
    )
    try:
        writer.run("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)")
        writer.run("BEGIN")
        writer.run("INSERT INTO items VALUES (1, 'lamp'), (2, 'desk')")
        assert writer.run("SELECT name FROM items ORDER BY id") == [["lamp"], ["desk"]]
        assert reader.run("SELECT count(*) FROM items") == [[0]]  # not yet committed
        writer.run("COMMIT")
        assert reader.run("SELECT id, name FROM items ORDER BY id") == [
            [1, "lamp"],
            [2, "desk"],
        ]
    finally:
        writer.close()
        reader.close()


def test_redis_expiry_notifications(redis_server: EmbeddedServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    try:
        pubsub.subscribe("__keyevent@0__:expired")
        client.set("hold:1", "x", ex=1)
        message = None
        deadline = time.monotonic() + DEADLINE_S
        while message is None and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.5)
        assert message is not None, "no expiry notification"
        assert message["channel"] == b"__keyevent@0__:expired"
        assert message["data"] == b"hold:1"
    finally:
        pubsub.close()
        client.close()


def test_redis_runs_its_cron_once_a_second_and_still_tells_an_expiry_within_about_one(
        redis_server: EmbeddedServer) -> None:
    """`hz 1` (a tenth of Redis's CPU at rest): a key past its TTL is still never read, and
    its `expired` notification (the hold-expiry watcher's) comes within about a second."""
    client = redis.Redis.from_url(redis_server.url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    try:
        assert client.config_get("hz") == {"hz": "1"}
        pubsub.subscribe("__keyevent@0__:expired")
        client.set("hold:hz", "x", px=200)
        time.sleep(0.25)
        assert client.get("hold:hz") is None  # expired on access, whatever the cron
        client.set("hold:hz2", "x", px=200)  # never read: only the cron deletes it
        started = time.monotonic()
        seen: list[bytes] = []
        while b"hold:hz2" not in seen and time.monotonic() - started < DEADLINE_S:
            message = pubsub.get_message(timeout=0.5)
            if message is not None:
                seen.append(message["data"])
        assert b"hold:hz2" in seen, f"no expiry notification for hold:hz2 ({seen})"
        assert time.monotonic() - started < 2.5
    finally:
        pubsub.close()
        client.close()


def test_stop_is_idempotent_and_cleans_up(workdir: Path) -> None:
    server = start_redis(workdir / "extra")
    assert server.tmpdir is not None and server.tmpdir.exists()
    server.stop()
    server.stop()
    assert not server.tmpdir.exists()
    assert server.process is not None and server.process.poll() is not None
