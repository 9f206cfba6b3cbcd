"""The local stack's doorbell: producers say which topics they just wrote to.

Real Kafka answers a consumer's waiting fetch as soon as a record arrives, so
a consumer can wait for records at no cost. The embedded broker (Tansu) does
not: it holds an empty fetch for its whole `fetch_max_wait_ms`, looking again
at halving intervals, so a long wait delays every record by up to half of it,
and a short one keeps every idle consumer and the broker busy. Locally, then,
whoever produces (`shared.runtime.kafka.KafkaPublisher`, the emulator's own
dead letters) rings this bell with the topics once the broker acknowledged
the records, and the KafkaSource emulator fetches only when its topics rang,
or when its paced look at the broker's offsets saw something move that rang
nothing (a test's or a tool's producer).

One UDP socket on loopback, one thread blocked in `recvfrom`: nothing runs
while nothing rings.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterable

__all__ = ["ANY", "DoorbellListener"]

_log = logging.getLogger("marketplace.doorbell")
ANY = "*"
"""Subscribe to this name to hear every ring (activity, whatever the topic)."""
_STOP = b"\x00stop"
_MAX_DATAGRAM = 65535


class DoorbellListener:
    """Calls the callbacks subscribed to each name a datagram carries (one name a line)."""

    def __init__(self, address: str = "127.0.0.1:0") -> None:
        host, _, port = address.rpartition(":")
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind((host or "127.0.0.1", int(port)))
        self._subscribers: dict[str, list[Callable[[], None]]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._listen, name="doorbell", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        host, port = self._socket.getsockname()[:2]
        return f"{host}:{port}"

    def subscribe(self, names: Iterable[str], callback: Callable[[], None]) -> None:
        with self._lock:
            for name in set(names):
                self._subscribers.setdefault(name, []).append(callback)

    def ring(self, names: Iterable[str]) -> None:
        """What a datagram does, from this process (the emulator's own dead letters)."""
        with self._lock:
            called = [cb for name in {*names, ANY} for cb in self._subscribers.get(name, ())]
        for callback in called:
            try:
                callback()
            except Exception:
                _log.exception("a doorbell subscriber failed")

    def _listen(self) -> None:
        while True:
            try:
                data, _ = self._socket.recvfrom(_MAX_DATAGRAM)
            except OSError:
                if self._closed:
                    return
                continue
            if self._closed:
                return
            if data and data != _STOP:
                self.ring(data.decode(errors="replace").split("\n"))

    def close(self) -> None:
        """Stop listening: a datagram to itself ends the blocked `recvfrom` (idempotent)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._socket.sendto(_STOP, self._socket.getsockname())
        self._thread.join(5)
        self._socket.close()
