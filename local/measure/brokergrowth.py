"""`make bench BENCH_ARGS=--broker-growth`: how the embedded broker's CPU grows with its topics.

The local stack's Kafka is Tansu 0.6.0 with in-memory storage. Its fetch lists
every batch stored in the partition (and walks past other topics' keys) each
time it answers with records, and its DeleteRecords is not implemented, so
nothing trims a topic. A stack that has carried many bookings therefore spends
more broker CPU per event than a fresh one; a cluster's Kafka finds an offset
through its segment index and keeps its retention. This measures it: broker
CPU per record produced and fetched (one round trip at a time, as a saga hop
does), as one partition grows, and as another topic grows instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # type: ignore[import-untyped]

from local import console
from local.measure import cpu
from local.stack.embedded import create_topics, start_kafka

PAYLOAD = b"x" * 600  # about one event's CloudEvent


def round_trips(producer: KafkaProducer, consumer: KafkaConsumer, count: int) -> None:
    """Produce one record and fetch it, `count` times, as a saga hop does."""
    for _ in range(count):
        producer.send("measured", PAYLOAD, partition=0).get(timeout=10)
        deadline = time.monotonic() + 10
        while not consumer.poll(timeout_ms=1000):
            if time.monotonic() > deadline:
                raise RuntimeError("a produced record was not fetched within 10 s")


def fill(producer: KafkaProducer, topic: str, count: int) -> None:
    """Store `count` more batches of one record each (the outbox sends one event a batch)."""
    for index in range(count):
        producer.send(topic, PAYLOAD, partition=0).get(timeout=10)
        if index % 1000 == 999:
            print(".", end="", file=sys.stderr, flush=True)


def measure(sizes: list[int], filled: str, probes: int) -> list[tuple[int, float]]:
    """Broker CPU ms per round trip after `filled` holds each of `sizes` batches."""
    with tempfile.TemporaryDirectory(prefix="marketplace-broker-") as tmp:
        broker = start_kafka(Path(tmp))
        try:
            assert broker.process is not None
            pid = broker.process.pid
            create_topics(broker.url, ["measured", "other"], partitions=1)
            producer = KafkaProducer(bootstrap_servers=broker.url, acks="all", linger_ms=0)
            consumer = KafkaConsumer(bootstrap_servers=broker.url, enable_auto_commit=False,
                                     fetch_max_wait_ms=100)
            partition = TopicPartition("measured", 0)
            consumer.assign([partition])
            consumer.seek(partition, 0)
            round_trips(producer, consumer, 20)  # connections and metadata, not measured
            stored, found = 0, []
            for size in sizes:
                fill(producer, filled, size - stored)
                stored = size
                while consumer.poll(timeout_ms=500):  # read what fill stored, unmeasured
                    pass
                before = cpu.tree_seconds({"kafka": pid})["kafka"]
                round_trips(producer, consumer, probes)
                spent = cpu.tree_seconds({"kafka": pid})["kafka"] - before
                found.append((size, 1000 * spent / probes))
            producer.close()
            consumer.close()
            return found
        finally:
            broker.stop()


@console.command("broker-growth")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="0,5000,10000,20000",
                        help="batches stored before each measurement")
    parser.add_argument("--probes", type=int, default=400, help="round trips measured at each")
    args = parser.parse_args(argv)
    sizes = sorted(int(size) for size in args.sizes.split(","))
    print(f"embedded broker CPU per record produced and fetched, {args.probes} round trips"
          f" each ({os.cpu_count()} cores):", flush=True)
    for filled, label in (("measured", "in the fetched partition"),
                          ("other", "in another topic")):
        for size, ms in measure(sizes, filled, args.probes):
            print(f"  {size:6d} batches {label:<25} {ms:6.2f} ms", flush=True)


if __name__ == "__main__":
    main()
