"""Payments: one per booking, moved only forward, and only by the provider's word for money.

A payment is opened when its booking awaits payment. The provider's
PaymentIntent behind it says whether money came: what the provider says
(a verified webhook, or its API read by the reconciler or by a cancel) is
applied by `apply_provider_word`, one code path for all of them, which moves
the payment forward only and emits `payment.succeeded` / `payment.failed` in
the same transaction. `PAYMENT` is the table of legal moves and who makes
each; every UPDATE of a payment's status is here, guarded by its from-states.

Money the provider took is never ignored: a payment we had cancelled or seen
fail whose intent nevertheless succeeded (a client retried a declined card,
or the cancel crossed the payment) becomes SUCCEEDED, and `settle_booking`
then refunds it if its booking has closed. So only REFUNDED is terminal:
SUCCEEDED, FAILED and CANCELLED are where a payment usually rests, but the
provider's word may still move it on.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from shared.domain import bookings
from shared.domain.bookings import BookingStatus
from shared.domain.events import PaymentFailed, PaymentRefunded, PaymentSucceeded, RefundReason
from shared.domain.machines import Machine, Move
from shared.runtime import tracing
from shared.runtime.db import Row, Tx

if TYPE_CHECKING:
    from shared.adapters.stripe_provider import Intent, Refund, StripeProvider
    from shared.runtime.unit_of_work import UnitOfWork

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


_S = PaymentStatus
_OPENED_BY = ("functions.reserve_ticket:reserve_ticket", "functions.bookings:pay")
# Where the provider's word is applied (`apply_provider_word`).
_PROVIDER_WORD = ("functions.stripe_webhook:receive_stripe_event",
                  "functions.reconcile_payments:reconcile",
                  "functions.cancel_open_payment:cancel_open_payment")
PAYMENT = Machine(
    name="payment",
    statuses=PaymentStatus,
    terminal=frozenset({_S.REFUNDED}),
    moves=(
        Move(None, _S.REQUIRES_PAYMENT, "booking.requested or POST /bookings/{id}/payment",
             _OPENED_BY),
        Move(None, _S.CANCELLED, "the same, for a booking no longer awaiting payment",
             _OPENED_BY),
        Move(_S.REQUIRES_PAYMENT, _S.PROCESSING, "POST /bookings/{id}/payment with a card token",
             ("functions.bookings:pay",)),
        Move(_S.REQUIRES_PAYMENT, _S.SUCCEEDED, "a free course", ("functions.bookings:pay",)),
        Move(_S.REQUIRES_PAYMENT, _S.SUCCEEDED, "the provider's word", _PROVIDER_WORD),
        Move(_S.PROCESSING, _S.SUCCEEDED, "the provider's word", _PROVIDER_WORD),
        Move(_S.REQUIRES_PAYMENT, _S.FAILED, "the provider's word", _PROVIDER_WORD),
        Move(_S.PROCESSING, _S.FAILED, "the provider's word", _PROVIDER_WORD),
        Move(_S.REQUIRES_PAYMENT, _S.CANCELLED, "the booking closed",
             ("functions.cancel_open_payment:cancel_open_payment",)),
        Move(_S.PROCESSING, _S.CANCELLED, "the booking closed",
             ("functions.cancel_open_payment:cancel_open_payment",)),
        Move(_S.CANCELLED, _S.SUCCEEDED, "the provider took the money anyway", _PROVIDER_WORD),
        Move(_S.FAILED, _S.SUCCEEDED, "the provider took the money anyway", _PROVIDER_WORD),
        Move(_S.SUCCEEDED, _S.REFUNDING, "its booking had closed",
             ("functions.settle_booking:settle_booking",)),
        Move(_S.REFUNDING, _S.REFUNDED, "the provider says the refund succeeded",
             ("functions.refund_payment:refund_payment", "functions.reconcile_payments:reconcile")),
    ),
)
TERMINAL = PAYMENT.terminal
WAITING = frozenset({_S.REQUIRES_PAYMENT, _S.PROCESSING})
# The provider took the money (and may since have given it back).
RECEIVED = frozenset({_S.SUCCEEDED, _S.REFUNDING, _S.REFUNDED})


@dataclass(frozen=True)
class Payment:
    """A payment as the functions read it."""

    payment_id: uuid.UUID
    booking_id: uuid.UUID
    user_id: uuid.UUID
    amount_cents: int
    currency: str
    status: PaymentStatus
    payment_method: str | None
    charge_id: str | None
    decline_code: str | None
    provider: str | None  # `stripe`, or FREE_PROVIDER
    provider_payment_id: str | None  # the provider's intent
    client_secret: str | None
    intent_cancelled_at: datetime | None
    refund_id: str | None
    refund_lease_until: datetime | None
    reconciled_at: datetime | None
    created_at: datetime
    updated_at: datetime


_FIELDS = tuple(f.name for f in fields(Payment))


def _payment(row: Row | None) -> Payment | None:
    if row is None:
        return None
    return Payment(**{**{name: row[name] for name in _FIELDS},
                      "status": PaymentStatus(row["status"])})


def payment_id_for(booking_id: uuid.UUID) -> uuid.UUID:
    """The payment's id follows from the booking's, so every path opens the same one."""
    return uuid.uuid5(_NAMESPACE, str(booking_id))


def lock(tx: Tx, payment_id: uuid.UUID) -> Payment | None:
    """The payment, locked until commit: what it says cannot change under a decision."""
    return _payment(tx.one("SELECT * FROM payments WHERE payment_id = :p FOR UPDATE",
                           p=payment_id))


def read(tx: Tx, payment_id: uuid.UUID) -> Payment | None:
    return _payment(tx.one("SELECT * FROM payments WHERE payment_id = :p", p=payment_id))


def open_payment_row(tx: Tx, booking_id: uuid.UUID) -> Payment | None:
    """Make sure the booking's payment exists; returns it locked, or None without a booking.

    Whoever comes first opens it (reserve_ticket, as it opens the hold, or the
    user paying before that committed). A booking that is no longer waiting gets a payment
    that is already cancelled, so it can never be charged.
    """
    booking = bookings.share(tx, booking_id)
    if booking is None or booking.amount_cents is None:
        return None
    waiting = booking.status is BookingStatus.AWAITING_PAYMENT
    # No conflict target: payment_id and booking_id are both unique, and two opens at
    # once must meet as a conflict on either, not as a unique violation on the other.
    tx.execute(
        "INSERT INTO payments (payment_id, booking_id, user_id, amount_cents, currency, status)"
        " VALUES (:p, :b, :u, :amount, :cur, :status) ON CONFLICT DO NOTHING",
        p=payment_id_for(booking_id), b=booking_id, u=booking.user_id,
        amount=booking.amount_cents, cur=booking.currency,
        status=PAYMENT.initial(_S.REQUIRES_PAYMENT if waiting else _S.CANCELLED),
    )
    return _payment(tx.one("SELECT * FROM payments WHERE booking_id = :b FOR UPDATE",
                           b=booking_id))


def store_intent(tx: Tx, payment: Payment, provider: str, intent_id: str,
                 client_secret: str | None) -> Payment:
    """Note the provider's intent behind the payment; a concurrent payer's stored first wins."""
    stored = _payment(tx.one(
        "UPDATE payments SET provider = :prov, provider_payment_id = :i,"
        " client_secret = :s, updated_at = now()"
        " WHERE payment_id = :p AND provider_payment_id IS NULL RETURNING *",
        prov=provider, i=intent_id, s=client_secret, p=payment.payment_id))
    current = stored or read(tx, payment.payment_id)
    assert current is not None
    return current


def succeed_free(tx: Tx, payment_id: uuid.UUID) -> bool:
    """REQUIRES_PAYMENT -> SUCCEEDED without a provider: nothing to take for a free course."""
    return bool(tx.execute(
        "UPDATE payments SET status = :to, provider = :none, charge_id = :free,"
        " updated_at = now() WHERE payment_id = :p AND status = ANY(:from)",
        none=FREE_PROVIDER, free=FREE_CHARGE_ID, p=payment_id,
        **PAYMENT.guard(_S.SUCCEEDED, {_S.REQUIRES_PAYMENT})))


def start_processing(tx: Tx, payment_id: uuid.UUID, method: str) -> bool:
    """REQUIRES_PAYMENT -> PROCESSING: the provider took the card (unless its word came first)."""
    return bool(tx.execute(
        "UPDATE payments SET status = :to, payment_method = :m, updated_at = now()"
        " WHERE payment_id = :p AND status = ANY(:from)",
        m=method, p=payment_id, **PAYMENT.guard(_S.PROCESSING)))


def close_open(tx: Tx, booking_id: uuid.UUID) -> Payment | None:
    """A waiting payment -> CANCELLED, its booking having closed; returns the payment as it is."""
    tx.execute(
        "UPDATE payments SET status = :to, updated_at = now()"
        " WHERE booking_id = :b AND status = ANY(:from)",
        b=booking_id, **PAYMENT.guard(_S.CANCELLED))
    return _payment(tx.one("SELECT * FROM payments WHERE booking_id = :b", b=booking_id))


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


def _ours(tx: Tx, word: ProviderWord) -> Payment | None:
    """Our payment behind the intent, locked; None for an intent we did not make."""
    row = tx.one("SELECT * FROM payments WHERE provider_payment_id = :i FOR UPDATE",
                 i=word.intent_id)
    if row is not None or not word.payment_id:
        return _payment(row)
    # Made by us, but its id never reached our row (a crash between the two): adopt it.
    try:
        payment_id = uuid.UUID(word.payment_id)
    except ValueError:
        return None
    return _payment(tx.one(
        "UPDATE payments SET provider = 'stripe', provider_payment_id = :i"
        " WHERE payment_id = :p AND provider_payment_id IS NULL RETURNING *",
        i=word.intent_id, p=payment_id))


def apply_provider_word(uow: UnitOfWork, word: ProviderWord) -> str:
    """Move our payment as far as the provider's word allows; returns what it did.

    The outcomes: `succeeded`, `failed`, `cancelled` (a change, and for the first
    two an event), `unchanged` (nothing new, or a word that would move it back),
    `pending`, `not_ours`, `mismatch` (our intent, but not the amount we asked).
    """
    tx = uow.tx
    payment = _ours(tx, word)
    if payment is None:
        log.warning("the provider spoke of intent %s, which is not ours", word.intent_id)
        return "not_ours"
    if word.amount_cents != payment.amount_cents or word.currency.upper() != payment.currency:
        log.error("intent %s is for %s %s, payment %s asked %s %s", word.intent_id,
                  word.amount_cents, word.currency, payment.payment_id, payment.amount_cents,
                  payment.currency)
        return "mismatch"
    status = payment.status
    booking = tx.one("SELECT trace_context FROM bookings WHERE booking_id = :b",
                     b=payment.booking_id)
    if booking is not None:
        tracing.adopt(booking["trace_context"])  # the payment is part of its booking's trace
    if word.outcome == "succeeded":
        if status in RECEIVED or not _succeed(tx, payment, word.charge_id):
            return "unchanged"
        uow.emit(PaymentSucceeded(payment_id=payment.payment_id, booking_id=payment.booking_id,
                                  amount_cents=payment.amount_cents, currency=payment.currency,
                                  charge_id=word.charge_id or word.intent_id))
        return "succeeded"
    if word.outcome == "failed":
        if status not in WAITING:
            return "unchanged"
        _fail(uow, payment, word.decline_code or "declined")
        return "failed"
    if word.outcome == "canceled":
        tx.execute("UPDATE payments SET intent_cancelled_at = coalesce(intent_cancelled_at, now())"
                   " WHERE payment_id = :p", p=payment.payment_id)
        if status in WAITING:  # cancelled at the provider, not by us: it can never be paid
            _fail(uow, payment, "intent_canceled")
            return "failed"
        return "cancelled" if status is _S.CANCELLED else "unchanged"
    return "pending"


def _succeed(tx: Tx, payment: Payment, charge_id: str | None) -> bool:
    """-> SUCCEEDED: the provider took the money, whatever we had made of the payment."""
    return bool(tx.execute(
        "UPDATE payments SET status = :to, charge_id = :c, decline_code = NULL,"
        " updated_at = now() WHERE payment_id = :p AND status = ANY(:from)",
        c=charge_id, p=payment.payment_id, **PAYMENT.guard(_S.SUCCEEDED)))


def _fail(uow: UnitOfWork, payment: Payment, decline_code: str) -> None:
    """A waiting payment -> FAILED, announced with `payment.failed`."""
    moved = uow.tx.execute(
        "UPDATE payments SET status = :to, decline_code = :d, updated_at = now()"
        " WHERE payment_id = :p AND status = ANY(:from)",
        d=decline_code, p=payment.payment_id, **PAYMENT.guard(_S.FAILED))
    if moved:
        uow.emit(PaymentFailed(payment_id=payment.payment_id, booking_id=payment.booking_id,
                               decline_code=decline_code))


def proof_of_payment(tx: Tx, event: PaymentSucceeded) -> str | None:
    """Why `event` is not backed by our payment row, or None when it is (the row locked)."""
    payment = lock(tx, event.payment_id)
    if payment is None:
        return f"payment {event.payment_id} does not exist"
    if payment.booking_id != event.booking_id:
        return f"payment {event.payment_id} belongs to another booking"
    if payment.status not in RECEIVED:
        return f"payment {event.payment_id} is {payment.status}, not SUCCEEDED"
    if (payment.amount_cents, payment.currency) != (event.amount_cents, event.currency):
        return (f"payment {event.payment_id} is {payment.amount_cents} {payment.currency},"
                f" the event says {event.amount_cents} {event.currency}")
    return None


REFUND_REASONS: dict[str, RefundReason] = {BookingStatus.EXPIRED: "booking_expired",
                                           BookingStatus.CANCELLED: "booking_cancelled"}


def refund_reason(booking_status: str) -> RefundReason:
    return REFUND_REASONS.get(booking_status, "booking_not_awaiting_payment")


def start_refund(tx: Tx, payment_id: uuid.UUID) -> bool:
    """SUCCEEDED -> REFUNDING: money came for a booking that had closed."""
    return bool(tx.execute(
        "UPDATE payments SET status = :to, updated_at = now()"
        " WHERE payment_id = :p AND status = ANY(:from)",
        p=payment_id, **PAYMENT.guard(_S.REFUNDING)))


REFUND_LEASE_SECONDS = 30  # longer than the provider client's timeout and retries


def claim_refund(tx: Tx, payment_id: uuid.UUID) -> Payment | None:
    """The REFUNDING payment, if no one else is asking the provider about its refund now.

    The claim is a lease: an asker that crashed leaves it to run out, and the
    next one (a redelivery, the reconciler) asks again; the provider is asked
    for an existing refund first, so a refund it already made is found, not made again.
    """
    return _payment(tx.one(
        "UPDATE payments SET refund_lease_until = now() + make_interval(secs => :lease)"
        " WHERE payment_id = :p AND status = 'REFUNDING'"
        " AND (refund_lease_until IS NULL OR refund_lease_until < now()) RETURNING *",
        p=payment_id, lease=REFUND_LEASE_SECONDS))


def ask_refund(provider: StripeProvider, payment: Payment) -> Refund:
    """Ask the provider for the claimed payment's money back; a free payment has none to give."""
    from shared.adapters.stripe_provider import Refund

    if payment.provider == FREE_PROVIDER or not payment.provider_payment_id:
        return Refund(FREE_CHARGE_ID, "succeeded")
    return provider.refund(payment.provider_payment_id, str(payment.payment_id))


def record_refund(uow: UnitOfWork, payment: Payment, refund: Refund,
                  reason: RefundReason) -> None:
    """Note the provider's refund; REFUNDED (and `payment.refunded`) once it succeeded."""
    uow.tx.execute("UPDATE payments SET refund_id = :r, refund_lease_until = NULL"
                   " WHERE payment_id = :p", r=refund.id, p=payment.payment_id)
    if refund.status != "succeeded":
        return
    done = uow.tx.execute(
        "UPDATE payments SET status = :to, updated_at = now()"
        " WHERE payment_id = :p AND status = ANY(:from)",
        p=payment.payment_id, **PAYMENT.guard(_S.REFUNDED))
    if done:
        uow.outcome = "refunded"
        uow.emit(PaymentRefunded(payment_id=payment.payment_id, booking_id=payment.booking_id,
                                 amount_cents=payment.amount_cents, currency=payment.currency,
                                 reason=reason))


def due_for_reconciling(tx: Tx, after_seconds: float, limit: int) -> list[Payment]:
    """Payments still waiting for the provider's word since `after_seconds`, claimed for asking.

    SKIP LOCKED: a payment being moved right now is asked about next time.
    """
    rows = tx.all(
        "UPDATE payments SET reconciled_at = now() WHERE payment_id IN ("
        " SELECT payment_id FROM payments"
        " WHERE (status IN ('PROCESSING', 'REFUNDING')"
        "        OR (status = 'REQUIRES_PAYMENT' AND provider_payment_id IS NOT NULL)"
        "        OR (status = 'CANCELLED' AND provider_payment_id IS NOT NULL"
        "            AND intent_cancelled_at IS NULL))"
        "   AND coalesce(reconciled_at, updated_at)"
        "       < now() - make_interval(secs => :after)"
        " ORDER BY updated_at LIMIT :n FOR UPDATE SKIP LOCKED) RETURNING *",
        after=after_seconds, n=limit)
    return [p for p in map(_payment, rows) if p is not None]
