"""Dead letters you can act on: what Knative tells us about a failed delivery, and redriving it.

When a KafkaSource gives up on a record (a 4xx other than 404/408/409/429 at
once, anything else after its retries), it produces the CloudEvent to
`marketplace.dead-letter` unchanged, with three extensions (FIELD-NOTES):
`knativeerrordest`, the URL it was delivered to (the function's), the HTTP
code, and the answer's body, base64. That is all there is to know, so the
function a record failed in is read from the URL, and the topic from the
event type (`marketplace.<topic>`).

A redrive POSTs the original CloudEvent (binary mode, as the KafkaSource did)
to that URL again: to the one function it failed in, not to every subscriber
of its topic. Safe to repeat: the function's inbox drops an event it handled.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import json
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from shared.domain.events import REGISTRY
from shared.runtime.db import Row, Tx

ERROR_EXTENSIONS = ("ce-knativeerrordest", "ce-knativeerrorcode", "ce-knativeerrordata")
REASON_LIMIT = 1000
REDRIVE_TIMEOUT_SECONDS = 30.0  # the KafkaSource's own delivery timeout
UNKNOWN_FUNCTION = "unknown"


@dataclass(frozen=True)
class DeadLetter:
    """One failed delivery, as the dead-letter topic's record tells it."""

    event_id: str
    event_type: str
    source: str
    subject: str | None
    destination: str
    code: int
    reason: str
    headers: dict[str, str]  # the original CloudEvent's HTTP binary-mode headers
    body: bytes

    @property
    def function(self) -> str:
        return function_of_destination(self.destination)

    @property
    def topic(self) -> str | None:
        topic = self.event_type.removeprefix("marketplace.")
        return topic if topic in REGISTRY else None


def from_delivery(headers: Mapping[str, str], body: bytes) -> DeadLetter:
    """Read a dead-letter record delivered over HTTP in binary mode; never refuses one.

    A record lacking what a CloudEvent should have is recorded with what it has
    (an id derived from its body), since refusing it would only lose it.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    original = {name: value for name, value in lowered.items()
                if name.startswith("ce-") and name not in ERROR_EXTENSIONS}
    if "content-type" in lowered:
        original["content-type"] = lowered["content-type"]
    code = lowered.get("ce-knativeerrorcode", "")
    return DeadLetter(
        event_id=lowered.get("ce-id") or f"sha256:{hashlib.sha256(body).hexdigest()}",
        event_type=lowered.get("ce-type", ""),
        source=lowered.get("ce-source", ""),
        subject=lowered.get("ce-subject") or None,
        destination=lowered.get("ce-knativeerrordest", ""),
        code=int(code) if code.isdigit() else 0,
        reason=reason_of(lowered.get("ce-knativeerrordata", "")),
        headers=original,
        body=body,
    )


def function_of_destination(url: str) -> str:
    """The function a delivery went to: `http://reserve-ticket.ns.svc.cluster.local` (Knative)
    or `http://127.0.0.1:8081/reserve-ticket/` (the local host) -> `reserve_ticket`."""
    if not url:
        return UNKNOWN_FUNCTION
    parsed = urlsplit(url)
    segments = [s for s in parsed.path.split("/") if s]
    name = segments[-1] if segments else (parsed.hostname or "").split(".")[0]
    return name.replace("-", "_") or UNKNOWN_FUNCTION


def reason_of(error_data: str) -> str:
    """The function's answer, readable: a problem's detail, an HTML error page's text, or as is."""
    try:
        raw = base64.b64decode(error_data, validate=True)
    except (binascii.Error, ValueError):
        raw = error_data.encode()
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("detail"), str):
        text = parsed["detail"]
    elif "<" in text:
        paragraphs = re.findall(r"<p>(.*?)</p>", text, flags=re.S)
        text = " ".join(paragraphs) or re.sub(r"<[^>]+>", " ", text)
        text = html.unescape(" ".join(text.split()))
    return text[:REASON_LIMIT] or "(no answer body)"


_RECORD = """
INSERT INTO dead_letters (dead_letter_id, event_id, function, destination, topic, event_type,
                          subject, source, error_code, reason, headers, body)
VALUES (gen_random_uuid(), :id, :function, :destination, :topic, :type, :subject, :source,
        :code, :reason, CAST(:headers AS jsonb), :body)
ON CONFLICT (event_id, function) DO UPDATE
   SET destination = EXCLUDED.destination, error_code = EXCLUDED.error_code,
       reason = EXCLUDED.reason, status = 'DEAD', failures = dead_letters.failures + 1,
       last_failed_at = now()
 WHERE dead_letters.status = 'REDRIVEN'
"""


def record(tx: Tx, letter: DeadLetter) -> bool:
    """Keep the dead letter; False when it was already waiting (a redelivered record).

    One row per (event, function): an event that fails again after a redrive
    is the same row, DEAD again, with one more failure.
    """
    return tx.execute(
        _RECORD, id=letter.event_id, function=letter.function, destination=letter.destination,
        topic=letter.topic, type=letter.event_type, subject=letter.subject,
        source=letter.source, code=letter.code, reason=letter.reason,
        headers=json.dumps(letter.headers), body=letter.body,
    ) == 1


@dataclass(frozen=True)
class Delivery:
    code: int  # 0: no answer (refused, timed out)
    answer: str

    @property
    def accepted(self) -> bool:
        return 200 <= self.code < 300


def redeliver(row: Row, timeout: float = REDRIVE_TIMEOUT_SECONDS) -> Delivery:
    """POST the dead letter's original CloudEvent to the function it failed in, once."""
    headers: dict[str, Any] = dict(row["headers"])
    request = urllib.request.Request(row["destination"], data=bytes(row["body"]),
                                     headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return Delivery(answer.status, "")
    except urllib.error.HTTPError as error:
        body = error.read()[:REASON_LIMIT]
        return Delivery(error.code, reason_of(base64.b64encode(body).decode()))
    except (urllib.error.URLError, OSError) as error:
        return Delivery(0, f"{type(error).__name__}: {error}"[:REASON_LIMIT])
