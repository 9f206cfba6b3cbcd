"""`make bench --against REF`: how two trees' figures are compared (no stack, no subprocess).

The JSON here is shaped as `make bench --json` writes it: this tree's form,
and the older one of a REF, whose stack total still counted the fake payment
provider and which has no marker saying what its total leaves out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from local.measure import against, bench, compare, idle, idlerun, trees
from local.measure.benchrun import Figures
from local.measure.idle import IdleSample

ROUTING: compare.Routing = {
    "open-hold": {"topics": ["ticket.reserved"], "schedule": None},
    "index-event": {"topics": ["booking.requested", "ticket.reserved"], "schedule": None},
    "relay-outbox": {"topics": [], "schedule": "* * * * *"},
    "tidy-up": {"topics": [], "schedule": "* * * * *"},  # a schedule no list knows
}


def report(confirmed_per_s: float = 10.0, *, provider_in_total: bool = False,
           **result: Any) -> dict[str, Any]:
    cpu = {"reactions": 40.0, "api": 30.0, "payments": 10.0, "load generator": 2.0}
    cpu["stack total"] = 70.0 + (10.0 if provider_in_total else 0.0)
    body: dict[str, Any] = {
        "confirmed_per_s": confirmed_per_s, "unexpected_sessions": 0,
        "request_to_held_ms": {"p50": 100.0, "p95": 300.0, "p99": 400.0},
        "pay_to_confirmed_ms": {"p50": 200.0, "p95": 600.0, "p99": 800.0},
        "cpu_ms_per_confirmed_booking": cpu,
        "functions": {"api": {"bookings": {"per_s": 40.0}},
                      "reactions": {"open-hold": {"per_s": 10.0},
                                    "index-event": {"per_s": 50.0},
                                    "relay-outbox": {"per_s": 1.0},
                                    "tidy-up": {"per_s": 0.5}}},
    }
    if not provider_in_total:
        body["stack_total_excludes"] = ["payments"]
    body.update(result)
    return {"reference_loop_ms": 300.0, "result": body}


def test_the_median_is_of_the_rounds_that_have_the_figure() -> None:
    assert compare.median([3.0, 1.0, 2.0]) == 2.0
    assert compare.median([1.0, 4.0]) == 2.5
    assert compare.median([None, 5.0, None]) == 5.0
    assert compare.median([None, None]) is None
    assert compare.median([]) is None


def test_the_ratio_is_this_over_ref_and_missing_when_it_cannot_be() -> None:
    assert compare.ratio(12.0, 10.0) == pytest.approx(1.2)
    assert compare.ratio(None, 10.0) is None
    assert compare.ratio(12.0, None) is None
    assert compare.ratio(12.0, 0.0) is None


def test_deliveries_count_the_topic_triggered_reactions_only() -> None:
    result = report()["result"]

    # open-hold 10 + index-event 50 over 10 confirmed/s; both schedules left out
    assert compare.deliveries(result, ROUTING) == pytest.approx(6.0)


def test_without_a_routing_the_known_schedules_are_left_out() -> None:
    result = report()["result"]

    # relay-outbox is a known schedule; tidy-up is not, so it counts
    assert compare.deliveries(result, None) == pytest.approx(6.05)


def test_no_deliveries_figure_without_confirmations() -> None:
    assert compare.deliveries(report(0.0)["result"], ROUTING) is None


def test_the_provider_is_out_of_the_stack_total_on_both_sides() -> None:
    ours = compare.load_figures(report(), ROUTING)
    older = compare.load_figures(report(provider_in_total=True), ROUTING)

    assert ours["CPU ms per booking: stack total"] == 70.0
    assert older["CPU ms per booking: stack total"] == 70.0
    assert ours["CPU ms per booking: payments (fake provider; not in total)"] == 10.0


def test_calls_per_booking_are_each_functions_calls_over_confirmations() -> None:
    figures = compare.load_figures(report(), ROUTING)

    assert figures["calls per booking: api bookings"] == pytest.approx(4.0)
    assert figures["calls per booking: reactions relay-outbox"] == pytest.approx(0.1)
    assert figures["deliveries per booking: topic-triggered"] == pytest.approx(6.0)
    assert figures["latency ms: pay->confirmed p95"] == 600.0


def test_a_figure_one_side_lacks_shows_as_a_dash() -> None:
    ours = compare.load_figures(report(), ROUTING)
    theirs = compare.load_figures(report(), ROUTING)
    del theirs["latency ms: request->held p95"]
    ours["calls per booking: reactions new-function"] = 0.5  # only this tree has it

    table = compare.rows([ours], [theirs])
    text = "\n".join(compare.render(table, "this", "67e146b"))

    row = next(r for r in table if r.name == "latency ms: request->held p95")
    assert (row.this, row.ref, row.ratio) == (300.0, None, None)
    line = next(line for line in text.splitlines() if "request->held p95" in line)
    assert line.split()[-3:] == ["300", "-", "-"]
    # the new figure sits with its section, not at the end
    names = [r.name for r in table]
    assert names.index("calls per booking: reactions new-function") > names.index(
        "calls per booking: api bookings")
    assert names[-1].startswith("calls per booking")


def test_each_side_is_its_median_over_rounds_and_the_ratio_is_of_the_medians() -> None:
    this = [compare.load_figures(report(rate), ROUTING) for rate in (9.0, 10.0, 20.0)]
    ref = [compare.load_figures(report(rate), ROUTING) for rate in (5.0, 4.0)]

    row = next(r for r in compare.rows(this, ref) if r.name.endswith("confirmed bookings/s"))

    assert (row.this, row.ref) == (10.0, 4.5)
    assert row.ratio == pytest.approx(10.0 / 4.5)


def test_idle_figures_leave_the_provider_and_parent_out_of_the_total() -> None:
    before = IdleSample(0.0, {"kafka": 1.0, "triggers": 2.0, "payments": 0.0}, 5.0, 100.0)
    after = IdleSample(10.0, {"kafka": 1.4, "triggers": 3.0, "payments": 0.2}, 5.1, 102.0)

    figures = idle.report(before, after, settle=10.0)
    shown = compare.idle_figures({"idle": figures})

    assert figures["cpu_pct_of_one_core"]["stack total"] == pytest.approx(14.0)
    assert shown["CPU % of one core: stack total"] == pytest.approx(14.0)
    assert shown["CPU % of one core: payments (fake provider; not in total)"] == 2.0
    assert shown["CPU % of one core: parent process (not in total)"] == 1.0
    assert figures["other_processes_busy_cores"] == pytest.approx(0.03)


def test_the_bench_keeps_the_provider_out_of_its_total_and_says_so() -> None:
    fig = Figures(rate=10.0, window=60.0, mix={"pay": 1.0}, confirmed=600,
                  cpu_ms={"reactions": 40.0, "payments": 10.0, "stack total": 40.0,
                          "load generator": 2.0})

    text = bench.render(fig, {})
    lines = [line.strip() for line in text.splitlines()]

    assert "stack_total_excludes" in fig.to_json()
    assert lines.index("stack total                                40.0") < lines.index(
        "payments (fake provider; not in total)     10.0")


def test_a_runs_children_are_named_as_the_stack_names_them() -> None:
    assert idlerun.role(["/venv/bin/python", "-m", "local.knative.host", "api",
                         "--port", "1"]) == "api"
    assert idlerun.role(["/venv/bin/python", "-m", "local.knative.triggers"]) == "triggers"
    assert idlerun.role(["/venv/bin/python", "-m", "local.stack.fakestripe"]) == "payments"
    assert idlerun.role(["/venv/bin/python", "-m", "moto.server", "-p", "1"]) == "aws"
    assert idlerun.role(["/root/.calfkit/bin/tansu-v0.6.0", "broker"]) == "kafka"
    assert idlerun.role(["/x/bin/postgres", "-D", "/data"]) == "postgres"
    assert idlerun.role(["/x/bin/redis-server 127.0.0.1:47749"]) == "redis"  # its own title
    assert idlerun.role(["/x/bin/something-else"]) == "something-else"


def test_the_broker_growth_lines_are_read_from_the_output() -> None:
    output = ("embedded broker CPU per record produced and fetched, 400 round trips each:\n"
              ".       0 batches in the fetched partition    0.68 ms\n"
              "    5000 batches in another topic            0.83 ms\n")

    assert compare.broker_figures(output) == {
        "broker CPU ms per round trip: 0 batches in the fetched partition": 0.68,
        "broker CPU ms per round trip: 5000 batches in another topic": 0.83}


def test_the_batches_stored_are_per_booking_and_by_topic() -> None:
    found = {"bookings": 400, "unexpected_sessions": 0, "records": 2000, "batches": 1000,
             "batches_per_booking": 2.5, "records_per_booking": 5.0, "records_per_batch": 2.0,
             "by_topic": {"booking.requested": {"records": 400, "batches": 200},
                          "booking.expired": {"records": 0, "batches": 0}}}

    figures = compare.batch_figures(found)

    assert figures["broker stored: batches per booking"] == 2.5
    assert figures["batches per booking, by topic: booking.requested"] == 0.5
    assert "batches per booking, by topic: booking.expired" not in figures  # none stored


def test_hops_inside_the_stack_are_compared_by_their_p50() -> None:
    report = {"result": {"hops_ms": {"payment.succeeded -> settle_booking": {
        "p50": 9.0, "p95": 20.0, "p99": 30.0, "n": 10}}}}

    figures = compare.load_figures(report, None)

    assert figures["hop p50 ms (inside the stack): payment.succeeded -> settle_booking"] == 9.0


def test_only_the_options_given_are_passed_to_both_sides() -> None:
    args = against.arguments(["--against", "HEAD~1", "--rate", "10", "--mix", "pay=9,expire=1"])

    assert against.forwarded(args, against.LOAD_OPTIONS) == [
        "--rate", "10", "--mix", "pay=9,expire=1"]
    assert args.rounds == 2 and args.idle is None


def test_idle_takes_its_seconds_or_a_minute() -> None:
    assert against.arguments(["--against", "x", "--idle"]).idle == 60.0
    assert against.arguments(["--against", "x", "--idle", "30"]).idle == 30.0
    assert idle.arguments(["--idle"]).idle == 60.0


def test_idle_and_broker_growth_are_not_compared_at_once() -> None:
    with pytest.raises(SystemExit):
        against.arguments(["--against", "x", "--idle", "--broker-growth"])


FAKE_BENCH = """
import json, sys
from pathlib import Path
argv = sys.argv[1:]
if {fail}:
    print("the stack did not start: no broker")
    sys.exit(3)
Path(argv[argv.index("--json") + 1]).write_text(json.dumps({report}))
"""


def fake_trees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ref_fails: bool) -> None:
    """Two trees whose bench is a script: this one's confirms 10/s, REF's 8/s or fails."""
    made = {}
    for slug, rate, fail in (("this", 10.0, False), ("ref", 8.0, ref_fails)):
        folder = tmp_path / slug
        folder.mkdir()
        (folder / "fakebench.py").write_text(FAKE_BENCH.format(fail=fail, report=report(rate)))
        made[slug] = folder
    monkeypatch.setattr(against, "LOGS", tmp_path / "logs")
    monkeypatch.setattr(trees, "resolve", lambda ref: "ab" * 20)
    monkeypatch.setattr(trees, "export", lambda commit, into: None)
    monkeypatch.setattr(trees, "head", lambda: "cafe123")
    monkeypatch.setattr(trees, "routing", lambda folder: ROUTING)
    monkeypatch.setattr(trees, "tree", lambda label, folder: trees.Tree(
        label, made["this" if folder == trees.ROOT else "ref"], "fakebench", None))


def test_both_trees_are_run_in_turn_and_compared(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_trees(tmp_path, monkeypatch, ref_fails=False)

    against.main(["--against", "REF", "--rounds", "2", "--rate", "10"])

    out = capsys.readouterr().out
    order = [line.split(": ")[1] for line in out.splitlines() if line.startswith("round ")]
    assert order == ["this tree (fakebench) ...", "REF (fakebench) ...",
                     "this tree (fakebench) ...", "REF (fakebench) ..."]
    line = next(line for line in out.splitlines() if "confirmed bookings/s" in line)
    assert line.split()[-3:] == ["10.0", "8.00", "1.25"]
    assert "machine speed, REF: 300, 300 ms" in out


def test_a_failed_side_fails_the_comparison_and_says_which_and_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_trees(tmp_path, monkeypatch, ref_fails=True)

    with pytest.raises(SystemExit) as exited:
        against.main(["--against", "REF", "--rounds", "2"])

    out = capsys.readouterr().out
    assert exited.value.code == 1
    assert "FAILED: REF (ref), round 1, failed: exit 3" in out
    assert "the stack did not start: no broker" in out
    assert sum(1 for line in out.splitlines() if line.startswith("round ")) == 2
