"""A poison record lands on the dead-letter topic with its reason and stalls nothing."""

from __future__ import annotations

import base64
import time
import uuid

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from shared.domain.events import DEAD_LETTER_TOPIC
from tests.helpers.marketplace import Marketplace
from tests.helpers.waiting import eventually


def test_poison_record_is_dead_lettered_and_the_partition_moves_on(
        marketplace: Marketplace) -> None:
    bootstrap = marketplace.stack.env["KAFKA_BOOTSTRAP_SERVERS"]
    course = marketplace.publish(capacity=1)
    user = marketplace.register()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    poison_ids = set()
    key = b"poison"
    # one poison record at the head of every partition, so the booking below queues behind one
    for partition in sorted(producer.partitions_for("booking.requested")):
        poison_id = str(uuid.uuid4()).encode()
        poison_ids.add(poison_id)
        producer.send("booking.requested", key=key, value=b'{"booking_id": "nope"}',
                      partition=partition, headers=[
                          ("content-type", b"application/json"), ("ce_specversion", b"1.0"),
                          ("ce_id", poison_id), ("ce_source", b"/test"),
                          ("ce_type", b"marketplace.booking.requested")]).get(timeout=30)
    producer.close()

    booking_id = user.book(course["course_id"])
    user.wait_status(booking_id, "AWAITING_PAYMENT")

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False)
    partitions = [TopicPartition(DEAD_LETTER_TOPIC, p)
                  for p in consumer.partitions_for_topic(DEAD_LETTER_TOPIC) or []]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    found = {}
    deadline = time.monotonic() + 30
    while len(found) < len(poison_ids) and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            for record in records:
                headers = dict(record.headers)
                # every subscriber of the topic dead-letters it (the analytics indexer too)
                if headers.get("ce_id") in poison_ids and headers.get(
                        "ce_knativeerrordest", b"").endswith(b"/reserve-ticket/"):
                    found[headers["ce_id"]] = (record, headers)
    consumer.close()
    assert set(found) == poison_ids, "not every poison record reached the dead-letter topic"
    for record, headers in found.values():
        assert record.key == key and record.value == b'{"booking_id": "nope"}'
        assert headers["ce_knativeerrorcode"] == b"422"
        assert headers["ce_knativeerrordest"].endswith(b"/reserve-ticket/")
        reason = base64.b64decode(headers["ce_knativeerrordata"])
        assert b"does not match its schema" in reason and b"booking_id" in reason
    # and the admin API lists each, where it failed and why
    def listed() -> dict[str, dict[str, object]]:
        page = marketplace.admin.ok("GET", "/admin/dead-letters?function=reserve_ticket&size=100")
        return {item["event_id"]: item for item in page["items"]
                if item["event_id"].encode() in poison_ids}

    items = eventually(listed, lambda found: len(found) == len(poison_ids),
                       what="the poison records listed")
    for item in items.values():
        assert (item["type"], item["topic"], item["code"], item["status"]) == (
            "marketplace.booking.requested", "booking.requested", 422, "DEAD")
        assert "does not match its schema" in str(item["reason"])
