"""The runtime's Kafka publisher against the embedded broker: grouped sends, one failure each."""

from __future__ import annotations

import threading

import pytest

from local.measure.batches import stored
from local.stack.embedded import EmbeddedServer, create_topics
from shared.runtime.envelope import KafkaRecord
from shared.runtime.kafka import Doorbell, KafkaPublisher


def record(topic: str, value: bytes = b"{}") -> KafkaRecord:
    return KafkaRecord(topic, b"key", value, [("ce_id", b"1")])


def test_concurrent_sends_share_batches_and_each_waits_for_its_own(kafka: EmbeddedServer) -> None:
    create_topics(kafka.url, ["grouped"], partitions=1)
    publisher = KafkaPublisher(kafka.url, doorbell=Doorbell(None))
    publisher.warm()
    publisher.send_all([record("grouped")])  # alone: sent at once, one batch
    errors: list[BaseException] = []

    def sender() -> None:
        try:
            for _ in range(25):
                publisher.send_all([record("grouped"), record("grouped")])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=sender) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    publisher.close()
    assert not errors
    found = stored(kafka.url).by_topic["grouped"]
    assert found[0] == 1 + 8 * 25 * 2  # every record acknowledged is there, once
    assert found[1] < found[0] / 2  # and they share batches


def test_a_send_that_fails_fails_its_caller_only(kafka: EmbeddedServer) -> None:
    create_topics(kafka.url, ["failing"], partitions=1)
    publisher = KafkaPublisher(kafka.url, doorbell=Doorbell(None))
    too_large = record("failing", b"x" * 2_000_000)  # over the producer's request size
    outcome: dict[str, BaseException | None] = {}

    def send(name: str, records: list[KafkaRecord]) -> None:
        try:
            publisher.send_all(records)
            outcome[name] = None
        except BaseException as exc:
            outcome[name] = exc

    threads = [threading.Thread(target=send, args=("large", [too_large])),
               *(threading.Thread(target=send, args=(f"fine {n}", [record("failing")]))
                 for n in range(4))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    publisher.close()
    assert outcome["large"] is not None
    assert [outcome[f"fine {n}"] for n in range(4)] == [None] * 4
    assert stored(kafka.url).by_topic["failing"][0] == 4


def test_a_closed_publisher_refuses_to_send(kafka: EmbeddedServer) -> None:
    publisher = KafkaPublisher(kafka.url, doorbell=Doorbell(None))
    publisher.close()
    with pytest.raises(RuntimeError, match="closed"):
        publisher.send_all([record("grouped")])
