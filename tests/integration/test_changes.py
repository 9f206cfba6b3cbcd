"""Change announcements on real Redis: a waiter wakes on its subject's announcement only."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from shared.runtime import changes


@pytest.fixture
def listener(redis_url: str) -> Iterator[changes.Listener]:
    listening = changes.Listener(redis_url)
    listening.start(ready_timeout=10)
    assert listening.subscribed.is_set()
    yield listening
    listening.stop()


def test_an_announcement_wakes_the_waiters_of_its_subjects_only(
        listener: changes.Listener, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    mine, other = str(uuid.uuid4()), str(uuid.uuid4())
    with listener.watching(mine) as woken, listener.watching(other) as not_woken:
        changes.announce(client, [mine, str(uuid.uuid4()), mine])
        assert woken.wait(10)
        assert not not_woken.is_set()
    client.close()


def test_wait_until_answers_on_the_announcement_not_the_recheck(
        listener: changes.Listener, redis_url: str) -> None:
    """With a recheck longer than the timeout, only the announcement can end the wait early."""
    client = redis.Redis.from_url(redis_url)
    subject, state = str(uuid.uuid4()), {"status": "PENDING"}
    reads = []

    def read() -> str:
        reads.append(state["status"])
        return state["status"]

    def change() -> None:
        while not listener._waiters.get(subject):  # until the waiter is registered
            time.sleep(0.01)
        state["status"] = "CONFIRMED"  # committed first, announced second
        changes.announce(client, [subject])

    changer = threading.Thread(target=change)
    changer.start()
    started = time.monotonic()
    seen = changes.wait_until(listener, subject, read, lambda s: s == "CONFIRMED",
                              timeout=20, recheck=60)
    changer.join()
    assert seen == "CONFIRMED"
    assert time.monotonic() - started < 10
    assert reads[-1] == "CONFIRMED" and len(reads) <= 3
    assert listener._waiters.get(subject) is None  # forgotten once answered
    client.close()


def test_wait_until_answers_the_current_state_at_the_timeout(listener: changes.Listener) -> None:
    seen = changes.wait_until(listener, str(uuid.uuid4()), lambda: "AWAITING_PAYMENT",
                              lambda s: s == "CONFIRMED", timeout=0.3, recheck=0.1)
    assert seen == "AWAITING_PAYMENT"


def test_announcing_without_redis_is_quiet() -> None:
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    changes.announce(unreachable, ["x"])  # the unit of work already committed: no error
