"""The process's dependencies, built once and injected into every unit of work.

Functions never open connections themselves: tests swap the whole `Runtime`
(for example one whose publisher is None, so emitted events stay in the
outbox where the test can read them).

Nothing here connects or imports a client before it is needed: the pool
connects on the first transaction, Redis is imported and connected on the
first `rt.redis` (most reactions never touch it). The first `rt.db` checks the
schema version (once per process).

The Kafka producer (importing kafka-python and connecting are slow) is
warmed by the first publish in a background thread that starts once the
answer has been sent (`after_answer`), so a cold start answers its first event
as soon as the event's state and outbox rows are committed.
Until the producer is ready, freshly committed records queue up and are sent
in order once it is; from then on a publish is synchronous, as before (the
marks that say "published" are written in batches, `outbox.PublishedMarks`). A
process that stops meanwhile (scaled back to zero) waits for that thread at
exit; a crash leaves the rows in the outbox, where the relay finds them.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import flask

from shared.runtime import changes, outbox
from shared.runtime.config import Settings, settings
from shared.runtime.db import Database
from shared.runtime.kafka import KafkaPublisher
from shared.runtime.schema import SchemaGate

log = logging.getLogger(__name__)
EXIT_WAIT_SECONDS = 15.0
ANSWER_WAIT_SECONDS = 1.0


@dataclass
class Runtime:
    settings: Settings
    database: Database
    publisher: outbox.Producer | None
    schema: SchemaGate = field(default_factory=SchemaGate, repr=False)
    _redis: Any = field(default=None, repr=False)
    _provider: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _producer_ready: bool = field(default=False, repr=False)
    _pending: list[outbox.Outgoing] | None = field(default=None, repr=False)  # while warming
    _marks: outbox.PublishedMarks | None = field(default=None, repr=False)
    _closed: bool = field(default=False, repr=False)

    @property
    def db(self) -> Database:
        """The pool, once the schema is known to be current (else `SchemaBehind`, a 503)."""
        self.schema.ensure(self.database)
        return self.database

    @property
    def redis(self) -> Any:
        """A `redis.Redis`, imported and created on first use."""
        with self._lock:
            if self._redis is None:
                import redis  # slow to import: only the functions that hold tickets pay for it

                if not self.settings.redis_url:
                    raise RuntimeError("REDIS_URL is not set (make run and the tests set it)")
                self._redis = redis.Redis.from_url(self.settings.redis_url)
            return self._redis

    @property
    def provider(self) -> Any:
        """The payment provider's client (`shared.adapters.stripe_provider`), made on first use."""
        with self._lock:
            if self._provider is None:
                from shared.adapters.stripe_provider import StripeProvider

                self._provider = StripeProvider(self.settings)
            return self._provider

    def announce(self, subjects: Iterable[str]) -> None:
        """Tell waiting requests (`GET /bookings/{id}?wait_for=`) these aggregates changed.

        Best effort, as `changes.announce` is. Until this process has a Redis
        client, the announcement creates it in a background thread: importing
        redis-py must not delay a cold start's first answer, and a late
        announcement only costs a waiter some latency.
        """
        unique = sorted(set(subjects))
        if not unique:
            return
        if self._redis is not None:
            changes.announce(self._redis, unique)
            return
        after_answer("announce", lambda: self._announce_later(unique))

    def _announce_later(self, subjects: list[str]) -> None:
        try:
            changes.announce(self.redis, subjects)
        except Exception as exc:  # no REDIS_URL, say: waiters re-read on their timer
            log.debug("could not announce %d change(s): %s", len(subjects), exc)

    @property
    def marks(self) -> outbox.PublishedMarks:
        with self._lock:
            if self._marks is None:
                self._marks = outbox.PublishedMarks(self.database)
            return self._marks

    def publish(self, ids: list[outbox.Outgoing]) -> None:
        """Publish freshly committed outbox rows; on failure the relay sends them later."""
        if self.publisher is None or not ids:
            return
        with self._lock:
            if not self._producer_ready:
                if self._pending is None:
                    self._pending = []
                    warmup = after_answer("producer-warmup", self._warm_then_publish)
                    # a stopping process sends what it committed before it goes
                    atexit.register(self._finish_warmup, warmup)
                self._pending.extend(ids)
                return
        self._publish_now(ids)

    def _finish_warmup(self, warmup: threading.Thread) -> None:
        """At exit: let the warm-up send, then write its marks (registered during the exit,
        the marks' own handler would not run, and the relay would send the rows again)."""
        warmup.join(EXIT_WAIT_SECONDS)
        if self._marks is not None:
            self._marks.close()

    def _publish_now(self, outgoing: list[outbox.Outgoing]) -> None:
        assert self.publisher is not None
        try:
            self.publisher.send_all([o.record for o in outgoing])
        except Exception:
            log.warning("publishing %d event(s) failed; the relay will retry", len(outgoing),
                        exc_info=True)
            return
        self.marks.add(o.event_id for o in outgoing)

    def _warm_then_publish(self) -> None:
        """Create the producer, then send what queued meanwhile, oldest first."""
        warm = getattr(self.publisher, "warm", None)
        if warm is not None:
            try:
                warm()
            except Exception:
                log.warning("the Kafka producer could not start; the relay will send",
                            exc_info=True)
        while True:
            with self._lock:
                ids, self._pending = self._pending or [], []
                if not ids:  # drained: later publishes cannot overtake a queued one
                    self._pending, self._producer_ready = None, True
                    return
            self._publish_now(ids)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._marks is not None:
            self._marks.close()
        self.database.close()
        if self._redis is not None:
            self._redis.close()
        if isinstance(self.publisher, KafkaPublisher):
            self.publisher.close()


def build(cfg: Settings | None = None, publish: bool = True) -> Runtime:
    """The process's runtime; it does not migrate (see `shared.migrations`)."""
    cfg = cfg or settings()
    if not cfg.database_url:
        raise RuntimeError("DATABASE_URL is not set (make run and the tests set it for you)")
    if not cfg.redis_url:
        raise RuntimeError("REDIS_URL is not set (make run and the tests set it for you)")
    publisher = (
        KafkaPublisher(cfg.kafka_bootstrap_servers)
        if publish and cfg.kafka_bootstrap_servers
        else None
    )
    return Runtime(cfg, Database(cfg.database_url), publisher)


def after_answer(name: str, work: Callable[[], None]) -> threading.Thread:
    """Run `work` in a background thread, starting once the current answer has been sent.

    The work is a cold process's first import of a client, CPU-bound;
    begun during the request it would share the GIL with it and delay the
    very answer it was moved off. Outside a request it starts at once; if the
    answer is never closed, after `ANSWER_WAIT_SECONDS` anyway.
    """
    sent = threading.Event()
    if flask.has_request_context():
        def on_close(response: flask.Response) -> flask.Response:
            response.call_on_close(sent.set)
            return response

        flask.after_this_request(on_close)
    else:
        sent.set()

    def run() -> None:
        sent.wait(ANSWER_WAIT_SECONDS)
        work()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


_current: Runtime | None = None
_lock = threading.Lock()


def runtime() -> Runtime:
    global _current
    with _lock:
        if _current is None:
            _current = build()
        return _current


def install(rt: Runtime | None) -> None:
    """Use `rt` for this process from now on (tests), or forget the current one."""
    global _current
    with _lock:
        _current = rt
