"""The typed events of the marketplace: one pydantic model per topic.

A model's class attributes `topic` and `key` say where it is written and which
field is the aggregate id (the Kafka record key and the CloudEvent subject).
`REGISTRY` is the one table that maps topic, CloudEvent type, model and key;
everything that encodes, decodes, routes or documents events reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

TYPE_PREFIX = "marketplace."
DEAD_LETTER_TOPIC = "marketplace.dead-letter"

Currency = str  # ISO 4217, validated where it enters (the API); events carry it as is.
Money = int  # integer minor units


class Event(BaseModel):
    """Base of every event; unknown fields from a newer producer are ignored."""

    # Built on first use, not at import: a function validates only the few types it handles.
    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    topic: ClassVar[str]
    key: ClassVar[str]

    @property
    def partition_key(self) -> str:
        return str(getattr(self, self.key))

    @classmethod
    def cloudevent_type(cls) -> str:
        return TYPE_PREFIX + cls.topic


class UserRegistered(Event):
    topic: ClassVar[str] = "user.registered"
    key: ClassVar[str] = "user_id"
    user_id: UUID
    email: str
    full_name: str
    phone: str | None = None
    role: Literal["user", "author", "admin"]
    registered_at: AwareDatetime


class UserUpdated(Event):
    topic: ClassVar[str] = "user.updated"
    key: ClassVar[str] = "user_id"
    user_id: UUID
    full_name: str
    phone: str | None = None
    bio: str | None = None
    avatar_url: str | None = None
    role: Literal["user", "author", "admin"]


class CoursePublished(Event):
    topic: ClassVar[str] = "course.published"
    key: ClassVar[str] = "course_id"
    course_id: UUID
    author_id: UUID
    title: str
    price_cents: Money = Field(ge=0)
    currency: Currency
    starts_at: AwareDatetime
    capacity: int = Field(ge=1)


class CourseDeactivated(Event):
    topic: ClassVar[str] = "course.deactivated"
    key: ClassVar[str] = "course_id"
    course_id: UUID
    author_id: UUID


class BookingRequested(Event):
    topic: ClassVar[str] = "booking.requested"
    key: ClassVar[str] = "booking_id"
    booking_id: UUID
    user_id: UUID
    course_id: UUID
    requested_at: AwareDatetime


class TicketReserved(Event):
    topic: ClassVar[str] = "ticket.reserved"
    key: ClassVar[str] = "booking_id"
    booking_id: UUID
    ticket_id: UUID
    course_id: UUID
    user_id: UUID
    amount_cents: Money = Field(ge=0)
    currency: Currency


UnavailableReason = Literal["sold_out", "course_inactive", "course_not_found"]


class TicketUnavailable(Event):
    topic: ClassVar[str] = "ticket.unavailable"
    key: ClassVar[str] = "booking_id"
    booking_id: UUID
    course_id: UUID
    user_id: UUID
    reason: UnavailableReason


class PaymentRequested(Event):
    topic: ClassVar[str] = "payment.requested"
    key: ClassVar[str] = "booking_id"
    payment_id: UUID
    booking_id: UUID
    user_id: UUID
    amount_cents: Money = Field(ge=0)
    currency: Currency
    hold_expires_at: AwareDatetime


class PaymentSucceeded(Event):
    topic: ClassVar[str] = "payment.succeeded"
    key: ClassVar[str] = "booking_id"
    payment_id: UUID
    booking_id: UUID
    amount_cents: Money = Field(ge=0)
    currency: Currency
    charge_id: str


class PaymentFailed(Event):
    topic: ClassVar[str] = "payment.failed"
    key: ClassVar[str] = "booking_id"
    payment_id: UUID
    booking_id: UUID
    decline_code: str


RefundReason = Literal["booking_expired", "booking_cancelled", "booking_not_awaiting_payment"]


class PaymentRefundRequested(Event):
    """Money arrived for a booking that had closed: the provider must give it back."""

    topic: ClassVar[str] = "payment.refund_requested"
    key: ClassVar[str] = "booking_id"
    payment_id: UUID
    booking_id: UUID
    amount_cents: Money = Field(ge=0)
    currency: Currency
    reason: RefundReason


class PaymentRefunded(Event):
    """The provider says the refund succeeded."""

    topic: ClassVar[str] = "payment.refunded"
    key: ClassVar[str] = "booking_id"
    payment_id: UUID
    booking_id: UUID
    amount_cents: Money = Field(ge=0)
    currency: Currency
    reason: RefundReason


class ReservationExpired(Event):
    topic: ClassVar[str] = "reservation.expired"
    key: ClassVar[str] = "booking_id"
    booking_id: UUID
    hold_expires_at: AwareDatetime
    detected_by: Literal["watcher", "sweeper"]


class BookingConfirmed(Event):
    topic: ClassVar[str] = "booking.confirmed"
    key: ClassVar[str] = "booking_id"
    booking_id: UUID
    user_id: UUID
    course_id: UUID
    ticket_id: UUID
    payment_id: UUID
    amount_cents: Money = Field(ge=0)
    currency: Currency


class BookingRejected(Event):
    topic: ClassVar[str] = "booking.rejected"
    key: ClassVar[str] = "booking_id"
    booking_id: UUID
    user_id: UUID
    course_id: UUID
    reason: UnavailableReason


class BookingCancelled(Event):
    topic: ClassVar[str] = "booking.cancelled"
    key: ClassVar[str] = "booking_id"
    booking_id: UUID
    user_id: UUID
    course_id: UUID
    ticket_id: UUID | None = None
    reason: Literal["user_cancelled", "payment_failed"]


class BookingExpired(Event):
    topic: ClassVar[str] = "booking.expired"
    key: ClassVar[str] = "booking_id"
    booking_id: UUID
    user_id: UUID
    course_id: UUID
    ticket_id: UUID | None = None
    hold_expired_at: AwareDatetime


@dataclass(frozen=True)
class EventSpec:
    """One row of the registry."""

    topic: str
    ce_type: str
    model: type[Event]
    key: str


def _spec(model: type[Event]) -> EventSpec:
    return EventSpec(model.topic, model.cloudevent_type(), model, model.key)


_MODELS: list[type[Event]] = [
    UserRegistered,
    UserUpdated,
    CoursePublished,
    CourseDeactivated,
    BookingRequested,
    TicketReserved,
    TicketUnavailable,
    PaymentRequested,
    PaymentSucceeded,
    PaymentFailed,
    PaymentRefundRequested,
    PaymentRefunded,
    ReservationExpired,
    BookingConfirmed,
    BookingRejected,
    BookingCancelled,
    BookingExpired,
]
REGISTRY: dict[str, EventSpec] = {spec.topic: spec for spec in map(_spec, _MODELS)}
BY_TYPE: dict[str, EventSpec] = {spec.ce_type: spec for spec in REGISTRY.values()}


def spec_for_type(ce_type: str) -> EventSpec | None:
    return BY_TYPE.get(ce_type)
