"""Dead letters you can act on: what Knative tells us about a failed delivery, and redriving it.

When a KafkaSource gives up on a record (a 4xx other than 404/408/409/429 at
once, anything else after its retries), it produces the CloudEvent to
`marketplace.dead-letter` unchanged, with three extensions of its own:
`knativeerrordest`, the URL it was delivered to (the function's), the HTTP
code, and the answer's body, base64. That is all there is to know, so the
function a record failed in is read from the URL, and the topic from the
event type (`marketplace.<topic>`).

Anyone who can produce to the dead-letter topic can write those extensions,
so the recorded URL is shown to the admin and never used: a redrive POSTs the
original CloudEvent (binary mode, as the KafkaSource did) to the address the
routing declaration gives the function it names (`destination`), to that one
function and not to every subscriber of its topic, following no redirect. A
record naming a function that is not ours, or an event type its function does
not take, is not delivered at all. Safe to repeat: the function's inbox drops
an event it handled.

Where our reactions listen comes from configuration, never from a record
(`address_template`): `REACTIONS_URL` (a host serving each reaction under
`/<name>/`, such as `local.knative.host reactions`, or a template with `{name}`); else
what the local stack's reactions host announced beside `MARKETPLACE_STARTUP_FILE`;
else, in a Knative pod, each reaction's own Service,
`http://<name>.<namespace>.svc.cluster.local` (the namespace and cluster domain
that the pod's DNS search path starts with).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from shared.domain.events import DEAD_LETTER_TOPIC, REGISTRY
from shared.runtime.db import Row, Tx
from shared.runtime.routing import Reaction

ERROR_EXTENSIONS = ("ce-knativeerrordest", "ce-knativeerrorcode", "ce-knativeerrordata")
REASON_LIMIT = 1000
REDRIVE_TIMEOUT_SECONDS = 30.0  # the KafkaSource's own delivery timeout
UNKNOWN_FUNCTION = "unknown"

REACTIONS_URL_VARIABLE = "REACTIONS_URL"
STARTUP_FILE_VARIABLE = "MARKETPLACE_STARTUP_FILE"  # the local stack's, in its work directory
ANNOUNCEMENT_FILE = "reactions-url"  # beside it: written by `local.knative.host reactions`
RESOLV_CONF = Path("/etc/resolv.conf")  # a pod's: `search <namespace>.svc.<cluster domain> ...`
_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_POD_DOMAIN = re.compile(rf"{_LABEL}\.svc(\.{_LABEL})+")  # <namespace>.svc.cluster.local


@dataclass(frozen=True)
class DeadLetter:
    """One failed delivery, as the dead-letter topic's record tells it."""

    event_id: str
    event_type: str
    source: str
    subject: str | None
    destination: str  # as recorded: shown, never posted to
    code: int
    reason: str
    headers: dict[str, str]  # the original CloudEvent's HTTP binary-mode headers
    body: bytes

    @property
    def function(self) -> str:
        return function_of_destination(self.destination)

    @property
    def topic(self) -> str | None:
        return topic_of_type(self.event_type)


def topic_of_type(event_type: str) -> str | None:
    topic = event_type.removeprefix("marketplace.")
    return topic if topic in REGISTRY else None


def _original(name: str) -> bool:
    """A header of the CloudEvent itself: its `ce-` attributes and content type, no more."""
    return (name.startswith("ce-") and name not in ERROR_EXTENSIONS) or name == "content-type"


def from_delivery(headers: Mapping[str, str], body: bytes) -> DeadLetter:
    """Read a dead-letter record delivered over HTTP in binary mode; never refuses one.

    A record lacking what a CloudEvent should have is recorded with what it has
    (an id derived from its body), since refusing it would only lose it.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    code = lowered.get("ce-knativeerrorcode", "")
    return DeadLetter(
        event_id=lowered.get("ce-id") or f"sha256:{hashlib.sha256(body).hexdigest()}",
        event_type=lowered.get("ce-type", ""),
        source=lowered.get("ce-source", ""),
        subject=lowered.get("ce-subject") or None,
        destination=lowered.get("ce-knativeerrordest", ""),
        code=int(code) if code.isdigit() else 0,
        reason=reason_of(lowered.get("ce-knativeerrordata", "")),
        headers={name: value for name, value in lowered.items() if _original(name)},
        body=body,
    )


def function_of_destination(url: str) -> str:
    """The function a delivery went to: `http://reserve-ticket.ns.svc.cluster.local` (Knative)
    or `http://127.0.0.1:8081/reserve-ticket/` (the local host) -> `reserve_ticket`.

    Only a name, looked up in the routing declaration before anything is sent.
    """
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


# --- where a redrive goes ---------------------------------------------------------

class NotRoutable(Exception):
    """Why a dead letter has no address of ours to go to: it is not redriven."""


def announcement_path(env: Mapping[str, str]) -> Path | None:
    """Where the local stack's reactions host writes its base URL, if this is the local stack."""
    startup = env.get(STARTUP_FILE_VARIABLE, "")
    return Path(startup).with_name(ANNOUNCEMENT_FILE) if startup else None


def address_template(env: Mapping[str, str], resolv_conf: Path = RESOLV_CONF) -> str | None:
    """Our reactions' address with `{name}` for the function's, from configuration; None: unknown.

    `REACTIONS_URL` first; then the local reactions host's announcement; then,
    in a Knative pod (`K_SERVICE` is set), the Service of each function in
    this pod's own namespace, which its DNS search path names (the pods mount
    no service-account token, so no namespace file). Nothing here is ever read
    from a dead letter.
    """
    configured = env.get(REACTIONS_URL_VARIABLE, "").strip()
    if configured:
        return configured if "{name}" in configured else configured.rstrip("/") + "/{name}/"
    announced = announcement_path(env)
    if announced is not None and announced.is_file():
        base = announced.read_text().strip()
        if base:
            return base.rstrip("/") + "/{name}/"
    if env.get("K_SERVICE") and resolv_conf.is_file():
        for line in resolv_conf.read_text().splitlines():
            words = line.split()
            # the first domain searched is the pod's namespace's: <namespace>.svc.<domain>
            if words[:1] == ["search"] and len(words) > 1 and _POD_DOMAIN.fullmatch(words[1]):
                return "http://{name}." + words[1]
    return None


def destination(function: str, event_type: str, reactions: Iterable[Reaction],
                template: str | None) -> str:
    """The address of `function` in the routing declaration, or NotRoutable saying why not.

    Only a function fed by a KafkaSource has dead letters, and only an event
    of one of its topics is what it takes; the dead-letter recorder has none.
    """
    reaction = next((r for r in reactions if r.target == function), None)
    if reaction is None or not reaction.topics or DEAD_LETTER_TOPIC in reaction.topics:
        raise NotRoutable(f"{function!r} is not one of our event-fed functions: not delivered")
    topic = topic_of_type(event_type)
    if topic not in reaction.topics:
        raise NotRoutable(f"{function} does not take {event_type or 'untyped'} events:"
                          " not delivered")
    if template is None:
        raise NotRoutable(f"where {function} listens is not configured (set"
                          f" {REACTIONS_URL_VARIABLE}): not delivered")
    return template.replace("{name}", reaction.name)


@dataclass(frozen=True)
class Delivery:
    code: int  # 0: no answer (refused, timed out, not sent)
    answer: str

    @property
    def accepted(self) -> bool:
        return 200 <= self.code < 300


def redeliver(row: Row, url: str, timeout: float = REDRIVE_TIMEOUT_SECONDS) -> Delivery:
    """POST the dead letter's original CloudEvent to `url` once; a redirect is not followed.

    The session ignores the environment (proxies, .netrc credentials): the
    event goes to exactly this address, with exactly its own headers.
    (`requests` is imported here: the recorder, which shares this module, never sends.)
    """
    import requests

    headers = {name: str(value) for name, value in dict(row["headers"]).items()
               if _original(name.lower())}
    try:
        with requests.Session() as session:
            session.trust_env = False
            with session.post(url, data=bytes(row["body"]), headers=headers, timeout=timeout,
                              allow_redirects=False, stream=True) as answer:
                if 200 <= answer.status_code < 300:
                    return Delivery(answer.status_code, "")
                if answer.is_redirect:
                    return Delivery(answer.status_code, "the function answered with a redirect:"
                                    " not followed")
                body = answer.raw.read(REASON_LIMIT, decode_content=True) or b""
    except (requests.RequestException, OSError, ValueError) as error:
        return Delivery(0, f"{type(error).__name__}: {error}"[:REASON_LIMIT])
    return Delivery(answer.status_code, reason_of(base64.b64encode(body).decode()))
