"""Two trees' bench figures side by side: the median over rounds, and their ratio (this / REF).

Pure functions over the JSON that `make bench --json` (and `--idle --json`)
writes, in this tree's form and in older ones: a REF may predate a figure,
which then shows as "-", and older JSON counted the fake payment provider in
the stack total, which is taken out here so that both totals mean the same.
Kept apart from running anything so the comparison is tested without a stack.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Figure = float | None
Figures = dict[str, Figure]  # "section: name" -> value, in the order to show
Routing = dict[str, dict[str, Any]]  # function name -> {"topics": [...], "schedule": ...}

# The fake provider's role as every tree's JSON names it (local.stack.stack.PAYMENTS);
# REF's JSON is read here, not REF's code, so the name is written out.
PROVIDER = "payments"
TOTAL = "stack total"
# PingSource-driven functions, when a tree's routing declaration cannot be read.
SCHEDULES = frozenset({"relay-outbox", "sweep-expired-holds", "reconcile-payments"})
OUTSIDE_THE_STACK = ("load generator", "bench process, besides the generator")
MISSING = "-"


@dataclass(frozen=True)
class Row:
    name: str
    this: Figure
    ref: Figure

    @property
    def ratio(self) -> Figure:
        return ratio(self.this, self.ref)


def median(values: Sequence[Figure]) -> Figure:
    """The median of the rounds that have the figure; None if none has it."""
    present = [v for v in values if v is not None]
    return float(statistics.median(present)) if present else None


def ratio(this: Figure, ref: Figure) -> Figure:
    """this / REF; None if either is missing or REF's is 0."""
    if this is None or ref is None or ref == 0:
        return None
    return this / ref


def _excluded(result: dict[str, Any]) -> set[str]:
    """What the JSON's own stack total leaves out; older JSON says nothing: it left out none."""
    return set(result.get("stack_total_excludes", ()))


def stack_total(cpu: dict[str, float], excluded: set[str]) -> Figure:
    """The stack total without the provider, however this JSON's total was made."""
    total = cpu.get(TOTAL)
    if total is None:
        return None
    if PROVIDER in cpu and PROVIDER not in excluded:
        total -= cpu[PROVIDER]
    return round(total, 2)


def deliveries(result: dict[str, Any], routing: Routing | None) -> Figure:
    """Deliveries per confirmed booking: the reactions host's topic-triggered calls/s over
    confirmed/s. Schedules are not deliveries: the routing says which functions have topics
    (without it, every function but the known schedules counts)."""
    confirmed = result.get("confirmed_per_s")
    functions = result.get("functions", {}).get("reactions")
    if not confirmed or functions is None:
        return None

    def delivered(name: str) -> bool:
        if routing is None:
            return name not in SCHEDULES
        return bool(routing.get(name, {}).get("topics"))

    return float(sum(f["per_s"] for name, f in functions.items() if delivered(name))
                 / confirmed)


def load_figures(report: dict[str, Any], routing: Routing | None) -> Figures:
    """One `make bench --json` run's figures, by the names the table shows."""
    result = report.get("result", {})
    found: Figures = {"throughput: confirmed bookings/s": result.get("confirmed_per_s"),
                      "throughput: sessions not as expected": result.get("unexpected_sessions")}
    for stage, key in (("request->held", "request_to_held_ms"),
                       ("pay->confirmed", "pay_to_confirmed_ms")):
        for q in ("p50", "p95"):
            found[f"latency ms: {stage} {q}"] = result.get(key, {}).get(q)
    for hop, q in result.get("hops_ms", {}).items():
        if "->" in hop and q.get("p50") is not None:
            found[f"hop p50 ms (inside the stack): {hop}"] = q["p50"]
    cpu: dict[str, float] = result.get("cpu_ms_per_confirmed_booking", {})
    found["CPU ms per booking: " + TOTAL] = stack_total(cpu, _excluded(result))
    found.update(_by_process("CPU ms per booking", cpu))
    found["deliveries per booking: topic-triggered"] = deliveries(result, routing)
    confirmed = result.get("confirmed_per_s")
    for host, functions in sorted(result.get("functions", {}).items()):
        for name, f in sorted(functions.items()):
            found[f"calls per booking: {host} {name}"] = (f["per_s"] / confirmed
                                                          if confirmed else None)
    return found


def idle_figures(report: dict[str, Any]) -> Figures:
    """One `make bench --idle --json` run's figures: % of one core, by process."""
    figures = report.get("idle", {})
    shares: dict[str, float] = figures.get("cpu_pct_of_one_core", {})
    found: Figures = {"CPU % of one core: " + TOTAL: stack_total(shares, _excluded(figures))}
    found.update(_by_process("CPU % of one core", shares))
    return found


# Its progress dots (stderr) may lead a line when both streams go to one file.
_BROKER_LINE = re.compile(r"^[.\s]*(\d+) batches (.*?)\s+(\d+(?:\.\d+)?) ms\s*$")


def broker_figures(output: str) -> Figures:
    """`make bench --broker-growth`'s printed lines (it writes no JSON, in any tree)."""
    found: Figures = {}
    for line in output.splitlines():
        match = _BROKER_LINE.match(line)
        if match:
            size, where, ms = match.groups()
            found[f"broker CPU ms per round trip: {int(size)} batches {where}"] = float(ms)
    return found


def batch_figures(found: dict[str, Any]) -> Figures:
    """`local.measure.batches.measure`'s result: what the broker stored for the bookings."""
    figures: Figures = {
        "broker stored: bookings booked and paid": found.get("bookings"),
        "broker stored: sessions not as expected": found.get("unexpected_sessions"),
        "broker stored: batches": found.get("batches"),
        "broker stored: records": found.get("records"),
        "broker stored: batches per booking": found.get("batches_per_booking"),
        "broker stored: records per booking": found.get("records_per_booking"),
        "broker stored: records per batch": found.get("records_per_batch"),
    }
    bookings = found.get("bookings") or 0
    for topic, counts in sorted(found.get("by_topic", {}).items()):
        if counts["batches"]:
            figures[f"batches per booking, by topic: {topic}"] = (
                counts["batches"] / bookings if bookings else None)
    return figures


def _by_process(section: str, cpu: dict[str, float]) -> Figures:
    """The stack's processes by value, then the provider and what is not the stack's."""
    outside = {PROVIDER, TOTAL, "parent process", *OUTSIDE_THE_STACK}
    found: Figures = {f"{section}: {role}": value for role, value in
                      sorted(cpu.items(), key=lambda i: -i[1]) if role not in outside}
    if PROVIDER in cpu:
        found[f"{section}: {PROVIDER} (fake provider; not in total)"] = cpu[PROVIDER]
    for role in ("parent process", *OUTSIDE_THE_STACK):
        if role in cpu:
            found[f"{section}: {role} (not in total)"] = cpu[role]
    return found


def rows(this: Sequence[Figures], ref: Sequence[Figures]) -> list[Row]:
    """Every figure either side has, each side's median over its rounds."""
    names: list[str] = []
    for run in [*this, *ref]:
        for name in run:
            if name in names:
                continue
            section = name.split(":")[0]
            same = [i for i, known in enumerate(names) if known.split(":")[0] == section]
            names.insert(same[-1] + 1 if same else len(names), name)
    return [Row(name, median([run.get(name) for run in this]),
                median([run.get(name) for run in ref])) for name in names]


def shown(value: Figure) -> str:
    if value is None:
        return MISSING
    magnitude = abs(value)
    return f"{value:.0f}" if magnitude >= 100 else f"{value:.1f}" if magnitude >= 10 \
        else f"{value:.2f}"


def render(table: list[Row], this_label: str, ref_label: str) -> list[str]:
    """The table's lines, under a header per section."""
    width = max([len(r.name.split(": ", 1)[-1]) for r in table] + [24]) + 2
    head = f"  {'':<{width}}{this_label:>12}{ref_label:>12}{'this/REF':>10}"
    lines, section = [head], ""
    for row in table:
        here, name = row.name.split(": ", 1) if ": " in row.name else ("", row.name)
        if here != section:
            lines.append(f"  {here}")
            section = here
        ratio_text = MISSING if row.ratio is None else f"{row.ratio:.2f}"
        lines.append(f"    {name:<{width - 2}}{shown(row.this):>12}{shown(row.ref):>12}"
                     f"{ratio_text:>10}")
    return lines
