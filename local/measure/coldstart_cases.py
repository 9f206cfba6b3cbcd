"""What each function is asked first after a cold start, with the state that makes it real work.

A reaction gets the CloudEvent its KafkaSource would forward (binary mode,
built from a Kafka record as `local.knative.kafkasource` does) about a booking put
in the state the reaction expects, so the handler takes its ordinary path:
reserve_ticket reserves a ticket, send_notifications sends an email and a
text. A schedule (index_event among them) gets a PingSource's ping.
An HTTP function gets its most typical request; where it has authenticated
routes, one of those, so the first request verifies a JWT.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.domain.events import (
    BookingCancelled,
    BookingConfirmed,
    BookingRequested,
    Event,
    PaymentRefundRequested,
    PaymentSucceeded,
    UserRegistered,
)
from shared.domain.holds import deadline, expiry_event
from shared.domain.payments import payment_id_for
from shared.edge.tokens import issue_access
from shared.runtime.db import Database, Tx
from shared.runtime.envelope import Envelope, kafka_headers_to_http, to_kafka

PRICE, CURRENCY = 4900, "EUR"
# The cold stack's webhook signing secret (`local.measure.coldstart` sets
# STRIPE_WEBHOOK_SECRET to it).
WEBHOOK_SECRET = "whsec_coldstart_" + "c" * 24


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""
    ok: frozenset[int] = field(default=frozenset({200, 201, 202, 204}))


@dataclass
class World:
    """The accounts and the course every case uses; created once per stack."""

    user: uuid.UUID = field(default_factory=uuid.uuid4)
    author: uuid.UUID = field(default_factory=uuid.uuid4)
    admin: uuid.UUID = field(default_factory=uuid.uuid4)
    course: uuid.UUID = field(default_factory=uuid.uuid4)

    def create(self, db: Database) -> World:
        with db.transaction() as tx:
            for user_id, role in ((self.user, "user"), (self.author, "author"),
                                  (self.admin, "admin")):
                email = f"{role}-{user_id.hex[:8]}@example.com"
                tx.execute("INSERT INTO accounts (user_id, email, password_hash, full_name, phone,"
                           " role) VALUES (:u, :e, 'unused', 'Ada', '+44 20 7946 0000', :r)",
                           u=user_id, e=email, r=role)
                tx.execute("INSERT INTO profiles (user_id, email, full_name, phone, role,"
                           " registered_at) VALUES (:u, :e, 'Ada', '+44 20 7946 0000', :r, now())",
                           u=user_id, e=email, r=role)
            tx.execute("INSERT INTO courses (course_id, author_id, title, price_cents, currency,"
                       " starts_at, capacity) VALUES (:c, :a, 'Sagas in practice', :p, :cur,"
                       " now() + interval '30 days', 2000)",
                       c=self.course, a=self.author, p=PRICE, cur=CURRENCY)
            tx.execute("INSERT INTO tickets (ticket_id, course_id) SELECT gen_random_uuid(), :c"
                       " FROM generate_series(1, 2000)", c=self.course)
        return self

    def token(self, who: uuid.UUID, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_access(who, role, uuid.uuid4())}"}


def _booking(tx: Tx, w: World, status: str, ticket: bool, hold: datetime | None = None
             ) -> tuple[uuid.UUID, uuid.UUID | None]:
    """A booking of the world's course in `status`, holding a reserved ticket if asked."""
    booking = uuid.uuid4()
    ticket_id = None
    if ticket:
        ticket_id = tx.scalar(
            "UPDATE tickets SET status = 'RESERVED', booking_id = :b WHERE ticket_id ="
            " (SELECT ticket_id FROM tickets WHERE course_id = :c AND status = 'AVAILABLE'"
            " LIMIT 1) RETURNING ticket_id", b=booking, c=w.course)
    tx.execute("INSERT INTO bookings (booking_id, course_id, user_id, ticket_id, status,"
               " amount_cents, currency, hold_expires_at) VALUES (:b, :c, :u, :t, :s, :p, :cur,"
               " :h)", b=booking, c=w.course, u=w.user, t=ticket_id, s=status,
               p=PRICE if ticket else None, cur=CURRENCY if ticket else None, h=hold)
    return booking, ticket_id


def _payment(tx: Tx, w: World, booking: uuid.UUID, status: str, intent: str | None = None
             ) -> uuid.UUID:
    payment = payment_id_for(booking)
    tx.execute("INSERT INTO payments (payment_id, booking_id, user_id, amount_cents, currency,"
               " status, provider, provider_payment_id) VALUES (:p, :b, :u, :a, :c, :s, :prov, :i)",
               p=payment, b=booking, u=w.user, a=PRICE, c=CURRENCY, s=status,
               prov="stripe" if intent else None, i=intent)
    return payment


def _event(event: Event | Envelope[Any]) -> Request:
    """The POST a KafkaSource makes for the record the outbox would have produced."""
    envelope = event if isinstance(event, Envelope) else Envelope(
        data=event, source="/marketplace/coldstart")
    record = to_kafka(envelope)
    return Request("POST", "/", kafka_headers_to_http(record.headers), record.value)


def _ping() -> Request:
    return Request("POST", "/", {
        "ce-specversion": "1.0", "ce-id": str(uuid.uuid4()), "ce-type": "dev.knative.sources.ping",
        "ce-source": "/apis/v1/namespaces/marketplace/pingsources/coldstart",
        "Content-Type": "application/json"}, b"{}")


Case = Callable[[Tx, World], Request]


def reserve_ticket(tx: Tx, w: World) -> Request:
    booking, _ = _booking(tx, w, "PENDING", ticket=False)
    return _event(BookingRequested(booking_id=booking, user_id=w.user, course_id=w.course,
                                   requested_at=datetime.now(UTC)))


def settle_booking(tx: Tx, w: World) -> Request:
    booking, _ = _booking(tx, w, "AWAITING_PAYMENT", ticket=True,
                          hold=deadline(datetime.now(UTC), 600))
    payment = _payment(tx, w, booking, "SUCCEEDED")
    return _event(PaymentSucceeded(payment_id=payment, booking_id=booking, amount_cents=PRICE,
                                   currency=CURRENCY, charge_id="ch_coldstart"))


def expire_booking(tx: Tx, w: World) -> Request:
    hold = deadline(datetime.now(UTC) - timedelta(seconds=5), 0)
    booking, _ = _booking(tx, w, "AWAITING_PAYMENT", ticket=True, hold=hold)
    return _event(expiry_event(booking, hold, "sweeper", source="/marketplace/coldstart"))


def _confirmed(tx: Tx, w: World) -> BookingConfirmed:
    booking, ticket = _booking(tx, w, "CONFIRMED", ticket=True)
    assert ticket is not None
    payment = _payment(tx, w, booking, "SUCCEEDED")
    return BookingConfirmed(booking_id=booking, user_id=w.user, course_id=w.course,
                            ticket_id=ticket, payment_id=payment, amount_cents=PRICE,
                            currency=CURRENCY)


def send_notifications(tx: Tx, w: World) -> Request:
    return _event(_confirmed(tx, w))  # an email and a text: the user has a phone


def cancel_open_payment(tx: Tx, w: World) -> Request:
    booking, ticket = _booking(tx, w, "CANCELLED", ticket=True)
    _payment(tx, w, booking, "REQUIRES_PAYMENT")
    return _event(BookingCancelled(booking_id=booking, user_id=w.user, course_id=w.course,
                                   ticket_id=ticket, reason="user_cancelled"))


def stripe_webhook(tx: Tx, w: World) -> Request:
    """The provider's signed `payment_intent.succeeded` for a payment in progress."""
    booking, _ = _booking(tx, w, "AWAITING_PAYMENT", ticket=True,
                          hold=deadline(datetime.now(UTC), 600))
    intent = f"pi_coldstart_{booking.hex[:16]}"
    payment = _payment(tx, w, booking, "PROCESSING", intent)
    body = json.dumps({"id": f"evt_{uuid.uuid4().hex}", "type": "payment_intent.succeeded",
                       "data": {"object": {
                           "id": intent, "object": "payment_intent", "status": "succeeded",
                           "amount": PRICE, "currency": CURRENCY.lower(),
                           "latest_charge": "ch_coldstart",
                           "metadata": {"payment_id": str(payment), "booking_id": str(booking)}}},
                       }).encode()
    stamp = int(time.time())
    signature = hmac.new(WEBHOOK_SECRET.encode(), f"{stamp}.".encode() + body,
                         hashlib.sha256).hexdigest()
    return Request("POST", "/webhooks/stripe", {"Content-Type": "application/json",
                                                "Stripe-Signature": f"t={stamp},v1={signature}"},
                   body)


def refund_payment(tx: Tx, w: World) -> Request:
    """Money for a booking that expired, taken by the (embedded) provider: refund it."""
    from shared.adapters.stripe_provider import StripeProvider
    from shared.runtime.config import Settings

    booking, _ = _booking(tx, w, "EXPIRED", ticket=False)
    provider = StripeProvider(Settings.from_env({**os.environ, "MARKETPLACE_LOCAL": "1"}))
    intent = provider.create_intent(str(payment_id_for(booking)), str(booking), PRICE, CURRENCY)
    provider.confirm(intent.id, "pm_card_visa")
    payment = _payment(tx, w, booking, "REFUNDING", intent.id)
    return _event(PaymentRefundRequested(payment_id=payment, booking_id=booking,
                                         amount_cents=PRICE, currency=CURRENCY,
                                         reason="booking_expired"))


def create_profile(tx: Tx, w: World) -> Request:
    user = uuid.uuid4()
    return _event(UserRegistered(user_id=user, email=f"new-{user.hex[:8]}@example.com",
                                 full_name="Grace", role="user",
                                 registered_at=datetime.now(UTC)))




def record_dead_letter(tx: Tx, w: World) -> Request:
    """What the dead-letter topic's KafkaSource forwards: the event and Knative's extensions."""
    request = reserve_ticket(tx, w)
    return Request("POST", "/", {
        **request.headers, "ce-knativeerrordest": "http://127.0.0.1:1/reserve-ticket/",
        "ce-knativeerrorcode": "422", "ce-knativeerrordata": "PHA+Y29sZDwvcD4="}, request.body)


def _json(method: str, path: str, headers: dict[str, str], body: object | None = None
          ) -> Request:
    data = b"" if body is None else json.dumps(body).encode()
    return Request(method, path, {**headers, "Content-Type": "application/json"}, data)


CASES: dict[str, Case] = {
    "reserve_ticket": reserve_ticket, "settle_booking": settle_booking,
    "expire_booking": expire_booking,
    "cancel_open_payment": cancel_open_payment, "create_profile": create_profile,
    "send_notifications": send_notifications,
    "index_event": lambda tx, w: _ping(),  # a schedule: it reads its events from Kafka
    "record_dead_letter": record_dead_letter,
    "refund_payment": refund_payment,
    "sweep_expired_holds": lambda tx, w: _ping(),
    "relay_outbox": lambda tx, w: _ping(),
    "reconcile_payments": lambda tx, w: _ping(),
    # HTTP: the request a cold instance most likely gets first
    "accounts": lambda tx, w: _json("POST", "/auth/logout", w.token(w.user, "user")),
    "users": lambda tx, w: _json("GET", "/users/me", w.token(w.user, "user")),
    "my_notifications": lambda tx, w: _json("GET", "/users/me/notifications",
                                            w.token(w.user, "user")),
    "catalogue": lambda tx, w: _json("POST", "/courses", w.token(w.author, "author"), {
        "title": "Cold starts", "price_cents": 4900, "currency": "EUR",
        "starts_at": "2030-03-01T09:00:00Z", "capacity": 3}),
    "bookings": lambda tx, w: _json("POST", "/bookings", {
        **w.token(w.user, "user"), "Idempotency-Key": uuid.uuid4().hex},
        {"course_id": str(w.course)}),
    "analytics": lambda tx, w: _json("GET", "/analytics/summary", w.token(w.admin, "admin")),
    "dead_letters": lambda tx, w: _json("GET", "/admin/dead-letters",
                                        w.token(w.admin, "admin")),
    "health": lambda tx, w: _json("GET", "/healthz", {}),
    "api_docs": lambda tx, w: _json("GET", "/openapi.json", {}),
    "stripe_webhook": stripe_webhook,
}
