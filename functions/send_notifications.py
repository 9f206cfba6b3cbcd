"""Tell people what happened: email (SES) for each trigger, and an SMS for a confirmed booking.

Exactly one message per (event, channel), whatever the redelivery. A send
cannot be inside the database transaction (the mail would go out even when the
commit fails), so each message goes through three steps:

1. claim: one transaction inserts the `notifications` row as SENDING (the
   unique (event_id, channel) key decides who sends); a row that is SENT or
   FAILED means done, one that is RETRYING (or SENDING with an expired lease,
   its sender crashed) is claimed again;
2. send, outside any transaction;
3. record SENT with the provider's message id, FAILED (permanently refused,
   never retried) or RETRYING (throttled or unavailable: the event is answered
   503 and comes again).

The window left: a crash after the provider accepted the message and before
step 3 commits leaves the row SENDING; once the lease ran out a redelivery sends
it again, so that message can arrive twice (SES has no idempotency key). A
redelivery within the lease is answered 503 and retried.
This function keeps its own ledger instead of the runtime's inbox, since a
transient failure must leave the event deliverable again.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from shared.adapters import mail
from shared.adapters.mail import ProviderError
from shared.domain import notifications
from shared.domain.events import Event
from shared.domain.notifications import Message
from shared.runtime.bootstrap import Runtime
from shared.runtime.envelope import Envelope
from shared.runtime.errors import TransientError
from shared.runtime.reactions import effect
from shared.runtime.unit_of_work import with_db_retries

log = logging.getLogger("marketplace.notify")
LEASE_SECONDS = 20  # longer than one send may take with the SES client's timeouts

_CLAIM = """
INSERT INTO notifications (notification_id, event_id, event_type, channel, user_id, recipient,
                           template, subject, status)
VALUES (:id, :event, :type, :channel, :user, :recipient, :template, :subject, 'SENDING')
ON CONFLICT (event_id, channel) DO UPDATE
   SET status = 'SENDING', attempts = notifications.attempts + 1, claimed_at = now(),
       updated_at = now()
 WHERE notifications.status = 'RETRYING'
    OR (notifications.status = 'SENDING'
        AND notifications.claimed_at < now() - make_interval(secs => :lease))
RETURNING notification_id
"""


@dataclass
class Claim:
    notification_id: uuid.UUID
    message: Message
    status: str = "SENDING"
    provider_message_id: str | None = None
    error: str | None = None


def claim(rt: Runtime, envelope: Envelope[Event]) -> tuple[list[Claim], bool]:
    """Claim this event's messages; also says whether another delivery is sending one now."""
    claims: list[Claim] = []
    busy = False
    with rt.db.transaction() as tx:
        messages, missing = notifications.compose(envelope.data, tx)
        if missing is not None:
            tx.execute(
                "INSERT INTO notifications (notification_id, event_id, event_type, channel,"
                " recipient, template, status, error) VALUES (:id, :e, :t, 'email', '', :tpl,"
                " 'FAILED', :err) ON CONFLICT DO NOTHING",
                id=uuid.uuid4(), e=envelope.id, t=envelope.type,
                tpl=envelope.data.topic.replace(".", "_"), err=missing,
            )
        for message in messages:
            row = tx.one(_CLAIM, id=uuid.uuid4(), event=envelope.id, type=envelope.type,
                         channel=message.channel, user=message.user_id,
                         recipient=message.recipient, template=message.template,
                         subject=message.content.subject, lease=LEASE_SECONDS)
            if row is not None:
                claims.append(Claim(row["notification_id"], message))
                continue
            status = tx.scalar("SELECT status FROM notifications WHERE event_id = :e"
                               " AND channel = :c", e=envelope.id, c=message.channel)
            busy = busy or status == "SENDING"
    return claims, busy


def attempt(claim: Claim, sender: str) -> Claim:
    try:
        claim.provider_message_id = mail.send(claim.message, sender)
        claim.status = "SENT"
    except ProviderError as exc:
        claim.status = "RETRYING" if exc.transient else "FAILED"
        claim.error = str(exc)[:1000]
        log.log(logging.INFO if exc.transient else logging.WARNING, "%s %s to %s: %s",
                claim.message.template, claim.message.channel, claim.message.recipient, exc)
    return claim


def record(rt: Runtime, claims: list[Claim]) -> None:
    with rt.db.transaction() as tx:
        for c in claims:
            tx.execute(
                "UPDATE notifications SET status = :s, provider_message_id = :m, error = :e,"
                " updated_at = now() WHERE notification_id = :id AND status = 'SENDING'",
                s=c.status, m=c.provider_message_id, e=c.error, id=c.notification_id,
            )


@effect(*notifications.TRIGGERS)
def send_notifications(envelope: Envelope[Event], rt: Runtime) -> None:
    claims: list[Claim] = []
    busy = False

    def do_claim() -> None:
        nonlocal claims, busy
        claims, busy = claim(rt, envelope)

    with_db_retries(do_claim)
    done = [attempt(c, rt.settings.mail_from) for c in claims]
    with_db_retries(lambda: record(rt, done))
    retrying = [c for c in done if c.status == "RETRYING"]
    if retrying:
        raise TransientError(f"provider did not take {len(retrying)} message(s): "
                             f"{retrying[0].error}")
    if busy:
        raise TransientError("another delivery of this event is sending it now")
