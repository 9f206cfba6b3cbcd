"""Producing records to Kafka, shared by the outbox, the watcher and the tools.

kafka-python, slow to import, is loaded with the first producer, not with the
module: a function that emits nothing never loads it.

Under the local stack a producer also rings a doorbell once the broker has
acknowledged its records (`Doorbell`): the embedded broker does not answer a
waiting fetch when a record arrives, so the KafkaSource emulator's consumers
wait for the bell instead of polling. Nowhere else is the bell set.
"""

from __future__ import annotations

import os
import socket
import threading
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


class KafkaPublisher:
    """A lazily created, thread-safe producer that waits for every acknowledgement."""

    def __init__(self, bootstrap_servers: str, timeout_seconds: float = 15.0,
                 doorbell: Doorbell | None = None) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.timeout_seconds = timeout_seconds
        self.doorbell = doorbell if doorbell is not None else Doorbell.from_env()
        self._producer: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        with self._lock:
            if self._producer is None:
                from kafka import KafkaProducer

                self._producer = KafkaProducer(
                    bootstrap_servers=self.bootstrap_servers.split(","),
                    acks="all",
                    linger_ms=0,
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
        """Send, and wait for these records' acknowledgements only.

        Not `flush()`: that waits for every record other threads queued meanwhile.
        The doorbell rings after the acknowledgements (the records are readable
        then), and after a failure too: some may have been written, and the rest
        wait in the outbox for the relay.
        """
        producer = self._get()
        topics = {r.topic for r in records}
        try:
            futures = [
                producer.send(r.topic, key=r.key, value=r.value, headers=r.headers)
                for r in records
            ]
            for future in futures:
                future.get(timeout=self.timeout_seconds)
        except BaseException:
            self.doorbell.ring([*topics, UNSENT])
            raise
        self.doorbell.ring(topics)

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=5)
                self._producer = None
        self.doorbell.close()
