"""The short fault-injection run: one kill of each function host, a broker freeze, a Redis
restart and the payment provider's webhooks dropped under a minute of load, and nothing lost,
duplicated, oversold or kept without a confirmation (`make chaos` is the long one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_short_fault_injection_run_loses_nothing(tmp_path: Path) -> None:
    report = tmp_path / "chaos.json"
    run = subprocess.run(
        [sys.executable, "-m", "local.chaos", "--short", "--rate", "5", "--json", str(report)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=600)
    print(run.stdout[-25000:], run.stderr[-3000:])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    found = json.loads(report.read_text())
    assert [f["fault"] for f in found["faults"]] == [
        "SIGKILL reactions host", "SIGKILL API host", "broker frozen 10 s", "Redis restarted empty",
        "provider webhooks dropped 10 s"]
    assert all(f["recovery_seconds"] is not None for f in found["faults"])
    assert found["bookings"] >= 250  # a minute at 5/s
    assert all(check["ok"] for check in found["checks"]), found["checks"]
    assert run.stdout.strip().splitlines()[-1].endswith(
        "5 faults, 0 lost, 0 duplicated, 0 oversold")
