"""Each state machine's table is whole, its home the only writer of a status, its diagram drawn."""

from __future__ import annotations

import ast
import importlib
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import pytest

from shared.domain import bookings, payments, tickets
from shared.domain.bookings import BOOKING, BookingStatus
from shared.domain.machines import IllegalMove, Machine, mermaid
from shared.domain.payments import PAYMENT, PaymentStatus
from shared.domain.tickets import TICKET, TicketStatus

ROOT = Path(__file__).resolve().parents[2]
MACHINES: dict[str, tuple[Machine[Any], str]] = {
    "booking": (BOOKING, "bookings"),
    "ticket": (TICKET, "tickets"),
    "payment": (PAYMENT, "payments"),
}
HOMES = {ROOT / "shared" / "domain" / f"{home}.py" for _, home in MACHINES.values()}
machines = pytest.mark.parametrize("name", sorted(MACHINES))


def _reachable(machine: Machine[Any], start: Any) -> set[Any]:
    seen, todo = {start}, [start]
    while todo:
        for target in machine.targets(todo.pop()) - seen:
            seen.add(target)
            todo.append(target)
    return seen


@machines
def test_every_status_is_in_the_table(name: str) -> None:
    machine, _ = MACHINES[name]
    named = {m.target for m in machine.moves} | ({m.source for m in machine.moves} - {None})
    assert named == set(machine.statuses.__members__.values())
    assert machine.created_as(), "rows of a machine are created in some status"


@machines
def test_terminal_statuses_have_no_way_out(name: str) -> None:
    machine, _ = MACHINES[name]
    assert machine.terminal
    for status in machine.terminal:
        assert machine.targets(status) == frozenset(), status


@machines
def test_every_status_can_end(name: str) -> None:
    machine, _ = MACHINES[name]
    for status in machine.statuses:
        assert _reachable(machine, status) & machine.terminal, f"{status} never ends"


@machines
def test_every_move_is_made_by_a_function_that_uses_the_home(name: str) -> None:
    machine, home = MACHINES[name]
    for move in machine.moves:
        assert move.by, move
        for made_by in move.by:
            module_name, function = made_by.split(":")
            module = importlib.import_module(module_name)
            assert callable(getattr(module, function)), made_by
            assert _imports(Path(module.__file__ or ""), home), f"{made_by} bypasses {home}"


def _imports(path: Path, home: str) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.module == f"shared.domain.{home}" or (
                node.module == "shared.domain" and any(a.name == home for a in node.names)):
            return True
    return False


def test_a_move_not_in_the_table_raises() -> None:
    with pytest.raises(IllegalMove):
        BOOKING.guard(BookingStatus.PENDING)  # nothing moves back to PENDING
    with pytest.raises(IllegalMove):
        BOOKING.guard(BookingStatus.CONFIRMED, {BookingStatus.PENDING})  # unpaid
    with pytest.raises(IllegalMove):
        BOOKING.initial(BookingStatus.CONFIRMED)
    with pytest.raises(IllegalMove):
        TICKET.guard(TicketStatus.SOLD, {TicketStatus.AVAILABLE})
    with pytest.raises(IllegalMove):
        PAYMENT.guard(PaymentStatus.REFUNDING, {PaymentStatus.FAILED})
    with pytest.raises(IllegalMove):
        PAYMENT.guard(PaymentStatus.REQUIRES_PAYMENT)
    assert BOOKING.guard(BookingStatus.CANCELLED) == {
        "to": "CANCELLED", "from": ["AWAITING_PAYMENT", "PENDING"]}


def test_statuses_are_those_postgresql_allows() -> None:
    checks: dict[str, list[str]] = {}
    for path in sorted((ROOT / "shared" / "migrations").glob("*.sql")):
        sql = re.sub(r"--[^\n]*", "", path.read_text())
        for statement in sql.split(";"):
            table = re.search(r"(?:CREATE|ALTER) TABLE (\w+)", statement)
            found = re.search(r"CHECK \(status IN\s*\(([^)]*)\)", statement)
            if table and found:
                checks[table.group(1)] = re.findall(r"'(\w+)'", found.group(1))
    for machine, home in MACHINES.values():
        assert sorted(checks[home]) == sorted(s.value for s in machine.statuses), home


class RecordingTx:
    """A transaction that answers every statement with no row and remembers what it ran."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, dict[str, Any]]] = []

    def _run(self, sql: str, params: dict[str, Any]) -> None:
        self.ran.append((sql, params))

    def one(self, sql: str, **params: Any) -> None:
        self._run(sql, params)

    def all(self, sql: str, **params: Any) -> list[Any]:
        self._run(sql, params)
        return []

    def execute(self, sql: str, **params: Any) -> int:
        self._run(sql, params)
        return 0


def test_the_homes_guard_each_move_by_the_table_in_sql() -> None:
    b, now = uuid.uuid4(), datetime.now(UTC)
    moves: list[tuple[Callable[[Any], object], Machine[Any], Any, set[Any] | None]] = [
        (lambda tx: bookings.hold(tx, b, now), BOOKING, BookingStatus.AWAITING_PAYMENT, None),
        (lambda tx: bookings.reject(tx, b, "sold_out"), BOOKING, BookingStatus.REJECTED, None),
        (lambda tx: bookings.confirm(tx, b), BOOKING, BookingStatus.CONFIRMED, None),
        (lambda tx: bookings.cancel(tx, b, "user_cancelled"), BOOKING, BookingStatus.CANCELLED,
         None),
        (lambda tx: bookings.cancel(tx, b, "payment_failed"), BOOKING, BookingStatus.CANCELLED,
         {BookingStatus.AWAITING_PAYMENT}),
        (lambda tx: bookings.expire(tx, b), BOOKING, BookingStatus.EXPIRED, None),
        (lambda tx: tickets.reserve(tx, b, b), TICKET, TicketStatus.RESERVED, None),
        (lambda tx: tickets.sell(tx, b), TICKET, TicketStatus.SOLD, None),
        (lambda tx: tickets.release(tx, b), TICKET, TicketStatus.AVAILABLE, None),
        (lambda tx: payments.start_processing(tx, b, "pm_card_visa"), PAYMENT,
         PaymentStatus.PROCESSING, None),
        (lambda tx: payments.succeed_free(tx, b), PAYMENT, PaymentStatus.SUCCEEDED,
         {PaymentStatus.REQUIRES_PAYMENT}),
        (lambda tx: payments.close_open(tx, b), PAYMENT, PaymentStatus.CANCELLED, None),
        (lambda tx: payments.start_refund(tx, b), PAYMENT, PaymentStatus.REFUNDING, None),
    ]
    for move, machine, target, sources in moves:
        tx = RecordingTx()
        assert not move(tx)  # no row in a legal from-state: nothing moved, and it says so
        sql, params = tx.ran[0]
        assert "status = :to" in sql and "status = ANY(:from)" in sql, sql
        assert params["to"] == target
        assert set(params["from"]) == (sources or machine.sources(target))


# SQL that writes a status: an UPDATE setting it, or an INSERT of a row.
_SETS = re.compile(r"\bUPDATE\s+(bookings|tickets|payments)\s+SET\b(.*?)"
                   r"(?:\bWHERE\b|\bRETURNING\b|$)", re.IGNORECASE | re.DOTALL)
_INSERTS = re.compile(r"\bINSERT\s+INTO\s+(bookings|tickets|payments)\b", re.IGNORECASE)


def _status_writes(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.JoinedStr):
            text = "".join(str(v.value) if isinstance(v, ast.Constant) else "{}"
                           for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        else:
            continue
        writes = [m.group(0) for m in _SETS.finditer(text)
                  if re.search(r"\bstatus\s*=", m.group(2), re.IGNORECASE)]
        found += writes + [m.group(0) for m in _INSERTS.finditer(text)]
    return [f"{path.relative_to(ROOT)}:{' '.join(w.split())[:60]}" for w in found]


def test_only_the_homes_write_a_status() -> None:
    sources = [p for folder in ("functions", "shared") for p in (ROOT / folder).rglob("*.py")
               if "migrations" not in p.parts]
    outside = [w for p in sources if p not in HOMES for w in _status_writes(p)]
    assert outside == [], "write statuses through shared.domain.{bookings,tickets,payments}"
    assert all(_status_writes(home) for home in HOMES), "the scan finds the homes' writes"


def test_the_api_shows_the_booking_statuses_of_the_home() -> None:
    from functions import bookings as view

    assert get_args(view.Status) == tuple(s.value for s in BookingStatus)
    assert set(get_args(view.PaymentAnswer)) <= set(PaymentStatus)


MARKER = "<!-- state machine: {} -->"
_BLOCK = re.compile(r"\s*```mermaid\n(.*?)```", re.DOTALL)


def _drawn(name: str) -> list[tuple[Path, str]]:
    """Each docs page's diagram of the machine: the mermaid block after its marker."""
    drawn = []
    for page in sorted((ROOT / "docs").rglob("*.md")):
        text = page.read_text()
        marker = MARKER.format(name)
        start = text.find(marker)
        while start != -1:
            block = _BLOCK.match(text, start + len(marker))
            assert block, f"{page}: no ```mermaid block after {marker}"
            drawn.append((page, block.group(1)))
            start = text.find(marker, start + 1)
    return drawn


@machines
def test_the_docs_draw_the_machine_from_its_table(name: str) -> None:
    machine, _ = MACHINES[name]
    drawn = _drawn(name)
    if not drawn:
        pytest.skip(f"no docs page carries {MARKER.format(name)} yet")
    for page, diagram in drawn:
        expected = mermaid(machine)
        assert diagram == expected, f"{page}: {MARKER.format(name)} must draw\n{expected}"
