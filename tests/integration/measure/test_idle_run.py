"""`make bench --idle --against REF` on a REF without `--idle`: its `make run`, read from /proc.

Run here on this tree's own `local.stack.run`: the processes it starts must be
told apart by their command lines under the names `Stack.pids()` gives them,
or the two sides' rows would not line up.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from local.measure import idlerun, trees

ROLES = {"api", "reactions", "triggers", "payments", "kafka", "postgres", "redis", "search",
         "aws"}


def test_a_run_modules_processes_are_measured_by_role(tmp_path: Path) -> None:
    figures = idlerun.measure(trees.ROOT, "local.stack.run", seconds=2.0, settle=1.0,
                              log=tmp_path / "run.log")

    shares = figures["cpu_pct_of_one_core"]
    assert set(shares) == ROLES | {"parent process", "stack total"}
    assert shares["stack total"] > 0  # the emulator's consumers poll even at rest
    in_total = sum(v for role, v in shares.items() if role in ROLES - {"payments"})
    assert shares["stack total"] == pytest.approx(in_total, abs=0.05)
    assert not (trees.ROOT / ".local" / "run.workdir").exists()
