"""`make run`'s process: it serves, and Ctrl-C (even pressed twice) leaves nothing running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
from conftest import eventually

from local.stack import free_port

ROOT = Path(__file__).resolve().parents[2]


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc (Linux)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def alive(pids: set[int]) -> set[int]:
    still = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            still.add(pid)
    return still


def test_ctrl_c_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "run.log").open("w")
    run = subprocess.Popen([sys.executable, "-m", "local.run", "--port", str(port),
                            "--workdir", str(tmp_path / "work")],
                           cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        eventually(lambda: (tmp_path / "run.log").read_text(), lambda text: "is up" in text,
                   timeout=120, every=0.5, what="make run serving")
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        started = descendants(run.pid)
        assert len(started) >= 7  # five servers and two function hosts at least
        for _ in range(30):  # an impatient user: Ctrl-C again and again must not stop the cleanup
            run.send_signal(signal.SIGINT)
            time.sleep(0.002)
        assert run.wait(60) == 0
        eventually(lambda: alive(started), lambda left: not left, timeout=20,
                   what="every child process gone")
    finally:
        if run.poll() is None:
            run.kill()
        log.close()
