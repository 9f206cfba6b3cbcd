"""The ticket's state machine: its statuses, its legal moves, and the SQL that makes each.

A ticket is reserved for at most one booking at a time (a unique index on
`tickets.booking_id`, and the CHECK that only an AVAILABLE ticket has none),
so it is never sold twice. Its moves follow its booking's, in the same
transaction: reserved (and held) when the booking is requested, sold when it is
confirmed, back on sale when it ends otherwise.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum

from shared.domain.machines import Machine, Move
from shared.runtime.db import Row, Tx


class TicketStatus(StrEnum):
    AVAILABLE = "AVAILABLE"
    RESERVED = "RESERVED"
    SOLD = "SOLD"


_S = TicketStatus
TICKET = Machine(
    name="ticket",
    statuses=TicketStatus,
    terminal=frozenset({_S.SOLD}),
    moves=(
        Move(None, _S.AVAILABLE, "POST /courses", ("functions.catalogue:publish_course",)),
        Move(_S.AVAILABLE, _S.RESERVED, "booking.requested",
             ("functions.reserve_ticket:reserve_ticket",)),
        Move(_S.RESERVED, _S.SOLD, "payment.succeeded",
             ("functions.settle_booking:settle_booking",)),
        Move(_S.RESERVED, _S.AVAILABLE, "payment.failed, reservation.expired or a cancel",
             ("functions.settle_booking:settle_booking", "functions.expire_booking:expire_booking",
              "functions.bookings:cancel")),
    ),
)
TERMINAL = TICKET.terminal


@dataclass(frozen=True)
class Ticket:
    ticket_id: uuid.UUID
    course_id: uuid.UUID
    status: TicketStatus
    booking_id: uuid.UUID | None
    updated_at: datetime


_FIELDS = tuple(f.name for f in fields(Ticket))


def _ticket(row: Row | None) -> Ticket | None:
    if row is None:
        return None
    return Ticket(**{**{name: row[name] for name in _FIELDS},
                     "status": TicketStatus(row["status"])})


def lock(tx: Tx, ticket_id: uuid.UUID) -> Ticket | None:
    return _ticket(tx.one("SELECT * FROM tickets WHERE ticket_id = :t FOR UPDATE", t=ticket_id))


def issue(tx: Tx, course_id: uuid.UUID, capacity: int) -> None:
    """A new course's `capacity` tickets, all on sale."""
    tx.execute(
        "INSERT INTO tickets (ticket_id, course_id, status)"
        " SELECT gen_random_uuid(), :c, :s FROM generate_series(1, :n)",
        c=course_id, s=TICKET.initial(_S.AVAILABLE), n=capacity,
    )


# One statement: the free ticket is found and taken under its row lock, so two
# reservations never take the same one; SKIP LOCKED passes over tickets another
# reservation is taking right now instead of queueing behind it.
_TAKE_FREE_TICKET = """
UPDATE tickets SET status = :to, booking_id = :booking, updated_at = now()
WHERE ticket_id = (
    SELECT ticket_id FROM tickets
    WHERE course_id = :course AND status = ANY(:from)
    ORDER BY ticket_id LIMIT 1
    FOR UPDATE {mode}
)
RETURNING *
"""


def reserve(tx: Tx, course_id: uuid.UUID, booking_id: uuid.UUID) -> Ticket | None:
    """AVAILABLE -> RESERVED for the booking: one of the course's free tickets, or None."""
    params = {"booking": booking_id, "course": course_id, **TICKET.guard(_S.RESERVED)}
    return _ticket(tx.one(_TAKE_FREE_TICKET.format(mode="SKIP LOCKED"), **params) or tx.one(
        # every free ticket was locked: wait, in case one of them is rolled back
        _TAKE_FREE_TICKET.format(mode=""), **params
    ))


def sell(tx: Tx, booking_id: uuid.UUID) -> bool:
    """RESERVED -> SOLD: the booking holding it was confirmed."""
    return bool(tx.execute(
        "UPDATE tickets SET status = :to, updated_at = now()"
        " WHERE booking_id = :b AND status = ANY(:from)",
        b=booking_id, **TICKET.guard(_S.SOLD),
    ))


def release(tx: Tx, booking_id: uuid.UUID) -> bool:
    """RESERVED -> AVAILABLE: the booking holding it ended unpaid; the ticket is on sale again."""
    return bool(tx.execute(
        "UPDATE tickets SET status = :to, booking_id = NULL, updated_at = now()"
        " WHERE booking_id = :b AND status = ANY(:from)",
        b=booking_id, **TICKET.guard(_S.AVAILABLE),
    ))
