"""The watcher turns a hold's Redis expiry into the same event the sweeper would emit."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from functions import hold_expiry_watcher
from shared.domain import holds
from shared.runtime.bootstrap import Runtime
from shared.runtime.envelope import Envelope
from tests.helpers.waiting import eventually


def test_an_expired_hold_key_becomes_reservation_expired(rt: Runtime, redis_url: str) -> None:
    seen: list[Envelope[Any]] = []
    stop, ready = threading.Event(), threading.Event()
    watcher = threading.Thread(target=hold_expiry_watcher.watch,
                               args=(redis_url, seen.append, stop, ready), daemon=True)
    watcher.start()
    try:
        assert ready.wait(10)
        booking = uuid.uuid4()
        now = datetime.now(UTC)
        deadline = holds.deadline(now, 0) + timedelta(milliseconds=200)
        holds.open_hold(rt.redis, booking, deadline, now)
        rt.redis.set("someone-elses-key", b"x", px=50)  # not a hold: ignored

        def noticed() -> list[Envelope[Any]]:
            rt.redis.exists(holds.key(booking, deadline))  # an access makes Redis expire it now
            return seen

        eventually(noticed, timeout=10, interval=0.05, what="the hold's expiry noticed")
    finally:
        stop.set()
        watcher.join(5)
    [event] = seen
    assert event.data.booking_id == booking
    assert event.data.hold_expires_at == deadline
    assert event.data.detected_by == "watcher"
    assert event.id == holds.expiry_event(booking, deadline, "sweeper").id
    assert event.source == hold_expiry_watcher.SOURCE
