"""A state machine as data: its statuses, its legal moves and who makes each.

The booking's, the ticket's and the payment's machines are declared with
this, each in its home (`bookings`, `tickets`, `payments`), so the legal moves
are stated once: the homes' guarded UPDATEs take their from-states from the
table, a unit test walks it, and the docs' diagrams are drawn from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, Literal, TypeVar

S = TypeVar("S", bound=StrEnum)


class IllegalMove(Exception):
    """Code asked for a move its machine does not have: a bug, never a late delivery."""


@dataclass(frozen=True)
class Move(Generic[S]):
    """One legal move; `source` None is the row's creation."""

    source: S | None
    target: S
    on: str  # what makes it happen: an event's type, or a request
    by: tuple[str, ...]  # the reactions and views that make it, as "module:function"


@dataclass(frozen=True)
class Machine(Generic[S]):
    name: str
    statuses: type[S]
    terminal: frozenset[S]
    moves: tuple[Move[S], ...]

    def sources(self, target: S) -> frozenset[S]:
        """The statuses a row may be in to move to `target`."""
        return frozenset(m.source for m in self.moves
                         if m.target is target and m.source is not None)

    def targets(self, source: S) -> frozenset[S]:
        return frozenset(m.target for m in self.moves if m.source is source)

    def created_as(self) -> frozenset[S]:
        return frozenset(m.target for m in self.moves if m.source is None)

    def initial(self, status: S) -> str:
        """The status a new row is written with, if the table creates rows in it; else raise."""
        if status not in self.created_as():
            raise IllegalMove(f"{self.name}: no row is created {status}")
        return status.value

    def check(self, target: S, sources: Iterable[S] | None = None) -> frozenset[S]:
        """The from-states of a move to `target` (all the table's, or those named); else raise."""
        legal = self.sources(target)
        wanted = legal if sources is None else frozenset(sources)
        if not legal or not wanted <= legal:
            raise IllegalMove(f"{self.name}: no move from {sorted(wanted - legal) or 'anywhere'}"
                              f" to {target}")
        return wanted

    def guard(self, target: S, sources: Iterable[S] | None = None) -> dict[str, Any]:
        """The parameters of a guarded UPDATE: `SET status = :to ... AND status = ANY(:from)`."""
        return {"to": target.value, "from": sorted(s.value for s in self.check(target, sources))}


def literal_of(statuses: Iterable[StrEnum]) -> Any:
    """A Literal of the statuses' strings: an API model shows it inline, with its field's title."""
    return Literal[tuple(s.value for s in statuses)]


def mermaid(machine: Machine[Any]) -> str:
    """The machine as a Mermaid `stateDiagram-v2`, as the docs show it.

    One arrow per pair of statuses, labelled with what moves it and, in
    brackets, the functions that do.
    """
    arrows: dict[tuple[str, str], list[str]] = {}
    for move in machine.moves:
        source = "[*]" if move.source is None else move.source.value
        functions = dict.fromkeys(made_by.split(":")[0].rsplit(".", 1)[-1] for made_by in move.by)
        arrows.setdefault((source, move.target.value), []).append(
            f"{move.on} ({', '.join(functions)})")
    lines = ["stateDiagram-v2"]
    lines.extend(f"    {source} --> {target}: {' or '.join(labels)}"
                 for (source, target), labels in arrows.items())
    lines.extend(f"    {status.value} --> [*]" for status in machine.statuses
                 if status in machine.terminal)
    return "\n".join(lines) + "\n"

