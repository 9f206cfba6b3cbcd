"""The broker as a test reads it: every record on the event topics, produced again, caught up.

Redelivery must change nothing, so the tests replay what the scenarios produced, with the
same ids, and wait until every consumer group has read past it before they compare.
"""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from shared.domain.events import REGISTRY
from shared.runtime.kafka import Doorbell
from shared.runtime.routing import load

IDLE_SECONDS = 2.0


def read_everything(bootstrap: str) -> list[Any]:
    """All records on the event topics, from the beginning, until the topics stay quiet."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             group_id=None, consumer_timeout_ms=1000)
    partitions = [TopicPartition(topic, p) for topic in REGISTRY
                  for p in sorted(consumer.partitions_for_topic(topic) or [])]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    records: list[Any] = []
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < IDLE_SECONDS:
        batch = consumer.poll(timeout_ms=200)
        for rows in batch.values():
            records.extend(rows)
            quiet_since = time.monotonic()
    consumer.close()
    return records


def produce_again(bootstrap: str, records: list[Any],
                  doorbell: str | None = None) -> dict[TopicPartition, int]:
    """Each record again, same partition, key, value and headers (so the same CloudEvent id).

    With the local stack's `doorbell` address it rings, as the stack's own producers do, so
    the replay is read at once rather than at the emulator's next paced look.
    """
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    replayed: dict[TopicPartition, int] = {}
    for r in records:
        meta = producer.send(r.topic, key=r.key, value=r.value, headers=r.headers,
                             partition=r.partition).get(timeout=30)
        replayed[TopicPartition(meta.topic, meta.partition)] = meta.offset
    producer.close()
    Doorbell(doorbell).ring(tp.topic for tp in replayed)
    return replayed


def caught_up(admin: KafkaAdminClient, positions: dict[TopicPartition, int]) -> bool:
    """Has every consumer group committed past these offsets on the topics it reads?"""
    reactions, _ = load()
    for reaction in reactions:
        if not reaction.topics:
            continue
        committed = admin.list_group_offsets(reaction.consumer_group).get(
            reaction.consumer_group, {})
        for tp, offset in positions.items():
            if tp.topic in reaction.topics:
                mark = committed.get(tp)
                if mark is None or mark.offset <= offset:
                    return False
    return True
