"""What a notification says: templates and the facts they need (sending is `adapters.mail`).

Each trigger event is turned into messages (`compose`), one per channel, each
rendered from a template in plain text and HTML with the facts a person needs:
what happened, the course and when it starts, the amount, the booking id, and
what to do next. Recipients come from `accounts`, never from the event alone
(only `user.registered` carries the address it was registered with).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime
from string import Template
from typing import Literal
from uuid import UUID

from shared.domain.events import (
    BookingCancelled,
    BookingConfirmed,
    BookingExpired,
    BookingRejected,
    CoursePublished,
    Event,
    PaymentRefunded,
    UserRegistered,
)
from shared.runtime.db import Row, Tx

Channel = Literal["email", "sms"]
TRIGGERS: tuple[type[Event], ...] = (
    UserRegistered, BookingConfirmed, BookingCancelled, BookingExpired, BookingRejected,
    PaymentRefunded, CoursePublished,
)


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class Message:
    channel: Channel
    user_id: UUID | None
    recipient: str
    template: str
    content: Rendered


@dataclass(frozen=True)
class _Template:
    subject: str
    text: str
    html: str

    def render(self, facts: dict[str, str]) -> Rendered:
        escaped = {k: html.escape(v) for k, v in facts.items()}
        body = Template(self.html).substitute(escaped)
        return Rendered(
            Template(self.subject).substitute(facts),
            Template(self.text).substitute(facts),
            f"<!doctype html><html><body style=\"font-family:sans-serif\">{body}"
            "<p style=\"color:#777\">Marketplace</p></body></html>",
        )


TEMPLATES: dict[str, _Template] = {
    "welcome": _Template(
        "Welcome to Marketplace, $name",
        "Hello $name,\n\nyour account $email is ready. Browse the courses and book a ticket:"
        " a ticket is held for you while you pay.\n\nMarketplace\n",
        "<h1>Welcome, $name</h1><p>Your account <b>$email</b> is ready.</p>"
        "<p>Browse the courses and book a ticket: it is held for you while you pay.</p>",
    ),
    "booking_confirmed": _Template(
        "Booking confirmed: $title",
        "Hello $name,\n\nyour booking $booking_id for \"$title\" is confirmed and your ticket"
        " is yours. We received $amount.\nThe course starts $starts_at.\n\nNothing more to"
        " do: just be there.\n\nMarketplace\n",
        "<h1>Booking confirmed</h1><p>Hello $name, your booking <code>$booking_id</code> for"
        " <b>$title</b> is confirmed and your ticket is yours. We received <b>$amount</b>.</p>"
        "<p>The course starts <b>$starts_at</b>.</p><p>Nothing more to do: just be there.</p>",
    ),
    "booking_cancelled": _Template(
        "Booking cancelled: $title",
        "Hello $name,\n\nyour booking $booking_id for \"$title\" (starts $starts_at) is"
        " cancelled: $why.\n$next\n\nMarketplace\n",
        "<h1>Booking cancelled</h1><p>Hello $name, your booking <code>$booking_id</code> for"
        " <b>$title</b> (starts $starts_at) is cancelled: $why.</p><p>$next</p>",
    ),
    "booking_expired": _Template(
        "Your hold ran out: $title",
        "Hello $name,\n\nwe held a ticket for \"$title\" (starts $starts_at) under booking"
        " $booking_id, but no payment arrived in time, so the ticket is back on sale and"
        " nothing was charged.\nBook again if you still want to come.\n\nMarketplace\n",
        "<h1>Your hold ran out</h1><p>Hello $name, we held a ticket for <b>$title</b>"
        " (starts $starts_at) under booking <code>$booking_id</code>, but no payment arrived"
        " in time, so the ticket is back on sale and nothing was charged.</p>"
        "<p>Book again if you still want to come.</p>",
    ),
    "booking_rejected": _Template(
        "We could not book \"$title\"",
        "Hello $name,\n\nyour booking $booking_id for \"$title\" could not be made: $why."
        " Nothing was charged.\n$next\n\nMarketplace\n",
        "<h1>No ticket this time</h1><p>Hello $name, your booking <code>$booking_id</code>"
        " for <b>$title</b> could not be made: $why. Nothing was charged.</p><p>$next</p>",
    ),
    "payment_refunded": _Template(
        "Refund of $amount: $title",
        "Hello $name,\n\nyour payment of $amount for booking $booking_id (\"$title\") arrived"
        " after the booking had $why, so we refunded it in full.\nIt reaches your card in a"
        " few days; book again if you still want to come.\n\nMarketplace\n",
        "<h1>Refund of $amount</h1><p>Hello $name, your payment for booking"
        " <code>$booking_id</code> (<b>$title</b>) arrived after the booking had $why, so we"
        " refunded it in full.</p><p>It reaches your card in a few days; book again if you"
        " still want to come.</p>",
    ),
    "course_published": _Template(
        "Your course is live: $title",
        "Hello $name,\n\n\"$title\" is published: $capacity tickets at $amount, starting"
        " $starts_at (course $course_id).\nShare it; you will see bookings as they come"
        " in.\n\nMarketplace\n",
        "<h1>Your course is live</h1><p>Hello $name, <b>$title</b> is published:"
        " $capacity tickets at $amount, starting $starts_at.</p><p>Course id"
        " <code>$course_id</code>. Share it; you will see bookings as they come in.</p>",
    ),
}
SMS_CONFIRMED = Template("Marketplace: booking $short_id for \"$title\" confirmed, $starts_at.")

_WHY = {
    "payment_failed": ("your payment was declined",
                       "The ticket is back on sale; book again with another card."),
    "user_cancelled": ("as you asked", "Nothing was charged."),
    "sold_out": ("the course is sold out", "Look for another date or course."),
    "course_inactive": ("the course is no longer offered", "Look for another course."),
    "course_not_found": ("the course does not exist", "Look for another course."),
    "booking_expired": ("expired", ""),
    "booking_cancelled": ("been cancelled", ""),
    "booking_not_awaiting_payment": ("closed", ""),
}


def money(cents: int | None, currency: str | None) -> str:
    return "" if cents is None else f"{cents / 100:.2f} {(currency or '').strip()}"


def when(moment: datetime | None) -> str:
    return "" if moment is None else moment.strftime("%a %d %b %Y, %H:%M %Z")


# --- composing ----------------------------------------------------------------------------


def _account(tx: Tx, user_id: UUID) -> Row | None:
    return tx.one("SELECT user_id, email, full_name, phone FROM accounts WHERE user_id = :u",
                  u=user_id)


_UNKNOWN_COURSE: Row = {"title": "your course", "starts_at": None}


def _course(tx: Tx, course_id: UUID | None) -> Row:
    if course_id is None:
        return _UNKNOWN_COURSE
    return tx.one("SELECT title, starts_at FROM courses WHERE course_id = :c",
                  c=course_id) or _UNKNOWN_COURSE


def _email(account: Row, template: str, facts: dict[str, str]) -> Message:
    facts = {"name": account["full_name"], "email": account["email"], **facts}
    return Message("email", account["user_id"], account["email"], template,
                   TEMPLATES[template].render(facts))


def compose(event: Event, tx: Tx) -> tuple[list[Message], str | None]:
    """The messages an event calls for, and why there are none when the recipient is unknown."""
    if isinstance(event, UserRegistered):
        registered = {"user_id": event.user_id, "email": event.email,
                      "full_name": event.full_name, "phone": event.phone}
        return [_email(registered, "welcome", {})], None
    if isinstance(event, CoursePublished):
        author = _account(tx, event.author_id)
        if author is None:
            return [], f"no account for author {event.author_id}"
        return [_email(author, "course_published", {
            "title": event.title, "course_id": str(event.course_id),
            "capacity": str(event.capacity), "amount": money(event.price_cents, event.currency),
            "starts_at": when(event.starts_at)})], None

    booking = tx.one("SELECT user_id, course_id, amount_cents, currency FROM bookings"
                     " WHERE booking_id = :b", b=event.booking_id)  # type: ignore[attr-defined]
    user_id = getattr(event, "user_id", None) or (booking or {}).get("user_id")
    course_id = getattr(event, "course_id", None) or (booking or {}).get("course_id")
    account = _account(tx, user_id) if user_id else None
    if account is None:
        return [], f"no account for user {user_id}"
    course = _course(tx, course_id)
    facts = {"booking_id": str(event.booking_id), "title": course["title"],  # type: ignore[attr-defined]
             "starts_at": when(course["starts_at"]),
             "amount": money(getattr(event, "amount_cents", None) or (booking or {}).get(
                 "amount_cents"), getattr(event, "currency", None) or (booking or {}).get(
                 "currency"))}
    if isinstance(event, BookingConfirmed):
        messages = [_email(account, "booking_confirmed", facts)]
        if account["phone"]:
            text = SMS_CONFIRMED.substitute(short_id=facts["booking_id"][:8],
                                            title=facts["title"][:60],
                                            starts_at=facts["starts_at"])
            messages.append(Message("sms", account["user_id"], account["phone"],
                                    "booking_confirmed_sms", Rendered("", text, "")))
        return messages, None
    if isinstance(event, BookingExpired):
        return [_email(account, "booking_expired", facts)], None
    reason = str(getattr(event, "reason", ""))
    why, next_step = _WHY.get(reason, (reason.replace("_", " "), ""))
    facts.update(why=why, next=next_step)
    template = {BookingCancelled: "booking_cancelled", BookingRejected: "booking_rejected",
                PaymentRefunded: "payment_refunded"}[type(event)]
    return [_email(account, template, facts)], None
