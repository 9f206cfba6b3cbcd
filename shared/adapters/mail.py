"""Sending a composed message: SES for email, SNS for text messages.

Provider errors are sorted into two kinds, because the event's answer depends
on it: `transient` (throttled, unavailable, timed out: answer 503 and let
the event come again) and permanent (the address is refused: record it as
failed, never retry). botocore is loaded with the first send; the messages go
out through `awsquery`, which loads no service model.
"""

from __future__ import annotations

import threading
from typing import Any

from shared.adapters import awsquery
from shared.domain.notifications import Message


class ProviderError(RuntimeError):
    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


# Answers that mean "not now" (SES reports both rate and daily quota as Throttling).
TRANSIENT_CODES = frozenset({
    "Throttling", "ThrottlingException", "TooManyRequestsException", "ServiceUnavailable",
    "ServiceUnavailableException", "InternalFailure", "InternalError", "RequestTimeout",
    "RequestTimeoutException", "LimitExceededException",
})


def classify(exc: Exception) -> ProviderError:
    """Transient unless the provider refused this message for good (a 4xx that is no throttle)."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500))
        transient = code in TRANSIENT_CODES or status >= 500
        return ProviderError(f"{code}: {error.get('Message', '')}", transient)
    # BotoCoreError (connection refused, timeouts) and anything unexpected: try again later
    return ProviderError(f"{type(exc).__name__}: {exc}", True)


def ses_client() -> Any:
    """The SES client; tests replace this function to inject a failing provider."""
    return awsquery.client("ses")


def sns_client() -> Any:
    return awsquery.client("sns")


_verified: set[tuple[int, str]] = set()
_verify_lock = threading.Lock()


def ensure_sender(ses: Any, sender: str) -> None:
    """SES sends only from a verified identity: verify the address once, unless it or its
    domain already is (asking again would send a real verification mail each time)."""
    key = (id(ses), sender)
    if key in _verified:
        return
    with _verify_lock:
        domain = sender.rpartition("@")[2]
        found = ses.get_identity_verification_attributes(Identities=[sender, domain])
        statuses = {v.get("VerificationStatus") for v in
                    found.get("VerificationAttributes", {}).values()}
        if "Success" not in statuses:
            ses.verify_email_identity(EmailAddress=sender)
        _verified.add(key)


def send(message: Message, sender: str) -> str:
    """Hand the message to its provider; returns the provider's message id."""
    try:
        if message.channel == "sms":
            answer = sns_client().publish(
                PhoneNumber=message.recipient, Message=message.content.text,
                MessageAttributes={"AWS.SNS.SMS.SMSType": {
                    "DataType": "String", "StringValue": "Transactional"}})
            return str(answer["MessageId"])
        ses = ses_client()
        ensure_sender(ses, sender)
        answer = ses.send_email(
            Source=sender, Destination={"ToAddresses": [message.recipient]},
            Message={"Subject": {"Data": message.content.subject, "Charset": "UTF-8"},
                     "Body": {"Text": {"Data": message.content.text, "Charset": "UTF-8"},
                              "Html": {"Data": message.content.html, "Charset": "UTF-8"}}})
        return str(answer["MessageId"])
    except Exception as exc:
        raise classify(exc) from exc
