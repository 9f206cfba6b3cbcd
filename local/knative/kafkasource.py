"""A local stand-in for Knative's KafkaSource, with the same delivery rules.

Functions are written against what KafkaSource does in the cluster
(binary-mode forwarding, which answers are retried, which go to the dead
letter, ordered partitions), so the local stack must behave the same or
handlers would pass locally and fail when deployed. One consumer per
reaction, committing to the group named like the real KafkaSource's
``consumerGroup``.

How a consumer waits for records depends on the broker. Real Kafka answers a
waiting fetch as soon as a record arrives: without a doorbell each consumer
long-polls (``long_poll_ms``), which costs nothing at rest and delays
nothing. The embedded broker (Tansu) holds an empty fetch for its whole wait,
so under the local stack producers ring a doorbell (`local.knative.doorbell`)
with the topics they wrote to, each consumer sleeps until its topics ring
and then fetches what is there, and one paced look at the broker's offsets
(`_Look`) wakes the consumers of topics that moved without a ring (a test's
or a tool's producer).

Deliberate differences: the emulator assigns itself every partition of its
topics rather than joining the group as a member. It is the group's only
consumer; membership would add nothing locally but heartbeats (most of the
idle CPU of a dozen groups), a join of seconds at every start, and a stall of
a session timeout after a crash. Offsets of fully delivered records are
committed (never a consumer's position past a batch still in flight) once a
second while records flow and at once when they stop (Knative commits on a
longer period; both are at-least-once), the dead letter is a Kafka topic
rather than an HTTP sink, and ``stop()`` waits for in-flight POSTs (each
bounded by ``timeout``).
"""

from __future__ import annotations

import base64
import http.client
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import Any, Literal
from urllib.parse import urlsplit

from kafka import KafkaConsumer, KafkaProducer  # type: ignore[import-untyped,unused-ignore]
from kafka.errors import KafkaError  # type: ignore[import-untyped,unused-ignore]
from kafka.structs import (  # type: ignore[import-untyped,unused-ignore]
    OffsetAndMetadata,
    TopicPartition,
)

from local.knative.doorbell import DoorbellListener
from shared.domain.events import DEAD_LETTER_TOPIC
from shared.runtime.envelope import kafka_headers_to_http
from shared.runtime.routing import Reaction

__all__ = ["DeliveryStats", "KafkaSourceEmulator"]

_log = logging.getLogger("marketplace.kafkasource")

_RETRYABLE = frozenset({404, 408, 409, 429})  # plus every 5xx and connection errors
_ERROR_DATA_LIMIT = 1024  # Knative truncates knativeerrordata to this many bytes
# A rung consumer's fetch: the records are there (the bell rings after the broker's
# acknowledgement), so the broker answers at once; an empty one is held this long.
_RUNG_FETCH_MS = 20
# Long enough for a fetch sent before the bell to end and one sent after it to answer.
_RUNG_POLL_MS = 60
_LONG_POLL_STOP_MS = 1000  # without a doorbell: how long stop() may wait for a poll
_COMMIT_SECONDS = 1.0
_LAG_SECONDS = 1.0  # how fresh the consumer lag in /metrics is while records flow
_PARTITIONS_SECONDS = 60.0  # how often a long-polling consumer looks for new partitions
_SOURCE_PREFIX = "/apis/v1/namespaces/local/kafkasources/"  # namespace: "local"
_Headers = list[tuple[str, bytes]]
BackoffPolicy = Literal["linear", "exponential"]


@dataclass
class DeliveryStats:
    """Per-reaction counters; ``retried`` counts attempts, not records, ``polls`` the
    consumer's polls (at rest it should not poll at all)."""

    delivered: int = 0
    retried: int = 0
    dead_lettered: int = 0
    polls: int = 0


class _Stopped(Exception):
    """stop() interrupted a delivery: leave the batch uncommitted, to come again."""


class KafkaSourceEmulator:
    """Consume each reaction's topics and POST every record to its sink."""

    def __init__(
        self,
        bootstrap: str,
        reactions: Iterable[Reaction],
        sink_url: Callable[[Reaction], str],
        dead_letter_topic: str = DEAD_LETTER_TOPIC,
        retry: int = 20,
        backoff_policy: BackoffPolicy = "linear",
        backoff_delay: float = 1.0,
        timeout: float = 30.0,
        max_poll_records: int = 50,
        doorbell: DoorbellListener | None = None,
        long_poll_ms: int = 5000,
        look_seconds: tuple[float, float] = (0.5, 4.0),
    ) -> None:
        self._bootstrap = bootstrap
        # Reactions without topics run on a schedule: PingSources, not ours.
        self._reactions = [r for r in reactions if r.topics]
        self._sink_url = sink_url
        self._dead_letter_topic = dead_letter_topic
        self._retry = retry
        self._backoff_policy = backoff_policy
        self._backoff_delay = backoff_delay
        self._timeout = timeout
        self._max_poll_records = max_poll_records
        self._doorbell = doorbell
        self._long_poll_ms = long_poll_ms
        self._look_seconds = look_seconds
        self._stats = {r.target: DeliveryStats() for r in self._reactions}
        self._lag = {r.consumer_group: 0 for r in self._reactions}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._ready: dict[str, threading.Event] = {}
        self._wake: dict[str, threading.Event] = {r.target: threading.Event()
                                                  for r in self._reactions}
        self._partitions: dict[str, frozenset[int]] = {}  # per topic, as the look last saw
        self._threads: list[threading.Thread] = []
        self._consumers: list[threading.Thread] = []
        self._local = threading.local()
        self._connections: list[_KeptAlive] = []
        self._producer: Any = None
        self._started = False

    # --- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Create the consumers here: a broker problem raises now, not in a thread."""
        if self._started:
            raise RuntimeError("a KafkaSourceEmulator starts once")
        self._started = True
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=self._bootstrap, acks="all", linger_ms=0,
                metrics_enabled=False,
            )
            for reaction in self._reactions:
                self._start_consumer(reaction)
            if self._doorbell is not None and self._reactions:
                for reaction in self._reactions:
                    self._doorbell.subscribe(reaction.topics, self._wake[reaction.target].set)
                look = _Look(self, KafkaConsumer(
                    bootstrap_servers=self._bootstrap, client_id="kafkasource-look",
                    metrics_enabled=False))
                self._spawn("kafkasource-look", look.run)
        except BaseException:
            self.stop()
            raise

    def _start_consumer(self, reaction: Reaction) -> None:
        rung = self._doorbell is not None
        consumer = KafkaConsumer(
            bootstrap_servers=self._bootstrap,
            client_id=f"kafkasource-{reaction.name}",
            group_id=reaction.consumer_group,  # for its committed offsets: no membership
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            max_poll_records=self._max_poll_records,
            fetch_min_bytes=1,  # a record is an answer
            fetch_max_wait_ms=_RUNG_FETCH_MS if rung else self._long_poll_ms,
            request_timeout_ms=max(30000, self._long_poll_ms + 10000),
            # kafka-python's sensors cost CPU on every fetch; /metrics has its own figures
            metrics_enabled=False,
        )
        self._ready[reaction.target] = threading.Event()
        self._consumers.append(
            self._spawn(f"kafkasource-{reaction.name}", self._consume, reaction, consumer))

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()
        return thread

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until every consumer holds the partitions of its topics and has polled.

        Records produced before that are not lost (initial offset: earliest),
        but tests and the stack want to know the sources are live.
        """
        deadline = time.monotonic() + timeout
        for thread, (target, ready) in zip(self._consumers, self._ready.items(), strict=True):
            while not ready.wait(0.05):
                if not thread.is_alive():
                    raise RuntimeError(f"consumer for {target} died; see the log")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"consumer for {target} got no partitions in {timeout:g}s")

    def stop(self) -> None:
        """Stop polling, let in-flight deliveries end, close everything (idempotent)."""
        self._stopping.set()
        for wake in self._wake.values():
            wake.set()
        for thread in self._threads:
            thread.join()
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()

    def stats(self) -> dict[str, DeliveryStats]:
        with self._lock:
            return {target: replace(s) for target, s in self._stats.items()}

    def lag(self) -> dict[str, int]:
        """Records not yet handled, per consumer group, as of each group's last poll."""
        return dict(self._lag)

    def wake(self, topics: Iterable[str]) -> None:
        """Have the consumers of these topics fetch now (what a ring does)."""
        wanted = set(topics)
        for reaction in self._reactions:
            if wanted.intersection(reaction.topics):
                self._wake[reaction.target].set()

    # --- consuming -------------------------------------------------------------

    def _consume(self, reaction: Reaction, consumer: Any) -> None:
        ready, wake = self._ready[reaction.target], self._wake[reaction.target]
        pool = ThreadPoolExecutor(self._max_poll_records, f"kafkasource-{reaction.name}-send")
        rung = self._doorbell is not None
        poll_ms = _RUNG_POLL_MS if rung else min(self._long_poll_ms, _LONG_POLL_STOP_MS)
        positions = _Positions()
        committed_at = lag_read_at = partitions_read_at = time.monotonic()
        try:
            if not self._assign(reaction, consumer):
                return
            wake.set()  # the first poll: whatever the topics hold past the committed offsets
            while not self._stopping.is_set():
                if rung:
                    # Delivered offsets are committed a second after the last commit, or
                    # when the bell stays quiet that long: at 20 bookings/s each group
                    # sees records one at a time, and a commit per record was a broker
                    # round trip per delivery. A crash before it re-delivers, harmlessly.
                    due = (max(0.0, committed_at + _COMMIT_SECONDS - time.monotonic())
                           if positions.uncommitted else None)
                    if not wake.wait(due):
                        try:
                            positions.commit(consumer)
                            self._lag[reaction.consumer_group] = positions.lag(consumer)
                            lag_read_at = time.monotonic()
                        except KafkaError as exc:  # kept for the next commit, a second on
                            _log.warning("consumer %s: %s", reaction.consumer_group, exc)
                        committed_at = time.monotonic()
                        continue
                    if self._stopping.is_set():
                        break
                    wake.clear()
                try:
                    if rung or time.monotonic() - partitions_read_at >= _PARTITIONS_SECONDS:
                        self._assign(reaction, consumer, again=True)
                        partitions_read_at = time.monotonic()
                    batch = consumer.poll(timeout_ms=poll_ms)
                    self._count(reaction, "polls")
                    ready.set()
                    if batch:
                        if not self._handle(reaction, consumer, pool, batch, positions):
                            self._stopping.wait(1.0)  # a crash, rewound: again, not at once
                            wake.set()
                        elif sum(len(records) for records in batch.values()) >= \
                                self._max_poll_records:
                            wake.set()  # more may be buffered: no bell will say so
                    resting = not rung and not batch
                    # Commit once a second while records flow, at once when a long poll
                    # comes back empty (with a bell: when it stays quiet, above): a
                    # commit is a broker round trip, and as much work as a delivery.
                    if positions.uncommitted and (
                            resting or time.monotonic() - committed_at >= _COMMIT_SECONDS):
                        positions.commit(consumer)
                        committed_at = time.monotonic()
                    # position() is not free: the lag is read once a second, and on the
                    # way to rest, so that /metrics does not keep a figure from mid-flow.
                    first = reaction.consumer_group not in self._lag
                    if first or ((batch or not rung) and (
                            resting or time.monotonic() - lag_read_at >= _LAG_SECONDS)):
                        self._lag[reaction.consumer_group] = positions.lag(consumer)
                        lag_read_at = time.monotonic()
                except KafkaError as exc:  # a broker hiccup: what is not committed comes again
                    _log.warning("consumer %s: %s", reaction.consumer_group, exc)
                    self._stopping.wait(1.0)
                    wake.set()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if positions.uncommitted:
                with suppress(KafkaError):
                    positions.commit(consumer)
            consumer.close(autocommit=False)

    def _assign(self, reaction: Reaction, consumer: Any, again: bool = False) -> bool:
        """Assign every partition of the reaction's topics; False if stopped first.

        The first time, wait for each topic's partitions (the stack creates the
        topics first; a topic still missing is waited for, as a subscription
        would) and for each partition's starting offset; later, only take on
        partitions the look or the metadata added (a KafkaError is the caller's).
        """
        if again:
            wanted = self._partitions_of(reaction, consumer)
            added = wanted - set(consumer.assignment())
            if added:
                _log.info("consumer %s takes on partitions %s", reaction.consumer_group,
                          sorted(map(str, added)))
                consumer.assign(sorted(wanted | set(consumer.assignment())))
                self._position(consumer, added)
            return True
        while True:
            try:
                wanted = self._partitions_of(reaction, consumer)
                if {tp.topic for tp in wanted} == set(reaction.topics):
                    consumer.assign(sorted(wanted))
                    self._position(consumer, wanted)
                    return True
            except KafkaError as exc:  # the broker is slow to answer: try again
                _log.warning("consumer %s: %s", reaction.consumer_group, exc)
            if self._stopping.wait(0.5):
                return False

    def _partitions_of(self, reaction: Reaction, consumer: Any) -> set[Any]:
        """The reaction's partitions: as the look last saw them, else from metadata."""
        wanted: set[Any] = set()
        for topic in reaction.topics:
            known = self._partitions.get(topic) if self._doorbell is not None else None
            if known is None:
                known = frozenset(consumer.partitions_for_topic(topic) or ())
            wanted.update(TopicPartition(topic, p) for p in known)
        return wanted

    @staticmethod
    def _position(consumer: Any, partitions: Iterable[Any]) -> None:
        """Settle each partition's starting offset (committed, else earliest) now, so the
        first poll fetches: a poll that only resolved positions would fetch nothing, and a
        consumer waiting for bells would not poll again before one rings."""
        for tp in partitions:
            consumer.position(tp, timeout_ms=10_000)

    def _handle(self, reaction: Reaction, consumer: Any, pool: ThreadPoolExecutor,
                batch: dict[Any, list[Any]], positions: _Positions) -> bool:
        """Deliver a polled batch; each partition whose records were all delivered (or
        dead-lettered) counts as delivered, to be committed. False if one was rewound.

        A partition cut short by stop() stays uncommitted, to come again; one whose
        delivery crashed (a bug here) is rewound, so its records come again too.
        """
        per_partition: dict[Any, list[Future[None]]]
        if reaction.ordering == "ordered":
            per_partition = {tp: [pool.submit(self._deliver_in_order, reaction, records)]
                             for tp, records in batch.items()}
        else:
            per_partition = {tp: [pool.submit(self._deliver, reaction, r) for r in records]
                             for tp, records in batch.items()}
        wait([f for futures in per_partition.values() for f in futures])
        done: dict[Any, list[Any]] = {}
        rewound = False
        for tp, futures in per_partition.items():
            errors = [exc for exc in (f.exception() for f in futures) if exc is not None]
            if not errors:
                done[tp] = batch[tp]
                continue
            crashed = [exc for exc in errors if not isinstance(exc, _Stopped)]
            for exc in crashed[:1]:
                _log.error("delivery for %s crashed", reaction.target, exc_info=exc)
            if crashed and not self._stopping.is_set():
                consumer.seek(tp, batch[tp][0].offset)
                rewound = True
        positions.delivered(done)
        return not rewound
    # --- delivering ------------------------------------------------------------

    def _deliver_in_order(self, reaction: Reaction, records: list[Any]) -> None:
        for record in records:
            self._deliver(reaction, record)

    def _deliver(self, reaction: Reaction, record: Any) -> None:
        """POST one record until success, a non-retryable answer or retries run out."""
        if self._stopping.is_set():
            raise _Stopped
        url = self._sink_url(reaction)
        headers = _cloudevent_headers(reaction, record)
        attempt = 0
        while True:
            code, data = self._post(url, kafka_headers_to_http(headers), record.value or b"")
            if 0 < code < 300:
                self._count(reaction, "delivered")
                return
            retryable = code == 0 or code >= 500 or code in _RETRYABLE
            if not retryable or attempt >= self._retry:
                why = f"after {attempt} retries" if retryable else "not retryable"
                self._dead_letter(reaction, record, headers, url, code, data, why)
                return
            self._count(reaction, "retried")
            attempt += 1
            if self._stopping.wait(self.backoff(attempt)):
                raise _Stopped

    def backoff(self, retry: int) -> float:
        """Seconds before retry number `retry` (from 1), as Knative computes them."""
        if self._backoff_policy == "linear":
            return self._backoff_delay * retry
        return float(self._backoff_delay * 2 ** (retry - 1))

    def _post(self, url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        """Status and body of one attempt; 0 means a connection error or timeout."""
        connection: _KeptAlive | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = _KeptAlive(self._timeout)
            with self._lock:
                self._connections.append(connection)
        return connection.post(url, headers, body)

    def _dead_letter(
        self,
        reaction: Reaction,
        record: Any,
        headers: _Headers,
        url: str,
        code: int,
        data: bytes,
        why: str,
    ) -> None:
        """Produce the record with Knative's error extensions; the partition moves on.

        Like Knative, a failed dead-letter send is logged and the offset is
        committed anyway: a poison record must never stall its partition.
        """
        if record.topic == self._dead_letter_topic:
            # Its KafkaSource has no dead-letter sink (local.deploy.manifests): no loop.
            _log.error("dropped %s[%s]@%s for %s: HTTP %s, %s", record.topic, record.partition,
                       record.offset, reaction.target, code, why)
            self._count(reaction, "dead_lettered")
            return
        errors = [
            ("ce_knativeerrordest", url.encode()),
            ("ce_knativeerrorcode", str(code).encode()),
            ("ce_knativeerrordata", base64.b64encode(data[:_ERROR_DATA_LIMIT])),
        ]
        names = {name for name, _ in errors}
        out = [(n, v) for n, v in headers if n not in names] + errors
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        try:
            self._producer.send(
                self._dead_letter_topic, key=record.key, value=record.value, headers=out
            ).get(timeout=10)
            if self._doorbell is not None:  # its consumer here waits for the bell too
                self._doorbell.ring([self._dead_letter_topic])
        except KafkaError as exc:
            _log.error("dead letter for %s of %s lost: %s", where, reaction.target, exc)
        _log.warning(
            "dead-lettered %s for %s: %s, %s: %s",
            where,
            reaction.target,
            f"HTTP {code}" if code else "connection error",
            why,
            data[:200].decode("utf-8", errors="replace"),
        )
        self._count(reaction, "dead_lettered")

    def _count(self, reaction: Reaction, field: str) -> None:
        with self._lock:
            stats = self._stats[reaction.target]
            setattr(stats, field, getattr(stats, field) + 1)


class _Positions:
    """Each partition's next offset to deliver: what to commit, and the consumer lag.

    Commits name these offsets, never the consumer's positions, which kafka-python
    moves past a batch as soon as it is polled, before its deliveries answered.
    Kept from the batches delivered, not asked of the consumer: kafka-python's
    `position()` validates positions on each call, a cost the emulator would pay
    for every group at every scrape. A partition that has delivered nothing yet
    asks once, for the lag only.
    """

    def __init__(self) -> None:
        self._next: dict[Any, int] = {}
        self._uncommitted: dict[Any, int] = {}
        self._assignment: frozenset[Any] = frozenset()

    @property
    def uncommitted(self) -> bool:
        return bool(self._uncommitted)

    def delivered(self, batch: dict[Any, list[Any]]) -> None:
        for tp, records in batch.items():
            if records:
                self._next[tp] = self._uncommitted[tp] = records[-1].offset + 1

    def commit(self, consumer: Any) -> None:
        """Commit what was delivered since the last commit (raises KafkaError: kept for
        the next one)."""
        offsets = dict(self._uncommitted)
        consumer.commit({tp: OffsetAndMetadata(n, "", -1) for tp, n in offsets.items()})
        for tp, n in offsets.items():
            if self._uncommitted.get(tp) == n:
                del self._uncommitted[tp]

    def lag(self, consumer: Any) -> int:
        """Records behind the high watermark the last fetch reported, over the group's
        partitions (from fetch responses, not `end_offsets()`, which the embedded broker
        gets wrong after batched produces)."""
        assignment = frozenset(consumer.assignment())
        if assignment != self._assignment:  # another assignment: forget the partitions gone
            self._next = {tp: n for tp, n in self._next.items() if tp in assignment}
            self._assignment = assignment
        behind = 0
        for tp in assignment:
            high = consumer.highwater(tp)
            if high is None:
                continue
            position = self._next.get(tp)
            if position is None:
                position = self._next[tp] = consumer.position(tp)
            behind += max(0, high - position)
        return behind


class _Look:
    """The paced look at the broker's end offsets, for records no bell announced.

    One ListOffsets request for every partition the emulator reads, every
    half second after something moved and twice as seldom each time nothing
    did, up to a few seconds: about 2 ms of CPU each, the cost of the whole
    emulator at rest. Offsets that moved on a topic that rang in the last
    second are its consumers' business already; they are taken as seen only
    once the topic has been quiet for a second (or after five seconds of
    postponing), so a record that slipped between a fetch and the next bell
    is fetched then. The embedded broker's end offsets are wrong after batched
    produces, but they change with every produce, and a change is all this
    looks for. The look also brings partitions added to a topic to its
    consumers, as a subscription's rebalance would.
    """

    QUIET_SECONDS, POSTPONE_SECONDS = 1.0, 5.0

    def __init__(self, emulator: KafkaSourceEmulator, consumer: Any) -> None:
        self.emulator = emulator
        self.consumer = consumer
        self.topics = sorted({t for r in emulator._reactions for t in r.topics})
        self.seen: dict[Any, int] | None = None  # None: the first look wakes every consumer
        self.rung_at: dict[str, float] = {}
        self.postponed_since: dict[str, float] = {}
        assert emulator._doorbell is not None
        for topic in self.topics:
            emulator._doorbell.subscribe([topic], self._rang(topic))

    def _rang(self, topic: str) -> Callable[[], None]:
        def rang() -> None:
            self.rung_at[topic] = time.monotonic()
        return rang

    def run(self) -> None:
        shortest, longest = self.emulator._look_seconds
        pause = shortest
        stopping = self.emulator._stopping
        try:
            while not stopping.wait(pause):
                try:
                    woke = self.look()
                except KafkaError as exc:  # the broker is away: look again later
                    _log.debug("look at the end offsets: %s", exc)
                    woke = False
                except Exception:
                    _log.exception("look at the end offsets failed")
                    woke = False
                pause = shortest if woke else min(pause * 2, longest)
        finally:
            self.consumer.close()

    def look(self) -> bool:
        """Wake the consumers of topics whose offsets moved unannounced; True if any."""
        partitions = {t: frozenset(self.consumer.partitions_for_topic(t) or ())
                      for t in self.topics}
        grown = [t for t, ps in partitions.items()
                 if ps and ps != self.emulator._partitions.get(t, ps)]
        self.emulator._partitions.update({t: ps for t, ps in partitions.items() if ps})
        wanted = [TopicPartition(t, p) for t, ps in partitions.items() for p in sorted(ps)]
        ends: dict[Any, int] = self.consumer.end_offsets(wanted) if wanted else {}
        now = time.monotonic()
        if self.seen is None:
            self.seen = dict(ends)
            self.emulator.wake(self.topics)
            return False
        moved = {tp.topic for tp, end in ends.items() if self.seen.get(tp) != end}
        wake = set(grown)
        for topic in moved:
            busy = now - self.rung_at.get(topic, -1e9) < self.QUIET_SECONDS
            since = self.postponed_since.setdefault(topic, now)
            if busy and now - since < self.POSTPONE_SECONDS:
                continue
            del self.postponed_since[topic]
            self.seen.update({tp: end for tp, end in ends.items() if tp.topic == topic})
            wake.add(topic)
        if wake:
            self.emulator.wake(wake)
        # Only a move no bell explains says a producer that does not ring is at work.
        return any(now - self.rung_at.get(t, -1e9) >= self.QUIET_SECONDS for t in wake)


class _KeptAlive:
    """One delivery thread's kept-alive HTTP connection, with plain `http.client`.

    Delivering is most of what the emulator does, and `requests` costs more
    CPU per delivery than the POST itself; a kept-alive connection per thread
    does the same POST for a fraction of that. gunicorn drops a connection idle for
    2 s, so one idle longer is replaced before use, and a reused one that
    fails is tried once more on a fresh one (a redelivery is harmless).
    """

    MAX_IDLE_SECONDS = 1.5

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._netloc = ""
        self._last_used = 0.0

    def post(self, url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        parsed = urlsplit(url)
        path = parsed.path or "/"
        reused = (self._conn is not None and self._netloc == parsed.netloc
                  and time.monotonic() - self._last_used < self.MAX_IDLE_SECONDS)
        if not reused:
            self.close()
            self._conn = http.client.HTTPConnection(parsed.hostname or "127.0.0.1",
                                                    parsed.port or 80, timeout=self.timeout)
            self._netloc = parsed.netloc
        try:
            return self._send(path, headers, body)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            if reused and not isinstance(exc, TimeoutError):
                return self.post(url, headers, body)  # the server had closed it: once more
            return 0, f"{type(exc).__name__}: {exc}".encode()

    def _send(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        assert self._conn is not None
        self._conn.request("POST", path, body=body, headers=headers)
        response = self._conn.getresponse()
        data = response.read()
        self._last_used = time.monotonic()
        if response.will_close:
            self.close()
        return response.status, data

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _cloudevent_headers(reaction: Reaction, record: Any) -> _Headers:
    """The record's headers, wrapped as Knative does when it is not a CloudEvent yet."""
    headers: _Headers = [(name, value or b"") for name, value in record.headers or []]
    if any(name == "ce_specversion" for name, _ in headers):
        return headers
    p, o = record.partition, record.offset
    wrapped = {
        "ce_specversion": "1.0",
        "ce_id": f"partition:{p}/offset:{o}",
        "ce_source": f"{_SOURCE_PREFIX}{reaction.name}#{record.topic}",
        "ce_type": "dev.knative.kafka.event",
        "ce_subject": f"partition:{p}#{o}",
    }
    if not any(name.lower() == "content-type" for name, _ in headers):
        wrapped["content-type"] = "application/json"
    return headers + [(name, value.encode()) for name, value in wrapped.items()]
