"""Batches the embedded broker stores for a number of bookings, on a tree's own `make run`.

The local broker ages by the batches it stores, not the records
(`local.measure.brokergrowth`): its fetch walks every stored batch of a
partition. So `--broker-growth --against REF --bookings N` books and pays N
times through each tree's `make run` (its own code, on a free port, as
`local.measure.idlerun` starts it), drives the load from this tree's
generator, and then reads every partition of every topic back from offset 0,
counting the record batches the broker hands out. Counted from outside, so
an old tree is measured exactly as this one is.

kafka-python hides batch boundaries from its consumer, so the count wraps the
`MemoryRecords` its fetcher parses: each batch seen once, by its first and
next offset, in one partition read at a time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local.apiclient import ApiClient
from local.measure import cpu, idlerun, load
from local.measure.load import Profile, Target
from local.stack.stack import LOAD_RUN_ENV, LOAD_RUN_TOKEN_TTL_SECONDS

ADMIN = ("admin@marketplace.local", "batches-admin-password")
SETTLED_WITHIN_SECONDS = 120.0  # after the last session, until no batch is added
QUIET_SECONDS = 3.0


@dataclass(frozen=True)
class Stored:
    records: int
    batches: int
    by_topic: dict[str, tuple[int, int]]  # topic -> (records, batches)


def stored(bootstrap: str) -> Stored:
    """Every record and batch in every topic, read back from offset 0."""
    import kafka.consumer.fetcher as fetcher  # type: ignore[import-untyped]
    from kafka import KafkaConsumer, TopicPartition  # type: ignore[import-untyped]
    from kafka.record import MemoryRecords  # type: ignore[import-untyped]

    seen: set[tuple[int, int]] = set()

    class Counting(MemoryRecords):  # type: ignore[misc]
        def next_batch(self, *args: Any, **kwargs: Any) -> Any:
            batch = super().next_batch(*args, **kwargs)
            if batch is not None:
                seen.add((batch.base_offset, batch.next_offset))
            return batch

    fetcher.MemoryRecords = Counting  # this measuring process's consumer only
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             fetch_max_wait_ms=50, client_id="marketplace-batch-count")
    by_topic: dict[str, tuple[int, int]] = {}
    try:
        for topic in sorted(consumer.topics()):
            records = batches = 0
            for partition in sorted(consumer.partitions_for_topic(topic) or ()):
                seen.clear()
                tp = TopicPartition(topic, partition)
                consumer.assign([tp])
                consumer.seek(tp, 0)
                empty = 0
                while empty < 2:  # the broker answered twice with nothing more
                    got = consumer.poll(timeout_ms=100)
                    records += sum(len(r) for r in got.values())
                    empty = 0 if got else empty + 1
                batches += len(seen)
            by_topic[topic] = (records, batches)
    finally:
        consumer.close()
        fetcher.MemoryRecords = MemoryRecords
    return Stored(sum(r for r, _ in by_topic.values()), sum(b for _, b in by_topic.values()),
                  by_topic)


def settled(bootstrap: str) -> Stored:
    """What is stored once the stack stops adding batches (notifications trail a booking)."""
    deadline = time.monotonic() + SETTLED_WITHIN_SECONDS
    last = stored(bootstrap)
    while time.monotonic() < deadline:
        time.sleep(QUIET_SECONDS)
        now = stored(bootstrap)
        if now.batches == last.batches:
            return now
        last = now
    return last


@contextmanager
def running(tree: Path, module: str, log: Path) -> Iterator[tuple[str, str]]:
    """The tree's `make run` with the load run's limits (`idlerun.started`): (API URL, broker)."""
    env = {**LOAD_RUN_ENV, "ADMIN_EMAIL": ADMIN[0], "ADMIN_PASSWORD": ADMIN[1],
           "ACCESS_TOKEN_TTL_SECONDS": str(LOAD_RUN_TOKEN_TTL_SECONDS)}
    with idlerun.started(tree, module, log, env) as (process, port):
        yield f"http://127.0.0.1:{port}", _broker(process.pid)


def _broker(leader: int) -> str:
    """The embedded broker's address, from its command line (`--listener-url tcp://H:P`)."""
    pid = idlerun.roles_of(leader).get("kafka")
    argv = cpu.command_line(pid) if pid else []
    for index, arg in enumerate(argv):
        if arg == "--listener-url" and index + 1 < len(argv):
            return argv[index + 1].removeprefix("tcp://")
    raise RuntimeError("the stack's broker was not found among its processes")


def measure(tree: Path, module: str, bookings: int, rate: float, log: Path) -> dict[str, Any]:
    """Book and pay `bookings` times at `rate`/s; what the broker stored for them."""
    with running(tree, module, log) as (api, broker):
        admin = ApiClient(api).login(*ADMIN)
        users = load.register_users(api, 50)
        courses = load.publish_courses(admin, bookings)
        before = settled(broker)
        result = load.start(Target(api, users, courses),
                            Profile(rate, bookings / rate, {"pay": 1.0})).join()
        after = settled(broker)
    sessions = len(result.sessions)
    batches, records = after.batches - before.batches, after.records - before.records
    return {"bookings": sessions, "unexpected_sessions": len(result.unexpected()),
            "records": records, "batches": batches,
            "records_per_booking": round(records / max(1, sessions), 3),
            "batches_per_booking": round(batches / max(1, sessions), 3),
            "records_per_batch": round(records / batches, 3) if batches else math.nan,
            "by_topic": {t: {"records": r - before.by_topic.get(t, (0, 0))[0],
                             "batches": b - before.by_topic.get(t, (0, 0))[1]}
                         for t, (r, b) in after.by_topic.items()}}
