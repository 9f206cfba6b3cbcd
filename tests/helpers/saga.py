"""The saga driver: the broker's part played in process, so a test decides every order.

What functions commit to the outbox reaches the driver as the runtime's publisher
(synchronously, its marks written at once, as the real publisher's would be), and
becomes one pending delivery per consumer group the routing declaration subscribes
to its topic. Order is KafkaSource's: in order per (group, topic, partition), the
partition a hash of the record's key; no order across topics or groups; an
`unordered` reaction takes any of its records. Deliveries are posted in binary
CloudEvents mode to the same functions-framework apps the hosts serve, and the
answer is read as KafkaSource reads it: 2xx done, a retryable answer (5xx, 404,
408, 409, 429) stays pending, any other 4xx goes to the dead letter.

    driver = SagaDriver(rt, targets={"reserve_ticket", "settle_booking", ...})
    driver.pending()          # what may happen next
    driver.deliver(0)         # that one happens
    driver.redeliver(3)       # an already-delivered one again (the same CloudEvent id)
    driver.crash_next()       # the next commit is not published: only the relay sends it
    driver.relay()            # relay_outbox's work
    driver.settle()           # everything, until nothing is left
    driver.deliver_topic("payment.succeeded")   # what a test that follows one hop needs
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from shared.runtime import outbox
from shared.runtime.bootstrap import Runtime
from shared.runtime.envelope import Envelope, KafkaRecord, kafka_headers_to_http, to_kafka
from shared.runtime.routing import Reaction, load
from tests.helpers.events import app, fixture, post_to

# One app per function for the driver's life, as a host serves one module: a fresh
# create_app re-executes the function's file, and a history posts thousands of deliveries.
hosted = cache(app)

PARTITIONS = 4
RETRYABLE = frozenset({404, 408, 409, 429})


class Crashed(Exception):
    """The function died after its commit and before its publish."""


@dataclass
class Delivery:
    """One record for one consumer group."""

    number: int
    target: str
    record: KafkaRecord
    partition: int = 0
    answers: list[int] = field(default_factory=list)

    @property
    def event_type(self) -> str:
        return dict(self.record.headers).get("ce_type", b"").decode()

    @property
    def subject(self) -> str:
        return self.record.key.decode()

    @property
    def lane(self) -> tuple[str, str, int]:
        return (self.target, self.record.topic, self.partition)

    def __str__(self) -> str:
        return f"{self.record.topic}#{self.number} to {self.target}"


class _SyncMarks(outbox.PublishedMarks):
    """The publisher's marks, written at once: the relay sees exactly what was not sent."""

    def add(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        if ids:
            outbox.mark_published(self._db, ids)


class _Relay:
    """The relay's producer: it sends (a crash armed for a function is not its)."""

    def __init__(self, driver: SagaDriver) -> None:
        self.driver = driver

    def send_all(self, records: list[KafkaRecord]) -> None:
        for record in records:
            self.driver.offer(record)


class SagaDriver:
    """The broker, in process; also a Producer (`send_all`) for the runtime."""

    def __init__(self, rt: Runtime, targets: Iterable[str] | None = None,
                 partition: Callable[[bytes], int] | None = None) -> None:
        """`partition` maps a record key to its partition: by default a hash, as a
        producer's; a model passes one that does not depend on random ids, so that a
        seed replays the same lanes."""
        self.partition = partition or (lambda key: zlib.crc32(key) % PARTITIONS)
        reactions, _ = load()
        wanted = set(targets) if targets is not None else None
        self.reactions: list[Reaction] = [
            r for r in reactions if r.topics and (wanted is None or r.target in wanted)]
        self.rt = rt
        self.lanes: dict[tuple[str, str, int], list[Delivery]] = {}
        self.unordered: list[Delivery] = []
        self.delivered: list[Delivery] = []
        self.dead_letters: list[Delivery] = []
        self.records = 0
        self._crash = False
        self.crashed: list[str] = []  # the topics of the last publish that crashed
        rt.publisher = self
        rt._producer_ready = True
        rt._marks = _SyncMarks(rt.database)

    # --- the producer side ---------------------------------------------------

    def send_all(self, records: list[KafkaRecord]) -> None:
        if self._crash:
            self._crash = False
            self.crashed = [r.topic for r in records]
            raise Crashed("crashed after commit, before publish")
        for record in records:
            self.offer(record)

    def crash_next(self) -> None:
        """The next publish fails as a crash would: the rows stay in the outbox, unmarked."""
        self._crash = True

    def offer(self, record: KafkaRecord) -> None:
        self.records += 1
        for reaction in self.reactions:
            if record.topic not in reaction.topics:
                continue
            delivery = Delivery(self.records, reaction.target, record,
                                self.partition(record.key))
            if reaction.ordering == "unordered":
                self.unordered.append(delivery)
            else:
                self.lanes.setdefault(delivery.lane, []).append(delivery)

    def publish(self, envelope: Envelope[Any]) -> None:
        """A record produced straight to the broker (the watcher's)."""
        self.offer(to_kafka(envelope))

    def relay(self) -> int:
        """relay_outbox's work: every unpublished row, sent and marked (no grace period)."""
        sent = 0
        while n := outbox.publish(self.rt.db, _Relay(self), older_than_seconds=0):
            sent += n
        return sent

    # --- the consumer side ---------------------------------------------------

    def pending(self) -> list[Delivery]:
        """The deliveries that may happen next: each ordered lane's head, any unordered one."""
        return [lane[0] for _, lane in sorted(self.lanes.items()) if lane] + self.unordered

    def deliver(self, index: int) -> int:
        delivery = self.pending()[index]
        status = self._post(delivery)
        if status < 300 or (status < 500 and status not in RETRYABLE):
            if delivery in self.unordered:
                self.unordered.remove(delivery)
            else:
                self.lanes[delivery.lane].pop(0)
            (self.delivered if status < 300 else self.dead_letters).append(delivery)
        return status

    def redeliver(self, index: int) -> int:
        """An already-delivered record again (a commit KafkaSource lost, a rebalance)."""
        return self._post(self.delivered[index])

    def deliver_topic(self, topic: str) -> list[int]:
        """Every pending record of `topic`, each lane in its order; their answers."""
        answers = []
        while ready := [i for i, d in enumerate(self.pending()) if d.record.topic == topic]:
            answers.append(self.deliver(ready[0]))
            if answers[-1] >= 500 or answers[-1] in RETRYABLE:
                break  # it stays pending; the test sees the answer
        return answers

    def redeliver_topic(self, topic: str) -> list[int]:
        """Every delivered record of `topic` again, as after a lost commit of offsets."""
        return [self.redeliver(i) for i, d in enumerate(self.delivered)
                if d.record.topic == topic]

    def settle(self, limit: int = 1000) -> int:
        """Deliver until nothing is pending (first pending first); returns how many went."""
        count = 0
        while self.pending() and count < limit:
            self.deliver(0)
            count += 1
        return count

    def _post(self, delivery: Delivery) -> int:
        headers = kafka_headers_to_http(delivery.record.headers)
        answer = hosted(delivery.target).test_client().post(
            "/", data=delivery.record.value, headers=headers)
        delivery.answers.append(answer.status_code)
        return int(answer.status_code)

    # --- schedules -----------------------------------------------------------

    def tick(self, target: str) -> int:
        """One PingSource ping of a scheduled function."""
        return int(post_to(hosted(target), fixture("ping")).status_code)
