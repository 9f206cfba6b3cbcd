"""Change announcements: "the aggregate X just changed", for requests that wait on it.

After a unit of work commits, the runtime announces the subjects of the
events it emitted (a booking's events are keyed by its id, and every booking
status change emits one) on one Redis pub/sub channel. Each API process has
one `Listener` thread that wakes the requests waiting on those subjects; a
woken request re-reads the state itself, so the message carries no state and
a lost message costs only latency (waiters also re-read on a coarse timer).

One channel for all subjects, rather than one per subject, keeps the listener
a plain SUBSCRIBE with no subscription traffic per request: each API process
receives every announcement (a few per booking, a short id each), which is
cheap next to the request that caused it.

redis-py is imported when a listener starts or an announcement fails, not
with this module: `Runtime.announce` sends a cold process's first
announcements from a background thread, so they never delay its answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

log = logging.getLogger("marketplace.changes")

CHANNEL = "marketplace:changes"
# A waiter re-reads at least this often, in case an announcement was lost (Redis restarted).
RECHECK_SECONDS = 1.0
T = TypeVar("T")


def announce(client: Any, subjects: Iterable[str]) -> None:
    """Publish the changed subjects in one message; never fails the caller (best effort)."""
    unique = sorted(set(subjects))
    if not unique:
        return
    try:
        client.publish(CHANNEL, " ".join(unique))
    except Exception as exc:  # redis.RedisError or OSError: the waiters' timer covers it
        log.debug("could not announce %d change(s): %s", len(unique), exc)


class Listener:
    """One subscriber thread per process, waking every `Event` registered for a subject."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self._waiters: dict[str, set[threading.Event]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.subscribed = threading.Event()

    def start(self, ready_timeout: float = 1.0) -> None:
        """Start the thread once, and give it a moment to subscribe (waiters re-read anyway).

        Only the call that starts it waits: with Redis down, later waiters go
        straight to their reads and timer instead of paying the moment each.
        """
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="changes-listener",
                                            daemon=True)
            self._thread.start()
        self.subscribed.wait(ready_timeout)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    @contextmanager
    def watching(self, subject: str) -> Iterator[threading.Event]:
        """An Event set whenever `subject` is announced, for as long as the block runs."""
        event = threading.Event()
        with self._lock:
            self._waiters.setdefault(subject, set()).add(event)
        try:
            yield event
        finally:
            with self._lock:
                waiting = self._waiters.get(subject)
                if waiting is not None:
                    waiting.discard(event)
                    if not waiting:
                        del self._waiters[subject]

    def dispatch(self, message: bytes | str) -> None:
        text = message.decode() if isinstance(message, bytes) else message
        with self._lock:
            for subject in text.split():
                for event in self._waiters.get(subject, ()):
                    event.set()

    def _run(self) -> None:
        import redis

        while not self._stop.is_set():
            client: Any = redis.Redis.from_url(self.redis_url, socket_connect_timeout=5)
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CHANNEL)
                self.subscribed.set()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self.dispatch(message["data"])
            except (redis.RedisError, OSError) as exc:
                # Waiters fall back to their timer until the subscription is back.
                self.subscribed.clear()
                log.warning("change listener lost Redis (%s); reconnecting", exc)
                self._stop.wait(1.0)
            finally:
                client.close()


def wait_until(listener: Listener, subject: str, read: Callable[[], T], done: Callable[[T], bool],
               timeout: float, recheck: float = RECHECK_SECONDS) -> T:
    """Read until `done(state)`, re-reading when `subject` is announced or every `recheck` s.

    Registered before the first read, so a change committed between that read
    and the wait is not missed. `read` should be a short transaction of its
    own: nothing is held while waiting. Returns the last state read, fresh
    even at the timeout.
    """
    deadline = time.monotonic() + timeout
    with listener.watching(subject) as changed:
        state = read()
        while not done(state):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            changed.wait(min(recheck, remaining))
            changed.clear()  # before the read: a later announcement wakes the next round
            state = read()
    return state


_listener: Listener | None = None
_listener_lock = threading.Lock()


def listener(redis_url: str) -> Listener:
    """This process's listener, started on first use (after a fork, in the worker)."""
    global _listener
    with _listener_lock:
        if _listener is None or _listener.redis_url != redis_url:
            _listener = Listener(redis_url)
        current = _listener
    current.start()
    return current
