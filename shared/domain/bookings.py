"""The booking's state machine: its statuses, its legal moves, and the SQL that makes each.

Every reaction and view that moves a booking does it here. A move is one
UPDATE guarded by the statuses the table allows it from: a booking that has
moved on meanwhile (an earlier delivery settled it, or a race was lost under
its lock) is left as it is and the move answers None, while a move the table
does not have is a bug and raises `IllegalMove`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Literal

from shared.domain.machines import Machine, Move
from shared.runtime.db import Row, Tx


class BookingStatus(StrEnum):
    PENDING = "PENDING"
    AWAITING_PAYMENT = "AWAITING_PAYMENT"
    CONFIRMED = "CONFIRMED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"


_S = BookingStatus
_USER_CANCELS = "POST /bookings/{id}/cancel"
BOOKING = Machine(
    name="booking",
    statuses=BookingStatus,
    terminal=frozenset({_S.CONFIRMED, _S.REJECTED, _S.CANCELLED, _S.EXPIRED}),
    moves=(
        Move(None, _S.PENDING, "POST /bookings", ("functions.bookings:request_booking",)),
        Move(_S.PENDING, _S.AWAITING_PAYMENT, "booking.requested",
             ("functions.reserve_ticket:reserve_ticket",)),
        Move(_S.PENDING, _S.REJECTED, "booking.requested, no ticket",
             ("functions.reserve_ticket:reserve_ticket",)),
        Move(_S.PENDING, _S.CANCELLED, _USER_CANCELS, ("functions.bookings:cancel",)),
        Move(_S.AWAITING_PAYMENT, _S.CONFIRMED, "payment.succeeded",
             ("functions.settle_booking:settle_booking",)),
        Move(_S.AWAITING_PAYMENT, _S.CANCELLED, "payment.failed",
             ("functions.settle_booking:settle_booking",)),
        Move(_S.AWAITING_PAYMENT, _S.CANCELLED, _USER_CANCELS, ("functions.bookings:cancel",)),
        Move(_S.AWAITING_PAYMENT, _S.EXPIRED, "reservation.expired",
             ("functions.expire_booking:expire_booking",)),
    ),
)
TERMINAL = BOOKING.terminal
CANCELLABLE = BOOKING.sources(_S.CANCELLED)
CancelReason = Literal["user_cancelled", "payment_failed"]


@dataclass(frozen=True)
class Booking:
    """A booking as its reactions read it."""

    booking_id: uuid.UUID
    course_id: uuid.UUID
    user_id: uuid.UUID
    ticket_id: uuid.UUID | None
    status: BookingStatus
    amount_cents: int | None
    currency: str | None
    hold_expires_at: datetime | None
    reason: str | None
    trace_context: str | None  # the W3C traceparent the whole saga continues
    created_at: datetime
    updated_at: datetime


_FIELDS = tuple(f.name for f in fields(Booking))


def _booking(row: Row | None) -> Booking | None:
    if row is None:
        return None
    return Booking(**{**{name: row[name] for name in _FIELDS},
                      "status": BookingStatus(row["status"])})


def lock(tx: Tx, booking_id: uuid.UUID) -> Booking | None:
    """The booking, locked until commit: its reactions then run one at a time."""
    return _booking(tx.one("SELECT * FROM bookings WHERE booking_id = :b FOR UPDATE",
                           b=booking_id))


def share(tx: Tx, booking_id: uuid.UUID) -> Booking | None:
    """The booking, kept from moving (but not from being read) until commit."""
    return _booking(tx.one("SELECT * FROM bookings WHERE booking_id = :b FOR SHARE",
                           b=booking_id))


def request(tx: Tx, booking_id: uuid.UUID, course_id: uuid.UUID, user_id: uuid.UUID,
            trace_context: str | None) -> Booking:
    """A new PENDING booking, carrying the trace its saga continues."""
    booking = _booking(tx.one(
        "INSERT INTO bookings (booking_id, course_id, user_id, status, trace_context)"
        " VALUES (:b, :c, :u, :s, :t) RETURNING *",
        b=booking_id, c=course_id, u=user_id, s=BOOKING.initial(_S.PENDING), t=trace_context,
    ))
    assert booking is not None
    return booking


def attach_ticket(tx: Tx, booking_id: uuid.UUID, ticket_id: uuid.UUID, amount_cents: int,
                  currency: str) -> None:
    """Note the ticket reserved for the booking and the price it will pay (still PENDING)."""
    tx.execute(
        "UPDATE bookings SET ticket_id = :t, amount_cents = :amount, currency = :cur,"
        " updated_at = now() WHERE booking_id = :b",
        t=ticket_id, amount=amount_cents, cur=currency, b=booking_id,
    )


def hold(tx: Tx, booking_id: uuid.UUID, expires_at: datetime) -> Booking | None:
    """PENDING -> AWAITING_PAYMENT until `expires_at`."""
    return _booking(tx.one(
        "UPDATE bookings SET status = :to, hold_expires_at = :exp, updated_at = now()"
        " WHERE booking_id = :b AND status = ANY(:from) RETURNING *",
        exp=expires_at, b=booking_id, **BOOKING.guard(_S.AWAITING_PAYMENT),
    ))


def _move(tx: Tx, booking_id: uuid.UUID, target: BookingStatus, reason: str | None,
          sources: frozenset[BookingStatus] | None = None) -> Booking | None:
    return _booking(tx.one(
        "UPDATE bookings SET status = :to, reason = :reason, updated_at = now()"
        " WHERE booking_id = :b AND status = ANY(:from) RETURNING *",
        reason=reason, b=booking_id, **BOOKING.guard(target, sources),
    ))


def reject(tx: Tx, booking_id: uuid.UUID, reason: str) -> Booking | None:
    """PENDING -> REJECTED: no ticket could be reserved, for `reason`."""
    return _move(tx, booking_id, _S.REJECTED, reason)


def confirm(tx: Tx, booking_id: uuid.UUID) -> Booking | None:
    """AWAITING_PAYMENT -> CONFIRMED: the payment came."""
    return _move(tx, booking_id, _S.CONFIRMED, None)


def cancel(tx: Tx, booking_id: uuid.UUID, reason: CancelReason) -> Booking | None:
    """-> CANCELLED: by its user while still live, or for a payment that failed while held."""
    sources = frozenset({_S.AWAITING_PAYMENT}) if reason == "payment_failed" else None
    return _move(tx, booking_id, _S.CANCELLED, reason, sources)


def expire(tx: Tx, booking_id: uuid.UUID) -> Booking | None:
    """AWAITING_PAYMENT -> EXPIRED: the hold ran out unpaid."""
    return _move(tx, booking_id, _S.EXPIRED, "hold_expired")
