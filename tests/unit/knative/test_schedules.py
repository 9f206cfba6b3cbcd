"""The local PingSources call a function only when there can be work, and back off at rest.

The relay, the sweeper and the reconciler each say with `due(db)` whether they
have work; a schedule without it is called while bells ring. Neither waits
longer than a cluster's PingSource (once a minute).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from functions import reconcile_payments, relay_outbox, sweep_expired_holds
from local.knative import triggers
from local.knative.doorbell import DoorbellListener
from local.knative.triggers import Pacing, Triggers, due_check
from shared.runtime.config import Settings
from shared.runtime.kafka import Doorbell
from shared.runtime.routing import Reaction

SCHEDULE = Reaction(target="relay_outbox", schedule="* * * * *")


class Recorded(Triggers):
    """Triggers whose pings and due checks are counted instead of sent."""

    def __init__(self, doorbell: DoorbellListener | None, due: list[bool | None],
                 otherwise: bool | None = None) -> None:
        super().__init__(Settings.from_env({"MARKETPLACE_LOCAL": "1"}), "http://127.0.0.1:1")
        self.doorbell = doorbell
        self.answers = due
        self.otherwise = otherwise
        self.pings: list[float] = []
        self.asked: list[float] = []

    def _ping(self, reaction: Reaction) -> None:
        self.pings.append(time.monotonic())

    def _due(self, reaction: Reaction, due: triggers.Due) -> bool | None:
        self.asked.append(time.monotonic())
        return self.answers.pop(0) if self.answers else self.otherwise


@pytest.fixture
def doorbell() -> Iterator[DoorbellListener]:
    listener = DoorbellListener()
    yield listener
    listener.close()


def run(schedule: Recorded, every: float, due: Any, seconds: float,
        during: Any = None) -> None:
    rung = threading.Event()
    if schedule.doorbell is not None:
        schedule.doorbell.subscribe(["*"], rung.set)
    thread = threading.Thread(target=schedule._ping_forever,
                              args=(SCHEDULE, every, due, rung), daemon=True)
    thread.start()
    try:
        if during is not None:
            during()
        time.sleep(seconds)
    finally:
        schedule.stopping.set()
        rung.set()
        thread.join(2)
    assert not thread.is_alive()


def test_the_idle_loop_does_not_call_the_function_and_asks_less_and_less(
        doorbell: DoorbellListener) -> None:
    schedule = Recorded(doorbell, due=[])
    run(schedule, every=0.1, due=lambda db: None, seconds=1.6)
    assert schedule.pings == []
    # looks after 0.1, 0.2, 0.4, 0.8 s (1.5 s in all): not sixteen times
    assert 3 <= len(schedule.asked) <= 5


def test_work_that_may_come_keeps_the_looks_on_the_period(doorbell: DoorbellListener) -> None:
    """`due` answers False: nothing to do now, but a hold is running (or a row is young)."""
    schedule = Recorded(doorbell, due=[], otherwise=False)
    run(schedule, every=0.1, due=lambda db: False, seconds=1.05)
    assert schedule.pings == []
    assert len(schedule.asked) >= 8


def test_work_is_done_on_the_period_for_as_long_as_it_is_due(doorbell: DoorbellListener) -> None:
    schedule = Recorded(doorbell, due=[True] * 5)
    run(schedule, every=0.1, due=lambda db: True, seconds=1.0)
    assert len(schedule.pings) == 5  # five due answers, five calls, then nothing more
    assert all(b - a >= 0.09 for a, b in zip(schedule.pings, schedule.pings[1:], strict=False))


def test_a_bell_brings_an_idle_schedule_back_to_its_period(doorbell: DoorbellListener) -> None:
    schedule = Recorded(doorbell, due=[])
    bell = Doorbell(doorbell.address)

    def rest_then_ring() -> None:
        time.sleep(1.6)  # backed off to 1.6 s between looks
        started = time.monotonic()
        bell.ring(["booking.requested"])
        while len(schedule.asked) < 5 and time.monotonic() - started < 1:
            time.sleep(0.01)
        assert time.monotonic() - started < 0.3, "the bell did not cut the wait short"

    run(schedule, every=0.1, due=lambda db: None, seconds=0.1, during=rest_then_ring)
    bell.close()


def test_without_due_a_schedule_is_called_once_then_only_after_bells(
        doorbell: DoorbellListener) -> None:
    schedule = Recorded(doorbell, due=[])
    bell = Doorbell(doorbell.address)

    def ring_once() -> None:
        time.sleep(0.8)
        bell.ring(["payment.succeeded"])

    run(schedule, every=0.1, due=None, seconds=0.6, during=ring_once)
    bell.close()
    assert len(schedule.pings) == 2  # the first look (catch up), and the one after the bell


def test_without_a_doorbell_the_period_is_kept() -> None:
    schedule = Recorded(None, due=[])
    run(schedule, every=0.1, due=None, seconds=0.55)
    assert 4 <= len(schedule.pings) <= 6


def test_pacing_doubles_to_a_clusters_period_and_no_further() -> None:
    pacing = Pacing(1.0)
    waits = []
    for _ in range(8):
        pacing.idle()
        waits.append(pacing.wait)
    assert waits == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    pacing.busy()
    assert pacing.wait == 1.0
    assert Pacing(90.0).longest == 90.0  # a period longer than a minute is kept


def test_the_relay_the_sweeper_and_the_reconciler_say_whether_they_are_due() -> None:
    for module in (relay_outbox, sweep_expired_holds, reconcile_payments):
        target = module.__name__.rsplit(".", 1)[1]
        assert due_check(Reaction(target=target, schedule="* * * * *")) is module.due
