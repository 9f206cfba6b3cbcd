"""The benchmark's instruments: CPU per process tree and thread from /proc, per-function timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from local.knative.timing import Timing
from local.measure import cpu

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")


def burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_childs_cpu_counts_in_its_parents_tree_until_it_is_reaped() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time\nend = time.process_time() + 0.4"
                              "\nwhile time.process_time() < end: pass\ntime.sleep(30)"])
    try:
        deadline = time.monotonic() + 30
        while cpu.tree_seconds({"child": child.pid})["child"] < 0.3:
            assert time.monotonic() < deadline, "the child never burnt its CPU"
            time.sleep(0.05)
        before = cpu.tree_seconds({"me": os.getpid()})["me"]
        assert before >= 0.3 + cpu.own_seconds() - 0.05
    finally:
        child.kill()
        child.wait()
    # reaped: now in this process's cutime, so the tree total does not drop
    assert cpu.tree_seconds({"me": os.getpid()})["me"] >= before - 0.02
    assert cpu.tree_seconds({"gone": child.pid}) == {"gone": 0.0}


def test_a_threads_cpu_is_read_by_its_native_id() -> None:
    ids: list[int] = []

    def work() -> None:
        ids.append(threading.get_native_id())
        burn(0.2)
        spent.append(cpu.thread_seconds(ids)[ids[0]])

    spent: list[float] = []
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    # /proc counts in clock ticks sampled by the scheduler: on a busy machine it can
    # fall short of thread_time by a few ticks, never to nothing
    assert spent[0] >= 0.1
    # gone with its thread (unless the kernel already gave its id to a newer thread of ours:
    # the session's servers start one per request). `join` returns when the thread has
    # finished its Python work, a moment before the kernel has let its task go.
    deadline = time.monotonic() + 5
    while True:
        alive = {t.native_id for t in threading.enumerate()}
        if set(cpu.thread_seconds(ids)) <= alive - {None} or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert set(cpu.thread_seconds(ids)) <= alive - {None}
    busy, total = cpu.machine_busy_seconds()
    assert 0 < busy <= total


def test_timing_counts_each_function_and_answers_its_counters() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        burn(0.01)
        start_response("200 OK", [])
        return [b"ok"]

    timed = Timing(app)
    for path in ("/reserve-ticket/", "/reserve-ticket/", "/open-hold"):
        assert timed({"PATH_INFO": path}, lambda *a: None) == [b"ok"]
    answered: list[bytes] = list(timed({"PATH_INFO": "/__timing"}, lambda *a: None))
    functions = json.loads(b"".join(answered))["functions"]
    assert {k: v["count"] for k, v in functions.items()} == {"reserve-ticket": 2, "open-hold": 1}
    assert functions["reserve-ticket"]["cpu_s"] >= 0.018
    assert sum(functions["open-hold"]["buckets"]) == 1
