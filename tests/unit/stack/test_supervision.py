"""The local stack survives its own processes dying, and its delivery outlasts them."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from local.knative import faults
from local.knative.kafkasource import KafkaSourceEmulator
from local.stack.supervisor import Supervised, Supervisor


def test_a_killed_process_is_started_again_and_the_log_says_so(tmp_path: Path) -> None:
    supervisor = Supervisor()
    child = supervisor.add(Supervised(
        "sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path, {},
        tmp_path / "sleeper.log"))
    try:
        first = child.pid
        child.kill()
        deadline = time.monotonic() + 10
        while child.pid == first or not child.restarts:
            assert time.monotonic() < deadline, "not restarted within 10 s"
            time.sleep(0.05)
        assert [r.exit_code for r in child.restarts] == [-9]
        assert child.restarts[0].back_after == 0.5
    finally:
        supervisor.stop()
    assert child.process is not None and child.process.poll() is not None


def test_delivery_rides_out_three_minutes_and_finds_a_function_back_within_seconds() -> None:
    emulator = KafkaSourceEmulator("127.0.0.1:1", [], lambda r: "")
    waits = [emulator.backoff(n) for n in range(1, 21)]
    assert sum(waits) == 210.0
    assert waits[:3] == [1.0, 2.0, 3.0]


def test_a_faulty_host_is_slow_only_where_and_while_told(tmp_path: Path) -> None:
    def app(environ: dict[str, object], start_response: object) -> list[bytes]:
        return [b"ok"]

    path = tmp_path / "faults.json"
    host = faults.FaultyHost(app, path)

    def took(prefix: str) -> float:
        started = time.monotonic()
        host({"PATH_INFO": prefix}, None)
        return time.monotonic() - started

    assert took("/open-hold/") < 0.05  # no file: no fault
    faults.slow_down(path, "/open-hold", 0.3, for_seconds=60)
    assert took("/open-hold/") >= 0.3
    assert took("/settle-booking/") < 0.05
    faults.slow_down(path, "/open-hold", 0.3, for_seconds=-1)  # over
    assert took("/open-hold/") < 0.05
