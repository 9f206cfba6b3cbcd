"""The process's dependencies, built once and injected into every unit of work.

Functions never open connections themselves: tests swap the whole `Runtime`
(for example one whose publisher is None, so emitted events stay in the
outbox where the test can read them).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import redis

from shared import outbox
from shared.config import Settings, settings
from shared.db import Database, migrate
from shared.kafka import KafkaPublisher

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    redis: redis.Redis
    publisher: outbox.Producer | None
    _closed: bool = field(default=False, repr=False)

    def publish(self, ids: list[str]) -> None:
        """Publish freshly committed outbox rows; on failure the relay sends them later."""
        if self.publisher is None or not ids:
            return
        try:
            outbox.publish(self.db, self.publisher, ids=ids)
        except Exception:
            log.warning("publishing %d event(s) failed; the relay will retry", len(ids),
                        exc_info=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.db.close()
        self.redis.close()
        if isinstance(self.publisher, KafkaPublisher):
            self.publisher.close()


def build(cfg: Settings | None = None, publish: bool = True) -> Runtime:
    cfg = cfg or settings()
    if not cfg.database_url:
        raise RuntimeError("DATABASE_URL is not set (make run and the tests set it for you)")
    db = Database(cfg.database_url)
    migrate(db)
    publisher = (
        KafkaPublisher(cfg.kafka_bootstrap_servers)
        if publish and cfg.kafka_bootstrap_servers
        else None
    )
    if not cfg.redis_url:
        raise RuntimeError("REDIS_URL is not set (make run and the tests set it for you)")
    client: Any = redis.Redis.from_url(cfg.redis_url)
    return Runtime(cfg, db, client, publisher)


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
