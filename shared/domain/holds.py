"""A booking's hold: a Redis key for a fast expiry, a column for a durable one.

The key's name carries the hold's deadline in milliseconds (and the booking's
W3C trace context, so the watcher's event continues the booking's trace), so the watcher
(which only learns the name of an expired key) and the sweeper (which reads
the deadline from PostgreSQL) build the same `reservation.expired` event with
the same CloudEvent id: whichever fires second is dropped by the inbox. A
stale key from an older hold names another deadline and is ignored.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from shared.domain.events import ReservationExpired
from shared.runtime.envelope import Envelope

KEY_PREFIX = "marketplace:hold:"
_NAMESPACE = uuid.UUID("6f1c2f3e-6d59-4b8e-9a51-7e3f0f7f2a10")


def deadline(now: datetime, ttl_seconds: int) -> datetime:
    """`now + ttl`, truncated to the millisecond that the key name can carry."""
    exact = now + timedelta(seconds=ttl_seconds)
    return exact.replace(microsecond=exact.microsecond // 1000 * 1000)


def _millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000 + 0.5)


def key(booking_id: uuid.UUID, expires_at: datetime, traceparent: str | None = None) -> str:
    """`marketplace:hold:<booking>:<deadline ms>[:<the booking's traceparent>]`."""
    name = f"{KEY_PREFIX}{booking_id}:{_millis(expires_at)}"
    return f"{name}:{traceparent}" if traceparent else name


def parse_key(name: str) -> tuple[uuid.UUID, datetime] | None:
    if not name.startswith(KEY_PREFIX):
        return None
    parts = name[len(KEY_PREFIX):].split(":")
    if len(parts) not in (2, 3):
        return None
    try:
        return uuid.UUID(parts[0]), datetime.fromtimestamp(int(parts[1]) / 1000, UTC)
    except ValueError:
        return None


def trace_of_key(name: str) -> str:
    """The booking's traceparent a key carries (empty for keys written without one)."""
    parts = name[len(KEY_PREFIX):].split(":")
    return parts[2] if name.startswith(KEY_PREFIX) and len(parts) == 3 else ""


def open_hold(redis: Any, booking_id: uuid.UUID, expires_at: datetime, now: datetime,
              traceparent: str | None = None) -> None:
    """Set the key to expire at the deadline (at least a millisecond from now)."""
    ttl_ms = max(1, _millis(expires_at) - _millis(now))
    redis.set(key(booking_id, expires_at, traceparent), b"1", px=ttl_ms)


def close_hold(redis: Any, booking_id: uuid.UUID, expires_at: datetime | None,
               traceparent: str | None = None) -> None:
    """Forget a hold whose booking ended otherwise, so its expiry is not even announced."""
    if expires_at is not None:
        redis.delete(key(booking_id, expires_at, traceparent))


def expiry_event(booking_id: uuid.UUID, expires_at: datetime,
                 detected_by: Literal["watcher", "sweeper"], source: str = "",
                 traceparent: str | None = None) -> Envelope[ReservationExpired]:
    """The same event (the same id, and the same time: when the hold ran out) from either
    path, so a booking's timeline reads the same whichever copy it keeps; `traceparent`: the
    booking's trace."""
    event_id = uuid.uuid5(_NAMESPACE, f"{booking_id}/{_millis(expires_at)}")
    return Envelope(
        data=ReservationExpired(
            booking_id=booking_id, hold_expires_at=expires_at, detected_by=detected_by
        ),
        source=source,
        id=str(event_id),
        time=expires_at,
        traceparent=traceparent or "",
    )
