"""Producing records to Kafka, shared by the outbox, the watcher and the tools.

kafka-python, slow to import, is loaded with the first producer, not with the
module: a function that emits nothing never loads it.

Under the local stack a producer also rings a doorbell once the broker has
acknowledged its records (`Doorbell`): the embedded broker does not answer a
waiting fetch when a record arrives, so the KafkaSource emulator's consumers
wait for the bell instead of polling. Nowhere else is the bell set.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

from shared.runtime.envelope import KafkaRecord

DOORBELL_VARIABLE = "MARKETPLACE_KAFKA_DOORBELL"
"""`host:port` (UDP) of the local KafkaSource emulator's doorbell; set by the local stack only."""
UNSENT = "@unsent"
"""Rung with the topics when a send failed: records may be left in the outbox for the relay."""


class Doorbell:
    """A datagram naming the topics just written to, sent to the local emulator.

    Fire and forget, a `sendto` on loopback: a bell nobody hears (the
    emulator restarting) costs the emulator only its next paced look at the
    broker, never a record. Without an address it does nothing.
    """

    def __init__(self, address: str | None) -> None:
        self._target: tuple[str, int] | None = None
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        if address:
            host, _, port = address.rpartition(":")
            self._target = (host or "127.0.0.1", int(port))

    @classmethod
    def from_env(cls) -> Doorbell:
        return cls(os.environ.get(DOORBELL_VARIABLE))

    def __bool__(self) -> bool:
        return self._target is not None

    def ring(self, names: Iterable[str]) -> None:
        if self._target is None:
            return
        payload = "\n".join(sorted(set(names))).encode()
        if not payload:
            return
        try:
            with self._lock:
                if self._socket is None:
                    self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    self._socket.setblocking(False)
                sock = self._socket
            sock.sendto(payload, self._target)
        except OSError:  # nobody listening, a full buffer: the emulator's paced look finds it
            pass

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None


LINGER_SECONDS = 0.005
"""Under load, how long the first record of a group waits for others to share its batches."""
BUSY_WITHIN_SECONDS = 0.02
"""Under load means: the previous group went out less than this before the next record came."""


class _Waiting:
    """One caller's records, queued for the next group, and their futures once handed over."""

    __slots__ = ("error", "futures", "handed", "records")

    def __init__(self, records: list[KafkaRecord]) -> None:
        self.records = records
        self.futures: list[Any] = []
        self.error: BaseException | None = None
        self.handed = threading.Event()


class KafkaPublisher:
    """A lazily created, thread-safe producer that waits for every acknowledgement.

    Sends are grouped, as a database groups commits: one thread hands the
    producer every record queued since its last send, then flushes them as
    one request, so concurrent transactions' records to a partition share a
    batch and the broker stores (and fetches) fewer, larger ones. At idle a
    record goes at once; when the previous group left less than
    `BUSY_WITHIN_SECONDS` ago (load), the group waits `LINGER_SECONDS` from
    its first record for more. While a group is in flight the next one
    gathers, so under load no send waits behind more than one other.
    """

    def __init__(self, bootstrap_servers: str, timeout_seconds: float = 15.0,
                 doorbell: Doorbell | None = None) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.timeout_seconds = timeout_seconds
        self.doorbell = doorbell if doorbell is not None else Doorbell.from_env()
        self._producer: Any = None
        self._lock = threading.Lock()
        self._queued = threading.Condition()
        self._queue: list[_Waiting] = []
        self._first_queued = 0.0
        self._last_group = -1.0
        self._sender: threading.Thread | None = None
        self._closing = False

    def _get(self) -> Any:
        with self._lock:
            if self._producer is None:
                from kafka import KafkaProducer

                self._producer = KafkaProducer(
                    bootstrap_servers=self.bootstrap_servers.split(","),
                    acks="all",
                    # never on a timer: the group's flush sends it (see the class)
                    linger_ms=60_000,
                    retries=5,
                    max_in_flight_requests_per_connection=1,
                    client_id="marketplace",
                    # kafka-python's sensors cost CPU on every send, and nobody reads them
                    metrics_enabled=False,
                )
            return self._producer

    def warm(self) -> None:
        """Import the client and connect now, so the first send does not wait for it."""
        self._get()

    def send_all(self, records: list[KafkaRecord]) -> None:
        """Send with the next group, and wait for these records' acknowledgements only.

        The doorbell rings after the acknowledgements (the records are readable
        then), and after a failure too: some may have been written, and the rest
        wait in the outbox for the relay.
        """
        if self._closing:
            raise RuntimeError("the Kafka publisher is closed")
        self._get()
        topics = {r.topic for r in records}
        waiting = _Waiting(records)
        with self._queued:
            if self._closing:
                raise RuntimeError("the Kafka publisher is closed")
            if not self._queue:
                self._first_queued = time.monotonic()
            self._queue.append(waiting)
            if self._sender is None:
                self._sender = threading.Thread(target=self._send_groups, daemon=True,
                                                name="kafka-group-send")
                self._sender.start()
            self._queued.notify()
        try:
            if not waiting.handed.wait(self.timeout_seconds):
                raise TimeoutError("the Kafka group sender did not take the records in time")
            if waiting.error is not None:
                raise waiting.error
            for future in waiting.futures:
                future.get(timeout=self.timeout_seconds)
        except BaseException:
            self.doorbell.ring([*topics, UNSENT])
            raise
        self.doorbell.ring(topics)

    def _send_groups(self) -> None:
        producer = self._get()
        while True:
            with self._queued:
                while not self._queue and not self._closing:
                    self._queued.wait()
                if not self._queue:
                    return
                if self._first_queued - self._last_group < BUSY_WITHIN_SECONDS:
                    until = self._first_queued + LINGER_SECONDS
                    while not self._closing and (left := until - time.monotonic()) > 0:
                        self._queued.wait(left)
                group, self._queue = self._queue, []
                self._last_group = time.monotonic()
            for waiting in group:
                try:
                    waiting.futures = [
                        producer.send(r.topic, key=r.key, value=r.value, headers=r.headers)
                        for r in waiting.records
                    ]
                except BaseException as exc:  # its caller raises it; the others go on
                    waiting.error = exc
                waiting.handed.set()
            # each caller sees its own records' failure in their futures
            with contextlib.suppress(Exception):
                producer.flush(timeout=self.timeout_seconds)

    def close(self) -> None:
        with self._queued:
            self._closing = True
            self._queued.notify_all()
            sender = self._sender
        if sender is not None:
            sender.join(self.timeout_seconds)
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=5)
                self._producer = None
        self.doorbell.close()
