"""`make cold-start` keeps working: it knows every function, and measures one for real."""

from __future__ import annotations

import json
from pathlib import Path

from local.measure import coldstart, coldstart_cases


def test_every_function_has_a_first_event() -> None:
    assert set(coldstart.functions()) == set(coldstart_cases.CASES)


def test_one_cold_start_is_measured_and_written(tmp_path: Path) -> None:
    out = tmp_path / "cold.json"
    status = coldstart.main(["--runs", "1", "--only", "reserve_ticket", "--json", str(out)])
    report = json.loads(out.read_text())
    (measured,) = report["functions"]
    assert measured["target"] == "reserve_ticket" and measured["kind"] == "reaction"
    assert measured["source"] == "functions/reserve_ticket.py"
    assert 0 < measured["import_ms"] < measured["first_event_ms"]
    assert 10 < measured["rss_mb"] < 500 and measured["cpu_ms"] > 0
    assert status == (0 if measured["within_target"] else 1)  # the timing is the machine's
