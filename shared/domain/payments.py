"""Payments: one per booking, moved only forward, and only by the provider's word for money.

A payment is opened when its booking awaits payment. The provider's
PaymentIntent behind it says whether money came: what the provider says
(a verified webhook, or its API read by the reconciler or by a cancel) is
applied by `apply_provider_word`, one code path for all of them, which moves
the payment forward only and emits `payment.succeeded` / `payment.failed` in
the same transaction.

    REQUIRES_PAYMENT -> PROCESSING -> SUCCEEDED | FAILED
    REQUIRES_PAYMENT | PROCESSING -> CANCELLED      (the intent is cancelled too)
    SUCCEEDED -> REFUNDING -> REFUNDED               (money for a closed booking)

Money the provider took is never ignored: a payment we had cancelled or seen
fail whose intent nevertheless succeeded (a client retried a declined card,
or the cancel crossed the payment) becomes SUCCEEDED, and `settle_booking`
then refunds it if its booking has closed.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from shared.domain.events import PaymentFailed, PaymentRefunded, PaymentSucceeded
from shared.runtime import tracing
from shared.runtime.db import Row, Tx

if TYPE_CHECKING:
    from shared.adapters.stripe_provider import Intent, Refund, StripeProvider
    from shared.runtime.reactions import UnitOfWork

log = logging.getLogger("marketplace.payments")
_NAMESPACE = uuid.UUID("0b5e4a4c-3f7e-4c51-8a61-2d7c9b1f4e22")
FREE_PROVIDER = "none"  # a free course's payment never reaches a provider
FREE_CHARGE_ID = "free"


class PaymentStatus(StrEnum):
    REQUIRES_PAYMENT = "REQUIRES_PAYMENT"
    PROCESSING = "PROCESSING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    REFUNDING = "REFUNDING"
    REFUNDED = "REFUNDED"


WAITING = frozenset({PaymentStatus.REQUIRES_PAYMENT, PaymentStatus.PROCESSING})
# The provider took the money (and may since have given it back).
RECEIVED = frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.REFUNDING, PaymentStatus.REFUNDED})


def payment_id_for(booking_id: uuid.UUID) -> uuid.UUID:
    """The payment's id follows from the booking's, so every path opens the same one."""
    return uuid.uuid5(_NAMESPACE, str(booking_id))


def open_payment_row(tx: Tx, booking_id: uuid.UUID) -> Row | None:
    """Make sure the booking's payment exists; returns it locked, or None without a booking.

    Whoever comes first opens it (the reaction to payment.requested, or the
    user paying right away). A booking that is no longer waiting gets a payment
    that is already cancelled, so it can never be charged.
    """
    booking = tx.one(
        "SELECT booking_id, user_id, status, amount_cents, currency FROM bookings"
        " WHERE booking_id = :b FOR SHARE", b=booking_id,
    )
    if booking is None or booking["amount_cents"] is None:
        return None
    # No conflict target: payment_id and booking_id are both unique, and two opens at
    # once must meet as a conflict on either, not as a unique violation on the other.
    tx.execute(
        "INSERT INTO payments (payment_id, booking_id, user_id, amount_cents, currency, status)"
        " VALUES (:p, :b, :u, :amount, :cur, :status) ON CONFLICT DO NOTHING",
        p=payment_id_for(booking_id), b=booking_id, u=booking["user_id"],
        amount=booking["amount_cents"], cur=booking["currency"],
        status="REQUIRES_PAYMENT" if booking["status"] == "AWAITING_PAYMENT" else "CANCELLED",
    )
    return tx.one("SELECT * FROM payments WHERE booking_id = :b FOR UPDATE", b=booking_id)


@dataclass(frozen=True)
class ProviderWord:
    """What the provider says about one of its intents, in our terms."""

    intent_id: str
    outcome: str  # succeeded, failed, canceled, or pending (nothing to apply yet)
    amount_cents: int
    currency: str
    payment_id: str | None  # from the intent's metadata: ours, if we made it
    charge_id: str | None = None
    decline_code: str | None = None


def word_of(intent: Intent) -> ProviderWord:
    """The provider's intent (`stripe_provider.Intent`) as a word to apply."""
    if intent.status == "succeeded":
        outcome = "succeeded"
    elif intent.status == "canceled":
        outcome = "canceled"
    elif intent.status == "requires_payment_method" and intent.decline_code:
        outcome = "failed"  # its last attempt was declined
    else:
        outcome = "pending"
    return ProviderWord(intent.id, outcome, intent.amount, intent.currency,
                        intent.metadata.get("payment_id"), intent.charge_id,
                        intent.decline_code)


def _ours(tx: Tx, word: ProviderWord) -> Row | None:
    """Our payment behind the intent, locked; None for an intent we did not make."""
    row = tx.one("SELECT * FROM payments WHERE provider_payment_id = :i FOR UPDATE",
                 i=word.intent_id)
    if row is not None or not word.payment_id:
        return row
    # Made by us, but its id never reached our row (a crash between the two): adopt it.
    try:
        payment_id = uuid.UUID(word.payment_id)
    except ValueError:
        return None
    return tx.one(
        "UPDATE payments SET provider = 'stripe', provider_payment_id = :i"
        " WHERE payment_id = :p AND provider_payment_id IS NULL RETURNING *",
        i=word.intent_id, p=payment_id)


def apply_provider_word(uow: UnitOfWork, word: ProviderWord) -> str:
    """Move our payment as far as the provider's word allows; returns what it did.

    The outcomes: `succeeded`, `failed`, `cancelled` (a change, and for the first
    two an event), `unchanged` (nothing new, or a word that would move it back),
    `pending`, `not_ours`, `mismatch` (our intent, but not the amount we asked).
    """
    tx = uow.tx
    row = _ours(tx, word)
    if row is None:
        log.warning("the provider spoke of intent %s, which is not ours", word.intent_id)
        return "not_ours"
    if word.amount_cents != row["amount_cents"] or word.currency.upper() != row["currency"]:
        log.error("intent %s is for %s %s, payment %s asked %s %s", word.intent_id,
                  word.amount_cents, word.currency, row["payment_id"], row["amount_cents"],
                  row["currency"])
        return "mismatch"
    status = PaymentStatus(row["status"])
    booking = tx.one("SELECT trace_context FROM bookings WHERE booking_id = :b",
                     b=row["booking_id"])
    if booking is not None:
        tracing.adopt(booking["trace_context"])  # the payment is part of its booking's trace
    if word.outcome == "succeeded":
        if status in RECEIVED:
            return "unchanged"
        tx.execute("UPDATE payments SET status = 'SUCCEEDED', charge_id = :c, decline_code = NULL,"
                   " updated_at = now() WHERE payment_id = :p",
                   c=word.charge_id, p=row["payment_id"])
        uow.emit(PaymentSucceeded(payment_id=row["payment_id"], booking_id=row["booking_id"],
                                  amount_cents=row["amount_cents"], currency=row["currency"],
                                  charge_id=word.charge_id or word.intent_id))
        return "succeeded"
    if word.outcome == "failed":
        if status not in WAITING:
            return "unchanged"
        _fail(uow, row, word.decline_code or "declined")
        return "failed"
    if word.outcome == "canceled":
        tx.execute("UPDATE payments SET intent_cancelled_at = coalesce(intent_cancelled_at, now())"
                   " WHERE payment_id = :p", p=row["payment_id"])
        if status in WAITING:  # cancelled at the provider, not by us: it can never be paid
            _fail(uow, row, "intent_canceled")
            return "failed"
        return "cancelled" if status is PaymentStatus.CANCELLED else "unchanged"
    return "pending"


def _fail(uow: UnitOfWork, row: Row, decline_code: str) -> None:
    uow.tx.execute("UPDATE payments SET status = 'FAILED', decline_code = :d, updated_at = now()"
                   " WHERE payment_id = :p", d=decline_code, p=row["payment_id"])
    uow.emit(PaymentFailed(payment_id=row["payment_id"], booking_id=row["booking_id"],
                           decline_code=decline_code))


def proof_of_payment(tx: Tx, event: PaymentSucceeded) -> str | None:
    """Why `event` is not backed by our payment row, or None when it is (the row locked)."""
    row = tx.one("SELECT * FROM payments WHERE payment_id = :p FOR UPDATE", p=event.payment_id)
    if row is None:
        return f"payment {event.payment_id} does not exist"
    if row["booking_id"] != event.booking_id:
        return f"payment {event.payment_id} belongs to another booking"
    if row["status"] not in RECEIVED:
        return f"payment {event.payment_id} is {row['status']}, not SUCCEEDED"
    if (row["amount_cents"], row["currency"]) != (event.amount_cents, event.currency):
        return (f"payment {event.payment_id} is {row['amount_cents']} {row['currency']},"
                f" the event says {event.amount_cents} {event.currency}")
    return None


REFUND_REASONS = {"EXPIRED": "booking_expired", "CANCELLED": "booking_cancelled"}


def refund_reason(booking_status: str) -> str:
    return REFUND_REASONS.get(booking_status, "booking_not_awaiting_payment")


REFUND_LEASE_SECONDS = 30  # longer than the provider client's timeout and retries


def claim_refund(tx: Tx, payment_id: uuid.UUID) -> Row | None:
    """The REFUNDING payment, if no one else is asking the provider about its refund now.

    The claim is a lease: an asker that crashed leaves it to run out, and the
    next one (a redelivery, the reconciler) asks again; the provider is asked
    for an existing refund first, so a refund it already made is found, not made again.
    """
    return tx.one(
        "UPDATE payments SET refund_lease_until = now() + make_interval(secs => :lease)"
        " WHERE payment_id = :p AND status = 'REFUNDING'"
        " AND (refund_lease_until IS NULL OR refund_lease_until < now()) RETURNING *",
        p=payment_id, lease=REFUND_LEASE_SECONDS)


def ask_refund(provider: StripeProvider, payment: Row) -> Refund:
    """Ask the provider for the claimed payment's money back; a free payment has none to give."""
    from shared.adapters.stripe_provider import Refund

    if payment["provider"] == FREE_PROVIDER or not payment["provider_payment_id"]:
        return Refund(FREE_CHARGE_ID, "succeeded")
    return provider.refund(payment["provider_payment_id"], str(payment["payment_id"]))


def record_refund(uow: UnitOfWork, payment: Row, refund: Refund, reason: str) -> None:
    """Note the provider's refund; REFUNDED (and `payment.refunded`) once it succeeded."""
    uow.tx.execute("UPDATE payments SET refund_id = :r, refund_lease_until = NULL"
                   " WHERE payment_id = :p", r=refund.id, p=payment["payment_id"])
    if refund.status != "succeeded":
        return
    done = uow.tx.execute("UPDATE payments SET status = 'REFUNDED', updated_at = now()"
                          " WHERE payment_id = :p AND status = 'REFUNDING'",
                          p=payment["payment_id"])
    if done:
        uow.outcome = "refunded"
        uow.emit(PaymentRefunded(payment_id=payment["payment_id"],
                                 booking_id=payment["booking_id"],
                                 amount_cents=payment["amount_cents"],
                                 currency=payment["currency"], reason=reason))  # type: ignore[arg-type]
