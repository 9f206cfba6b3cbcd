"""Producing records to Kafka, shared by the outbox, the watcher and the tools.

kafka-python, slow to import, is loaded with the first producer, not with the
module: a function that emits nothing never loads it.
"""

from __future__ import annotations

import threading
from typing import Any

from shared.runtime.envelope import KafkaRecord


class KafkaPublisher:
    """A lazily created, thread-safe producer that waits for every acknowledgement."""

    def __init__(self, bootstrap_servers: str, timeout_seconds: float = 15.0) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.timeout_seconds = timeout_seconds
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
        """
        producer = self._get()
        futures = [
            producer.send(r.topic, key=r.key, value=r.value, headers=r.headers) for r in records
        ]
        for future in futures:
            future.get(timeout=self.timeout_seconds)

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=5)
                self._producer = None
