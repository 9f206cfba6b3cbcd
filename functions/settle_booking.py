"""The payment came back: confirm or cancel the booking, or ask back money that came too late.

Believes no event blindly: a `payment.succeeded` confirms only when our
payment row (moved only by the provider's word) says SUCCEEDED for the same
amount, and a `payment.failed` cancels only when the row says FAILED. Any
other claim is a poison event, dead-lettered with its reason: that is how a
forged event posted to this function, or produced onto its topic, ends.
"""

from __future__ import annotations

from shared.domain import holds, payments
from shared.domain.events import (
    BookingCancelled,
    BookingConfirmed,
    PaymentFailed,
    PaymentRefundRequested,
    PaymentSucceeded,
)
from shared.runtime.envelope import PoisonEvent
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
    if isinstance(event, PaymentSucceeded):
        doubt = payments.proof_of_payment(uow.tx, event)
        if doubt is not None:
            raise PoisonEvent(f"payment.succeeded not believed: {doubt}")
    else:
        payment = uow.tx.one("SELECT booking_id, status FROM payments WHERE payment_id = :p"
                             " FOR UPDATE", p=event.payment_id)
        if payment is not None and payment["status"] in payments.RECEIVED:
            uow.outcome = "stale"  # the money came after all (a retried card): it settles
            return None
        if payment is None or payment["booking_id"] != event.booking_id \
                or payment["status"] != "FAILED":
            raise PoisonEvent(f"payment.failed not believed: payment {event.payment_id} is"
                              f" {payment['status'] if payment else 'missing'}")
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

    if booking["status"] == "CONFIRMED":
        return None  # this payment confirmed it before: a redelivery
    asked = uow.tx.execute(
        "UPDATE payments SET status = 'REFUNDING', updated_at = now()"
        " WHERE payment_id = :p AND status = 'SUCCEEDED'", p=event.payment_id,
    )
    if not asked:
        return None
    uow.outcome = "refunding"
    return PaymentRefundRequested(
        payment_id=event.payment_id, booking_id=event.booking_id,
        amount_cents=event.amount_cents, currency=event.currency,
        reason=payments.refund_reason(booking["status"]),  # type: ignore[arg-type]
    )
