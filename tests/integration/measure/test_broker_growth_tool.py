"""`make bench BENCH_ARGS=--broker-growth` keeps working against the real embedded broker."""

from __future__ import annotations

from local.measure import brokergrowth


def test_broker_cpu_is_measured_at_each_size_of_the_partition() -> None:
    found = brokergrowth.measure([0, 300], "measured", probes=60)

    assert [size for size, _ in found] == [0, 300]
    assert all(ms > 0 for _, ms in found)  # the broker's own CPU, read from /proc
