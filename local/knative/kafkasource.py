"""A local stand-in for Knative's KafkaSource, with the same delivery rules.

Functions are written against what KafkaSource does in the cluster
(binary-mode forwarding, which answers are retried, which go to the dead
letter, ordered partitions), so the local stack must behave the same or
handlers would pass locally and fail when deployed. One consumer group per
reaction, named like the real KafkaSource's ``consumerGroup``.

Deliberate differences: offsets of fully handled batches are committed once a
second while records flow and at once when they stop (Knative commits on a
longer period; both are at-least-once), the dead letter is a Kafka topic
rather than an HTTP sink, and ``stop()`` waits for in-flight POSTs
(each bounded by ``timeout``).
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

from shared.domain.events import DEAD_LETTER_TOPIC
from shared.runtime.envelope import kafka_headers_to_http
from shared.runtime.routing import Reaction

__all__ = ["DeliveryStats", "KafkaSourceEmulator"]

_log = logging.getLogger("marketplace.kafkasource")

_RETRYABLE = frozenset({404, 408, 409, 429})  # plus every 5xx and connection errors
_ERROR_DATA_LIMIT = 1024  # Knative truncates knativeerrordata to this many bytes
_POLL_MS = 200  # also bounds how long stop() waits for an idle consumer
_COMMIT_SECONDS = 1.0
_LAG_SECONDS = 1.0  # how fresh the consumer lag in /metrics is
_SOURCE_PREFIX = "/apis/v1/namespaces/local/kafkasources/"  # namespace: "local"
_Headers = list[tuple[str, bytes]]
BackoffPolicy = Literal["linear", "exponential"]


@dataclass
class DeliveryStats:
    """Per-reaction counters; ``retried`` counts attempts, not records."""

    delivered: int = 0
    retried: int = 0
    dead_lettered: int = 0


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
        self._stats = {r.target: DeliveryStats() for r in self._reactions}
        self._lag = {r.consumer_group: 0 for r in self._reactions}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._ready: dict[str, threading.Event] = {}
        self._threads: list[threading.Thread] = []
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
        except BaseException:
            self.stop()
            raise

    def _start_consumer(self, reaction: Reaction) -> None:
        consumer = KafkaConsumer(
            bootstrap_servers=self._bootstrap,
            client_id=f"kafkasource-{reaction.name}",
            group_id=reaction.consumer_group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            max_poll_records=self._max_poll_records,
            # The embedded broker (Tansu) holds a group join for the whole poll interval:
            # kafka-python's default would stall every rebalance for minutes.
            max_poll_interval_ms=10000,
            # A killed emulator's groups rebalance once its session times out: a short
            # session shortens the stall after a crash.
            session_timeout_ms=3000,
            heartbeat_interval_ms=1000,
            fetch_max_wait_ms=_FetchPacing.IDLE_MS,  # see _FetchPacing
            # kafka-python's sensors cost CPU on every fetch; /metrics has its own figures
            metrics_enabled=False,
        )
        consumer.subscribe(list(reaction.topics))
        self._ready[reaction.target] = threading.Event()
        thread = threading.Thread(
            target=self._consume,
            args=(reaction, consumer),
            name=f"kafkasource-{reaction.name}",
            daemon=True,
        )
        self._threads.append(thread)
        thread.start()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until every consumer has joined its group and holds partitions.

        Records produced before that are not lost (initial offset: earliest),
        but tests and the stack want to know the sources are live.
        """
        deadline = time.monotonic() + timeout
        for thread, (target, ready) in zip(self._threads, self._ready.items(), strict=True):
            while not ready.wait(0.05):
                if not thread.is_alive():
                    raise RuntimeError(f"consumer for {target} died; see the log")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"consumer for {target} got no partitions in {timeout:g}s")

    def stop(self) -> None:
        """Stop polling, let in-flight deliveries end, close everything (idempotent)."""
        self._stopping.set()
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

    # --- consuming -------------------------------------------------------------

    def _consume(self, reaction: Reaction, consumer: Any) -> None:
        ready = self._ready[reaction.target]
        pool = ThreadPoolExecutor(self._max_poll_records, f"kafkasource-{reaction.name}-send")
        pacing = _FetchPacing(consumer)
        uncommitted, committed_at = False, time.monotonic()
        lag_read_at = 0.0
        positions = _Positions()
        try:
            while not self._stopping.is_set():
                try:
                    batch = consumer.poll(timeout_ms=_POLL_MS)
                    pacing.saw(bool(batch))
                    if consumer.assignment():
                        ready.set()
                    if batch and self._handle(reaction, consumer, pool, batch):
                        uncommitted = True
                        positions.delivered(batch)
                    # Commit once a second while records flow, at once when they stop:
                    # a commit is a broker round trip, and as much work as a delivery.
                    if uncommitted and (
                            not batch or time.monotonic() - committed_at >= _COMMIT_SECONDS):
                        consumer.commit()
                        uncommitted, committed_at = False, time.monotonic()
                    if time.monotonic() - lag_read_at >= _LAG_SECONDS:  # position() is not free
                        self._lag[reaction.consumer_group] = positions.lag(consumer)
                        lag_read_at = time.monotonic()
                except KafkaError as exc:  # rebalance, broker hiccup: redelivered
                    _log.warning("consumer %s: %s", reaction.consumer_group, exc)
                    uncommitted = False
                    self._stopping.wait(1.0)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if uncommitted:
                with suppress(KafkaError):
                    consumer.commit()
            consumer.close(autocommit=False)

    def _handle(
        self, reaction: Reaction, consumer: Any, pool: ThreadPoolExecutor, batch: Any
    ) -> bool:
        """Deliver a polled batch; True once each record was delivered or dead-lettered.

        The caller commits only then: a batch cut short by stop() comes again.
        """
        futures: list[Future[None]]
        if reaction.ordering == "ordered":
            futures = [pool.submit(self._deliver_in_order, reaction, rs) for rs in batch.values()]
        else:
            futures = [pool.submit(self._deliver, reaction, r) for rs in batch.values() for r in rs]
        # Keep polling while the batch is in flight, partitions paused: long
        # retry chains must not exceed max_poll_interval_ms and cost us the group.
        paused = consumer.assignment()
        consumer.pause(*paused)
        while wait(futures, timeout=0.5).not_done:
            try:
                # Only partitions newly assigned by a rebalance can return
                # records here: rewind them, they come with the next batch.
                for tp, records in consumer.poll(timeout_ms=0).items():
                    consumer.seek(tp, records[0].offset)
            except KafkaError as error:
                _log.warning("consumer %s: %s", reaction.consumer_group, error)
        consumer.resume(*(consumer.assignment() & paused))
        complete = True
        for future in futures:
            exc = future.exception()
            if exc is not None:
                complete = False
                if not isinstance(exc, _Stopped):
                    _log.error("delivery for %s crashed", reaction.target, exc_info=exc)
        return complete

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


class _FetchPacing:
    """How long the broker may hold a consumer's fetch: short while records flow, long when idle.

    The embedded broker (Tansu) does not answer a waiting fetch when a record
    arrives: it holds it for the whole `fetch_max_wait_ms`, so a long wait adds
    its length to every hop of the saga. But short waits for every idle
    consumer keep the broker and the emulator busy at rest. So a consumer that
    just received records fetches with a short wait, and one idle for a while
    goes back to the long one. Real Kafka answers early; in a cluster this is
    moot.

    kafka-python reads `fetch_max_wait_ms` from its fetcher's config for each
    fetch request; if a later version hides it, pacing stays at the idle value.
    """

    BUSY_MS, IDLE_MS, IDLE_AFTER_SECONDS = 100, 500, 2.0

    def __init__(self, consumer: Any) -> None:
        fetcher = getattr(consumer, "_fetcher", None)
        config = getattr(fetcher, "config", None)
        self._config: dict[str, Any] | None = (
            config if isinstance(config, dict) and "fetch_max_wait_ms" in config else None)
        self._last_records = 0.0

    def saw(self, records: bool) -> None:
        if self._config is None:
            return
        now = time.monotonic()
        if records:
            self._last_records = now
            self._config["fetch_max_wait_ms"] = self.BUSY_MS
        elif now - self._last_records > self.IDLE_AFTER_SECONDS:
            self._config["fetch_max_wait_ms"] = self.IDLE_MS


class _Positions:
    """Each partition's next offset to deliver, for the consumer lag in /metrics.

    Kept from the batches delivered, not asked of the consumer: kafka-python's
    `position()` validates positions on each call, a cost the emulator would pay
    for every group at every scrape. A partition that has delivered nothing yet
    asks once.
    """

    def __init__(self) -> None:
        self._next: dict[Any, int] = {}
        self._assignment: frozenset[Any] = frozenset()

    def delivered(self, batch: dict[Any, list[Any]]) -> None:
        for tp, records in batch.items():
            if records:
                self._next[tp] = records[-1].offset + 1

    def lag(self, consumer: Any) -> int:
        """Records behind the high watermark the last fetch reported, over the group's
        partitions (from fetch responses, not `end_offsets()`, which the embedded broker
        gets wrong after batched produces)."""
        assignment = frozenset(consumer.assignment())
        if assignment != self._assignment:  # a rebalance: forget the partitions given away
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
