"""One load session: a user books once and plays one behaviour; what it saw and expected.

Used by `local.measure.load`, which schedules sessions; see there for the behaviours.
A session never raises: whatever goes wrong ends up in its record (`error`),
so one broken booking cannot hide the others.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from local.apiclient import (
    FINAL,
    ApiClient,
    ApiError,
    FailedAttempt,
    NotInTime,
    RequestFailed,
    SignedIn,
)

# behaviour -> (final status, reason) it must end in
BEHAVIOURS: dict[str, tuple[str, str | None]] = {
    "pay": ("CONFIRMED", None),
    "decline": ("CANCELLED", "payment_failed"),
    "cancel": ("CANCELLED", "user_cancelled"),
    "expire": ("EXPIRED", "hold_expired"),
    "late_pay": ("EXPIRED", "hold_expired"),
    "retry_post": ("CONFIRMED", None),
}
CARDS = {"pay": "pm_card_visa", "retry_post": "pm_card_visa", "decline": "pm_card_chargeDeclined",
         "late_pay": "pm_card_visa"}


class Clock:
    """Seconds since the epoch, read from a monotonic clock (no jumps within a run)."""

    def __init__(self) -> None:
        self.wall0 = time.time()
        self.mono0 = time.monotonic()

    def at(self, monotonic: float) -> float:
        return self.wall0 + (monotonic - self.mono0)

    def now(self) -> float:
        return self.at(time.monotonic())

    def monotonic_of(self, epoch: float) -> float:
        return self.mono0 + (epoch - self.wall0)


@dataclass(frozen=True)
class SessionSettings:
    """How long a session waits for each step before it calls the booking stuck."""

    step_timeout: float = 60.0  # request -> held, pay -> final
    expiry_grace: float = 60.0  # after hold_expires_at, for EXPIRED (sweeper period + slack)
    late_by: float = 0.5  # late_pay pays this long after hold_expires_at


@dataclass
class SessionRecord:
    index: int
    behaviour: str
    user_id: str
    course_id: str
    idempotency_key: str
    scheduled: float  # when the open loop meant it to start (epoch seconds)
    requested: float = 0.0  # POST /bookings sent
    booking_id: str | None = None
    accepted: float | None = None  # 202 received
    held: float | None = None  # AWAITING_PAYMENT seen
    hold_expires_at: float | None = None
    pay_sent: float | None = None
    paid: float | None = None  # the payment's answer received (202, or 409 for late_pay)
    pay_status: int | None = None
    final: float | None = None  # a final state seen
    final_status: str | None = None
    final_reason: str | None = None
    expected_status: str = ""
    expected_reason: str | None = None
    second_booking_id: str | None = None  # retry_post: the second POST's answer
    too_late: bool = False  # its payment or cancel came after the hold ran out (a slow system)
    error: str | None = None
    failures: list[FailedAttempt] = field(default_factory=list)
    cpu_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (self.error is None and self.final_status == self.expected_status
                and self.final_reason == self.expected_reason)

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "failures"}
        data["failures"] = [f.to_json() for f in self.failures]
        data["ok"] = self.ok
        return data


class SessionError(RuntimeError):
    pass


class _Session:
    def __init__(self, user: SignedIn, settings: SessionSettings, clock: Clock,
                 record: SessionRecord) -> None:
        self.user, self.settings, self.clock, self.record = user, settings, clock, record

    def post_booking(self) -> str:
        rec = self.record
        booking_id = self.user.book(rec.course_id, rec.idempotency_key)
        rec.booking_id = booking_id
        if rec.behaviour == "retry_post":
            try:
                rec.second_booking_id = self.user.book(rec.course_id, rec.idempotency_key)
            except ApiError as exc:
                raise SessionError(f"the retried POST answered {exc.status} {exc.body}") from exc
            if rec.second_booking_id != booking_id:
                raise SessionError(f"the retried POST answered {rec.second_booking_id}")
        rec.accepted = self.clock.now()
        return booking_id

    def wait(self, status: str, deadline: float) -> dict[str, Any]:
        """Until `status` or a final state; SessionError at the (monotonic) deadline."""
        rec = self.record
        assert rec.booking_id is not None
        try:
            booking = self.user.wait_for_status(rec.booking_id, status,
                                                timeout=deadline - time.monotonic())
        except NotInTime as exc:
            raise SessionError(f"not {status} in time; last seen"
                               f" {exc.last['status'] if exc.last else None}") from exc
        if booking["status"] in FINAL:
            rec.final, rec.final_status = self.clock.now(), booking["status"]
            rec.final_reason = booking.get("reason")
        return booking

    def pay(self, card: str) -> int:
        rec = self.record
        assert rec.booking_id is not None
        rec.pay_sent = self.clock.now()
        before = len(rec.failures)
        try:
            self.user.pay(rec.booking_id, card)
            status, body = 202, None
        except ApiError as exc:
            status, body = exc.status, exc.body
        rec.paid, rec.pay_status = self.clock.now(), status
        # A 409 after a lost answer may be our own first attempt having gone through.
        retried = len(rec.failures) > before
        if status != 202 and rec.behaviour != "late_pay" and not (
                status == 409 and (retried or self._too_late(rec.paid))):
            raise SessionError(f"payment answered {status}: {body}")
        return status

    def cancel(self) -> None:
        rec = self.record
        assert rec.booking_id is not None
        before = len(rec.failures)
        try:
            self.user.cancel(rec.booking_id)
        except ApiError as exc:
            if not (exc.status == 409 and (
                    len(rec.failures) > before or self._too_late(self.clock.now()))):
                raise SessionError(f"cancel answered {exc.status}: {exc.body}") from exc

    def _too_late(self, answered: float) -> bool:
        """Refused because the hold ran out before the request got through: then the
        booking must end EXPIRED, as if the user had paid late. A refusal answered
        before the deadline stays an error."""
        rec = self.record
        if rec.hold_expires_at is None or answered < rec.hold_expires_at:
            return False
        rec.too_late = True
        rec.expected_status, rec.expected_reason = "EXPIRED", "hold_expired"
        return True

    def play(self) -> None:
        rec, settings = self.record, self.settings
        rec.requested = self.clock.now()
        self.post_booking()
        held = self.wait("AWAITING_PAYMENT", time.monotonic() + settings.step_timeout)
        if held["status"] != "AWAITING_PAYMENT":
            raise SessionError(f"ended {held['status']} ({held.get('reason')}) before the hold")
        rec.held = self.clock.now()
        rec.hold_expires_at = datetime.fromisoformat(held["hold_expires_at"]).timestamp()
        expiry_deadline = (self.clock.monotonic_of(rec.hold_expires_at)
                           + settings.expiry_grace)
        behaviour = rec.behaviour
        if behaviour == "expire":
            self.wait("EXPIRED", expiry_deadline)
            return
        if behaviour == "cancel":
            self.cancel()
            self.wait(rec.expected_status, max(time.monotonic() + settings.step_timeout,
                                               expiry_deadline))
            return
        if behaviour == "late_pay":
            # The user's think time is the behaviour itself, not a wait for a condition.
            time.sleep(max(0.0, self.clock.monotonic_of(rec.hold_expires_at)
                           + settings.late_by - time.monotonic()))
            if self.pay(CARDS[behaviour]) != 409:
                raise SessionError(f"paying after the hold answered {rec.pay_status}, not 409")
            self.wait("EXPIRED", expiry_deadline)
            return
        self.pay(CARDS[behaviour])
        self.wait(rec.expected_status, max(time.monotonic() + settings.step_timeout,
                                           expiry_deadline))


def play(client: ApiClient, settings: SessionSettings, clock: Clock, index: int,
         behaviour: str, user: SignedIn, course_id: str, scheduled: float) -> SessionRecord:
    """Run one session to its end; never raises (the record says what went wrong)."""
    cpu = time.thread_time()
    expected = BEHAVIOURS[behaviour]
    record = SessionRecord(index, behaviour, user.user_id, course_id, uuid.uuid4().hex,
                           scheduled, expected_status=expected[0], expected_reason=expected[1])
    try:
        _Session(user.via(client, record.failures), settings, clock, record).play()
    except (SessionError, RequestFailed, ApiError) as exc:
        record.error = str(exc)
    except Exception as exc:  # a malformed answer: recorded, not raised
        record.error = f"{type(exc).__name__}: {exc}"
    record.cpu_seconds = time.thread_time() - cpu
    return record

