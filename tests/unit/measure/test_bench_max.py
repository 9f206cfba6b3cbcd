"""`make bench --max`: how it searches, and that no measurement inherits another's stack.

The stacks here are fakes that confirm whatever rate is offered up to a
capacity; the real ones are measured by `make bench`, not by tests.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from local.measure import bench
from local.measure.benchrun import KEEP_UP, Figures


class FakeStack:
    """Keeps up with any rate up to `capacity`, and counts the stacks started."""

    def __init__(self, capacity: float, long_run_capacity: float | None = None) -> None:
        self.capacity = capacity
        self.long_run_capacity = long_run_capacity or capacity
        self.started = 0
        self.measurements: list[tuple[int, float, float]] = []  # (stack, rate, window)

    @contextlib.contextmanager
    def fresh(self) -> Iterator[Any]:
        self.started += 1
        stack = self.started
        fake = self

        class Bench:
            def measure(self, rate: float, window: float, warmup: float,
                        mix: dict[str, float]) -> Figures:
                fake.measurements.append((stack, rate, window))
                limit = fake.capacity if window < 60 else fake.long_run_capacity
                confirmed = int(min(rate, limit) * window)
                return Figures(rate=rate, window=window, mix=mix, confirmed=confirmed,
                               expected_confirmations=rate * window,
                               to_held_ms=[(i, 30.0) for i in range(20)],
                               to_confirmed_ms=[(i, 20.0) for i in range(20)])

        yield Bench()


def arguments(**overrides: Any) -> argparse.Namespace:
    return bench.arguments(["--max", "--rate", "10"] + [
        item for key, value in overrides.items() for item in (f"--{key}", str(value))])


@pytest.fixture(autouse=True)
def burst_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "post_burst", lambda b: 300.0)


def test_every_measurement_runs_on_a_stack_of_its_own() -> None:
    stacks = FakeStack(capacity=40.0)
    report: dict[str, Any] = {}

    bench.find_max(stacks.fresh, arguments(), report)

    used = [stack for stack, _, _ in stacks.measurements]
    assert len(used) == len(set(used)), "two measurements shared a stack"
    assert stacks.started == len(used) + 1  # and one more for POST /bookings alone


def test_steps_up_by_half_then_bisects_and_confirms_the_best_for_the_whole_duration() -> None:
    stacks = FakeStack(capacity=40.0)
    report: dict[str, Any] = {}

    best = bench.find_max(stacks.fresh, arguments(), report)

    rates = [rate for _, rate, _ in stacks.measurements]
    assert rates[:4] == [10.0, 15.0, 22.5, 33.8]  # 50.7 fails, then bisects
    assert rates[4] == 50.7
    assert best.rate == rates[-2] and best.window == 60.0
    assert 33.8 < best.rate <= 40.0 / KEEP_UP
    assert report["sustainable"] is True
    assert report["half_rate"]["rate"] == round(best.rate / 2, 1)
    assert report["post_accepted_per_s"] == 300.0


def test_a_rate_that_does_not_hold_for_the_whole_run_is_confirmed_a_tenth_lower() -> None:
    stacks = FakeStack(capacity=40.0, long_run_capacity=30.0)
    report: dict[str, Any] = {}

    best = bench.find_max(stacks.fresh, arguments(), report)

    confirming = [rate for _, rate, window in stacks.measurements if window == 60.0]
    assert len(confirming) >= 2 and confirming[1] == round(confirming[0] * 0.9, 1)
    assert best.rate <= 30.0 / KEEP_UP
    assert report["sustainable"] is True
    assert len(report["not_confirmed"]) == len(confirming) - 1



def test_the_report_says_how_fast_the_machine_was() -> None:
    fig = Figures(rate=10.0, window=60.0, mix={"pay": 1.0}, confirmed=600,
                  expected_confirmations=600)

    text = bench.render(fig, {"reference_loop_ms": 385.0})

    assert "machine speed      385 ms of CPU for a 10 M-step Python loop" in text
