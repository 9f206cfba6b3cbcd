"""Producing records to Kafka, shared by the outbox, the watcher and the tools."""

from __future__ import annotations

import threading

from kafka import KafkaProducer

from shared.envelope import KafkaRecord


class KafkaPublisher:
    """A lazily created, thread-safe producer that waits for every acknowledgement."""

    def __init__(self, bootstrap_servers: str, timeout_seconds: float = 15.0) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.timeout_seconds = timeout_seconds
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()

    def _get(self) -> KafkaProducer:
        with self._lock:
            if self._producer is None:
                self._producer = KafkaProducer(
                    bootstrap_servers=self.bootstrap_servers.split(","),
                    acks="all",
                    linger_ms=0,
                    retries=5,
                    max_in_flight_requests_per_connection=1,
                    client_id="marketplace",
                )
            return self._producer

    def send_all(self, records: list[KafkaRecord]) -> None:
        producer = self._get()
        futures = [
            producer.send(r.topic, key=r.key, value=r.value, headers=r.headers) for r in records
        ]
        producer.flush(timeout=self.timeout_seconds)
        for future in futures:
            future.get(timeout=self.timeout_seconds)

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=5)
                self._producer = None
