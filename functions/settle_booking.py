"""The payment came back: confirm or cancel the booking, or refund money that came too late."""

from __future__ import annotations

from shared.domain import holds
from shared.domain.events import (
    BookingCancelled,
    BookingConfirmed,
    PaymentFailed,
    PaymentRefunded,
    PaymentSucceeded,
)
from shared.runtime.reactions import Emitted, UnitOfWork, reaction


@reaction(PaymentSucceeded, PaymentFailed)
def settle_booking(event: PaymentSucceeded | PaymentFailed, uow: UnitOfWork) -> Emitted:
    booking = uow.tx.one(
        "SELECT booking_id, user_id, course_id, ticket_id, status, hold_expires_at, trace_context"
        " FROM bookings"
        " WHERE booking_id = :b FOR UPDATE",
        b=event.booking_id,
    )
    if booking is None:
        return None
    waiting = booking["status"] == "AWAITING_PAYMENT"
    if waiting:  # confirmed or cancelled below: the hold is over either way
        holds.close_hold(uow.redis, event.booking_id, booking["hold_expires_at"],
                         booking["trace_context"])

    if isinstance(event, PaymentFailed):
        if not waiting:
            return None
        uow.tx.execute(
            "UPDATE bookings SET status = 'CANCELLED', reason = 'payment_failed',"
            " updated_at = now() WHERE booking_id = :b", b=event.booking_id,
        )
        return BookingCancelled(
            booking_id=event.booking_id, user_id=booking["user_id"],
            course_id=booking["course_id"], ticket_id=booking["ticket_id"],
            reason="payment_failed",
        )

    if waiting:
        uow.tx.execute(
            "UPDATE bookings SET status = 'CONFIRMED', reason = NULL, updated_at = now()"
            " WHERE booking_id = :b", b=event.booking_id,
        )
        return BookingConfirmed(
            booking_id=event.booking_id, user_id=booking["user_id"],
            course_id=booking["course_id"], ticket_id=booking["ticket_id"],
            payment_id=event.payment_id, amount_cents=event.amount_cents,
            currency=event.currency,
        )

    refunded = uow.tx.execute(
        "UPDATE payments SET status = 'REFUNDED', updated_at = now()"
        " WHERE payment_id = :p AND status = 'SUCCEEDED'", p=event.payment_id,
    )
    if booking["status"] == "CONFIRMED" or not refunded:
        return None
    uow.outcome = "refunded"
    reasons = {"EXPIRED": "booking_expired", "CANCELLED": "booking_cancelled"}
    return PaymentRefunded(
        payment_id=event.payment_id, booking_id=event.booking_id,
        amount_cents=event.amount_cents, currency=event.currency,
        reason=reasons.get(booking["status"], "booking_not_awaiting_payment"),  # type: ignore[arg-type]
    )
