"""send_notifications against real PostgreSQL and moto's SES and SNS (the AWS endpoint).

Every trigger: one stored notification per channel and one message at the
endpoint, with the right recipient and facts; three deliveries send once; a
throttled provider is retried until it takes the message (a fake SES client
that fails first, then hands over to moto); a refused address is FAILED and
never tried again (an address SES itself refuses: no domain, as a legacy
import could have left in `accounts`, and a fake that answers MessageRejected).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError

from shared.adapters import aws, mail
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
from shared.edge import tokens
from shared.runtime.bootstrap import Runtime
from shared.runtime.config import settings
from shared.runtime.envelope import Envelope
from tests.helpers.events import AUTHOR, BOOKING, COURSE, USER, app, post
from tests.helpers.rows import row, seed_booking, seed_course

TARGET = "send_notifications"
TICKET = uuid.UUID("d0000000-0000-4000-8000-000000000001")
PAYMENT = uuid.UUID("e0000000-0000-4000-8000-000000000001")


@pytest.fixture
def aws_env(rt: Runtime, aws_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_url)
    settings.cache_clear()
    aws.client.cache_clear()
    yield aws_url
    aws.client.cache_clear()


def cloudevent(event: Event, event_id: str | None = None) -> dict[str, Any]:
    envelope = Envelope(data=event, source="/marketplace/functions/test")
    return {"specversion": "1.0", "id": event_id or envelope.id, "source": envelope.source,
            "type": envelope.type, "subject": envelope.subject,
            "time": envelope.time.isoformat(), "datacontenttype": "application/json",
            "data": event.model_dump(mode="json")}


def seed_account(rt: Runtime, user_id: uuid.UUID, email: str, phone: str | None = None,
                 role: str = "user") -> None:
    with rt.db.transaction() as tx:
        tx.execute("INSERT INTO accounts (user_id, email, password_hash, full_name, phone, role)"
                   " VALUES (:u, :e, 'x', 'Ada Lovelace', :p, :r)",
                   u=user_id, e=email, p=phone, r=role)


def unique_email() -> str:
    return f"ada-{uuid.uuid4().hex[:10]}@example.com"


def sent_mail(aws_url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = requests.get(
        f"{aws_url}/moto-api/data.json", timeout=10).json()["ses"]["Message"]
    return messages


def sent_sms(aws_url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = requests.get(
        f"{aws_url}/moto-api/data.json", timeout=10).json()["sns"]["SMS"]
    return messages


def stored(rt: Runtime, event_id: str) -> list[dict[str, Any]]:
    with rt.db.transaction() as tx:
        return tx.all("SELECT * FROM notifications WHERE event_id = :e ORDER BY channel",
                      e=event_id)


def booked(rt: Runtime, email: str, phone: str | None = None) -> None:
    seed_account(rt, USER, email, phone)
    seed_course(rt)
    seed_booking(rt)
    with rt.db.transaction() as tx:
        tx.execute("UPDATE bookings SET amount_cents = 4900, currency = 'EUR'"
                   " WHERE booking_id = :b", b=BOOKING)


NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
TRIGGERS: dict[str, tuple[Event, str, list[str]]] = {
    "booking.confirmed": (BookingConfirmed(
        booking_id=BOOKING, user_id=USER, course_id=COURSE, ticket_id=TICKET,
        payment_id=PAYMENT, amount_cents=4900, currency="EUR"),
        "Booking confirmed: Event sourcing", ["49.00 EUR", str(BOOKING), "be there"]),
    "booking.cancelled": (BookingCancelled(
        booking_id=BOOKING, user_id=USER, course_id=COURSE, ticket_id=TICKET,
        reason="payment_failed"),
        "Booking cancelled: Event sourcing", ["declined", str(BOOKING), "another card"]),
    "booking.expired": (BookingExpired(
        booking_id=BOOKING, user_id=USER, course_id=COURSE, ticket_id=TICKET,
        hold_expired_at=NOW), "Your hold ran out: Event sourcing", [str(BOOKING), "Book again"]),
    "booking.rejected": (BookingRejected(
        booking_id=BOOKING, user_id=USER, course_id=COURSE, reason="sold_out"),
        'We could not book "Event sourcing"', ["sold out", str(BOOKING)]),
    "payment.refunded": (PaymentRefunded(
        payment_id=PAYMENT, booking_id=BOOKING, amount_cents=4900, currency="EUR",
        reason="booking_expired"), "Refund of 49.00 EUR: Event sourcing",
        [str(BOOKING), "refunded it in full"]),
}


@pytest.mark.parametrize("topic", sorted(TRIGGERS))
def test_a_booking_event_sends_one_email_to_the_booking_user(
        rt: Runtime, aws_env: str, topic: str) -> None:
    email = unique_email()
    booked(rt, email)
    event, subject, facts = TRIGGERS[topic]
    ce = cloudevent(event)
    assert post(TARGET, ce).status_code == 200

    [note] = stored(rt, ce["id"])
    assert (note["channel"], note["status"], note["recipient"]) == ("email", "SENT", email)
    assert note["user_id"] == USER and note["error"] is None and note["attempts"] == 1
    assert note["template"] == topic.replace(".", "_")
    [mail] = [m for m in sent_mail(aws_env) if m["id"] == note["provider_message_id"]]
    assert mail["destinations"]["ToAddresses"] == [email]
    assert mail["source"] == settings().mail_from
    assert mail["subject"] == subject
    for fact in facts:
        assert fact in mail["body"], fact


def test_welcome_email_on_registration(rt: Runtime, aws_env: str) -> None:
    email, user_id = unique_email(), uuid.uuid4()
    ce = cloudevent(UserRegistered(user_id=user_id, email=email, full_name="Grace Hopper",
                                   role="user", registered_at=NOW))
    assert post(TARGET, ce).status_code == 200
    [note] = stored(rt, ce["id"])
    assert (note["template"], note["status"], note["recipient"]) == ("welcome", "SENT", email)
    [mail] = [m for m in sent_mail(aws_env) if m["id"] == note["provider_message_id"]]
    assert mail["destinations"]["ToAddresses"] == [email]
    assert "Grace Hopper" in mail["subject"] and email in mail["body"]


def test_the_author_hears_that_their_course_is_published(rt: Runtime, aws_env: str) -> None:
    email = unique_email()
    seed_account(rt, AUTHOR, email, role="author")
    ce = cloudevent(CoursePublished(
        course_id=COURSE, author_id=AUTHOR, title="Sagas <in> practice", price_cents=4900,
        currency="EUR", starts_at=datetime(2027, 3, 1, 9, tzinfo=UTC), capacity=3))
    assert post(TARGET, ce).status_code == 200
    [note] = stored(rt, ce["id"])
    assert (note["template"], note["recipient"], note["user_id"]) == (
        "course_published", email, AUTHOR)
    [mail] = [m for m in sent_mail(aws_env) if m["id"] == note["provider_message_id"]]
    assert mail["subject"] == "Your course is live: Sagas <in> practice"
    assert "Sagas &lt;in&gt; practice" in mail["body"]  # the HTML part, escaped
    assert "3 tickets at 49.00 EUR" in mail["body"] and "Mon 01 Mar 2027" in mail["body"]


def test_a_confirmed_booking_also_texts_a_user_with_a_phone(rt: Runtime, aws_env: str) -> None:
    phone = f"+1555{uuid.uuid4().int % 10**7:07d}"
    booked(rt, unique_email(), phone)
    ce = cloudevent(TRIGGERS["booking.confirmed"][0])
    assert post(TARGET, ce).status_code == 200
    email, sms = stored(rt, ce["id"])
    assert (email["channel"], sms["channel"]) == ("email", "sms")
    assert (sms["status"], sms["recipient"]) == ("SENT", phone)
    [text] = [m for m in sent_sms(aws_env) if m["message_id"] == sms["provider_message_id"]]
    assert text["phone_number"] == phone
    assert str(BOOKING)[:8] in text["message"] and "confirmed" in text["message"]


def test_three_deliveries_send_one_message_per_channel(rt: Runtime, aws_env: str) -> None:
    phone = f"+1555{uuid.uuid4().int % 10**7:07d}"
    email = unique_email()
    booked(rt, email, phone)
    ce = cloudevent(TRIGGERS["booking.confirmed"][0])
    for mode in ("binary", "structured", "binary"):
        assert post(TARGET, ce, mode).status_code == 200
    assert len(stored(rt, ce["id"])) == 2
    assert len([m for m in sent_mail(aws_env) if m["destinations"]["ToAddresses"] == [email]]
               ) == 1
    assert len([m for m in sent_sms(aws_env) if m["phone_number"] == phone]) == 1


class FlakySes:
    """SES that answers with `errors` first and then hands over to the real (moto) client."""

    def __init__(self, real: Any, *errors: tuple[str, int]) -> None:
        self.real = real
        self.errors = list(errors)
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def send_email(self, **kwargs: Any) -> Any:
        self.calls += 1
        if self.errors:
            code, status = self.errors.pop(0)
            raise ClientError({"Error": {"Code": code, "Message": f"fake {code}"},
                               "ResponseMetadata": {"HTTPStatusCode": status}}, "SendEmail")
        return self.real.send_email(**kwargs)


def test_a_throttled_provider_is_retried_and_then_succeeds(
        rt: Runtime, aws_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    email = unique_email()
    booked(rt, email)
    flaky = FlakySes(aws.client("ses"), ("Throttling", 400), ("ServiceUnavailable", 503))
    monkeypatch.setattr(mail, "ses_client", lambda: flaky)
    ce = cloudevent(TRIGGERS["booking.confirmed"][0])

    first = post(TARGET, ce)
    assert first.status_code == 503  # KafkaSource delivers it again
    [note] = stored(rt, ce["id"])
    assert note["status"] == "RETRYING" and "Throttling" in note["error"]
    assert post(TARGET, ce).status_code == 503
    assert post(TARGET, ce).status_code == 200
    [note] = stored(rt, ce["id"])
    assert (note["status"], note["attempts"], note["error"]) == ("SENT", 3, None)
    assert post(TARGET, ce).status_code == 200  # and once more: nothing new
    assert flaky.calls == 3
    assert [m["id"] for m in sent_mail(aws_env) if m["destinations"]["ToAddresses"] == [email]
            ] == [note["provider_message_id"]]


def test_an_address_ses_refuses_is_recorded_as_failed_and_not_retried(
        rt: Runtime, aws_env: str) -> None:
    booked(rt, "ada-without-a-domain")  # SES: InvalidParameterValue, "Missing domain"
    ce = cloudevent(TRIGGERS["booking.confirmed"][0])
    assert post(TARGET, ce).status_code == 200  # handled: retrying cannot help
    [note] = stored(rt, ce["id"])
    assert note["status"] == "FAILED" and "InvalidParameterValue" in note["error"]
    assert note["provider_message_id"] is None
    assert post(TARGET, ce).status_code == 200
    assert row(rt, "SELECT attempts FROM notifications WHERE event_id = :e",
               e=ce["id"]) == {"attempts": 1}


def test_message_rejected_is_permanent(rt: Runtime, aws_env: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    booked(rt, unique_email())
    flaky = FlakySes(aws.client("ses"), ("MessageRejected", 400))
    monkeypatch.setattr(mail, "ses_client", lambda: flaky)
    ce = cloudevent(TRIGGERS["booking.expired"][0])
    assert post(TARGET, ce).status_code == 200
    assert post(TARGET, ce).status_code == 200
    [note] = stored(rt, ce["id"])
    assert note["status"] == "FAILED" and "MessageRejected" in note["error"]
    assert flaky.calls == 1


def test_an_unknown_recipient_is_recorded_not_retried(rt: Runtime, aws_env: str) -> None:
    seed_course(rt)
    ce = cloudevent(TRIGGERS["booking.rejected"][0])  # no account, no booking row
    assert post(TARGET, ce).status_code == 200
    [note] = stored(rt, ce["id"])
    assert note["status"] == "FAILED" and "no account" in note["error"]


def test_an_event_it_does_not_handle_is_poison(rt: Runtime, aws_env: str) -> None:
    ce = cloudevent(CoursePublished(
        course_id=COURSE, author_id=AUTHOR, title="x", price_cents=1, currency="EUR",
        starts_at=NOW, capacity=1))
    ce["type"] = "marketplace.course.deactivated"
    ce["data"] = {"course_id": str(COURSE), "author_id": str(AUTHOR)}
    assert post(TARGET, ce).status_code == 422


def test_users_list_their_own_notifications(rt: Runtime, aws_env: str) -> None:
    booked(rt, unique_email())
    for topic in ("booking.confirmed", "payment.refunded"):
        assert post(TARGET, cloudevent(TRIGGERS[topic][0])).status_code == 200
    other = uuid.uuid4()
    seed_account(rt, other, unique_email())
    assert post(TARGET, cloudevent(UserRegistered(
        user_id=other, email="other@example.com", full_name="Other", role="user",
        registered_at=NOW))).status_code == 200

    client = app("my_notifications").test_client()
    token = tokens.issue_access(USER, "user", uuid.uuid4())
    answer = client.get("/users/me/notifications?size=1",
                        headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    body = json.loads(answer.data)
    assert (body["total"], body["page"], body["size"], len(body["items"])) == (2, 1, 1, 1)
    assert body["items"][0]["template"] == "payment_refunded"  # newest first
    assert client.get("/users/me/notifications").status_code == 401
    assert client.get("/users/me/notifications?size=0", headers={
        "Authorization": f"Bearer {token}"}).status_code == 422
