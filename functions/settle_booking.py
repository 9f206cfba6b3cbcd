"""The payment came back: confirm the booking and sell its ticket, or cancel it and put the
ticket back on sale, or ask back money that came too late.

Believes no event blindly: a `payment.succeeded` confirms only when our
payment row (moved only by the provider's word) says SUCCEEDED for the same
amount, and a `payment.failed` cancels only when the row says FAILED. Any
other claim is a poison event, dead-lettered with its reason: that is how a
forged event posted to this function, or produced onto its topic, ends.
"""

from __future__ import annotations

from shared.domain import bookings, holds, payments, tickets
from shared.domain.bookings import BookingStatus
from shared.domain.events import (
    BookingCancelled,
    BookingConfirmed,
    PaymentFailed,
    PaymentRefundRequested,
    PaymentSucceeded,
)
from shared.domain.payments import PaymentStatus
from shared.runtime.envelope import PoisonEvent
from shared.runtime.reactions import reaction
from shared.runtime.unit_of_work import Emitted, UnitOfWork


@reaction(PaymentSucceeded, PaymentFailed)
def settle_booking(event: PaymentSucceeded | PaymentFailed, uow: UnitOfWork) -> Emitted:
    booking = bookings.lock(uow.tx, event.booking_id)
    if booking is None:
        return None
    if isinstance(event, PaymentSucceeded):
        doubt = payments.proof_of_payment(uow.tx, event)
        if doubt is not None:
            raise PoisonEvent(f"payment.succeeded not believed: {doubt}")
    else:
        payment = payments.lock(uow.tx, event.payment_id)
        if payment is not None and payment.status in payments.RECEIVED:
            uow.outcome = "stale"  # the money came after all (a retried card): it settles
            return None
        if payment is None or payment.booking_id != event.booking_id \
                or payment.status is not PaymentStatus.FAILED:
            raise PoisonEvent(f"payment.failed not believed: payment {event.payment_id} is"
                              f" {payment.status if payment else 'missing'}")
    waiting = booking.status is BookingStatus.AWAITING_PAYMENT
    if waiting:  # confirmed or cancelled below: the hold is over either way
        holds.close_hold(uow.redis, event.booking_id, booking.hold_expires_at,
                         booking.trace_context)

    if isinstance(event, PaymentFailed):
        if not waiting:
            return None
        bookings.cancel(uow.tx, event.booking_id, "payment_failed")
        tickets.release(uow.tx, event.booking_id)
        return BookingCancelled(
            booking_id=event.booking_id, user_id=booking.user_id,
            course_id=booking.course_id, ticket_id=booking.ticket_id,
            reason="payment_failed",
        )

    if waiting:
        assert booking.ticket_id is not None  # held for payment, so holding its ticket
        bookings.confirm(uow.tx, event.booking_id)
        tickets.sell(uow.tx, event.booking_id)
        return BookingConfirmed(
            booking_id=event.booking_id, user_id=booking.user_id,
            course_id=booking.course_id, ticket_id=booking.ticket_id,
            payment_id=event.payment_id, amount_cents=event.amount_cents,
            currency=event.currency,
        )

    if booking.status is BookingStatus.CONFIRMED:
        return None  # this payment confirmed it before: a redelivery
    if not payments.start_refund(uow.tx, event.payment_id):
        return None
    uow.outcome = "refunding"
    return PaymentRefundRequested(
        payment_id=event.payment_id, booking_id=event.booking_id,
        amount_cents=event.amount_cents, currency=event.currency,
        reason=payments.refund_reason(booking.status),
    )
