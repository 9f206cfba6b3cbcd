"""CloudEvent envelopes around typed events, and their three wire forms.

Kafka records are binary mode (Knative's KafkaSource forwards a record
unchanged only when it carries `ce_` headers), HTTP requests are binary
or structured mode. Decoding refuses anything the registry does not know with
`PoisonEvent`, which the runtime turns into a 4xx so it is dead-lettered.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from pydantic import ValidationError

from shared.domain.events import Event, spec_for_type

E = TypeVar("E", bound=Event)

SPECVERSION = "1.0"
JSON = "application/json"


class PoisonEvent(ValueError):
    """An event that can never be handled: retrying it cannot help."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Envelope(Generic[E]):
    """A typed event with the CloudEvent attributes it travels with."""

    data: E
    source: str = ""
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    time: datetime = field(default_factory=_now)
    # The CloudEvents distributed-tracing extension: the emitting function's W3C context.
    traceparent: str = ""
    tracestate: str = ""

    @property
    def type(self) -> str:
        return self.data.cloudevent_type()

    @property
    def topic(self) -> str:
        return self.data.topic

    @property
    def subject(self) -> str:
        return self.data.partition_key

    def attributes(self) -> dict[str, str]:
        attributes = {
            "specversion": SPECVERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "subject": self.subject,
            "time": self.time.isoformat().replace("+00:00", "Z"),
            "datacontenttype": JSON,
            "partitionkey": self.subject,
        }
        if self.traceparent:
            attributes["traceparent"] = self.traceparent
            if self.tracestate:
                attributes["tracestate"] = self.tracestate
        return attributes

    def data_json(self) -> bytes:
        return self.data.model_dump_json().encode()

    def to_cloudevent(self) -> CloudEvent:
        return CloudEvent(self.attributes(), json.loads(self.data_json()))


# --- Kafka, binary mode -------------------------------------------------------


@dataclass(frozen=True)
class KafkaRecord:
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def to_kafka(envelope: Envelope[Any]) -> KafkaRecord:
    """The record to produce: `ce_` headers, JSON value, key = aggregate id."""
    headers = [("content-type", JSON.encode())]
    headers += [
        (f"ce_{name}", value.encode())
        for name, value in envelope.attributes().items()
        if name != "datacontenttype"
    ]
    return KafkaRecord(envelope.topic, envelope.subject.encode(), envelope.data_json(), headers)


def kafka_headers_to_http(headers: list[tuple[str, bytes]]) -> dict[str, str]:
    """Binary-mode Kafka headers as binary-mode HTTP headers, as KafkaSource forwards them."""
    http: dict[str, str] = {}
    for name, value in headers:
        text = value.decode("utf-8", errors="replace")
        if name.startswith("ce_"):
            http["ce-" + name[3:]] = text
        elif name.lower() == "content-type":
            http["Content-Type"] = text
    if "ce-traceparent" in http:  # W3C's own header too, for proxies and tracers on the way
        http["traceparent"] = http["ce-traceparent"]
    return http


# --- HTTP ----------------------------------------------------------------------


def to_http_binary(envelope: Envelope[Any]) -> tuple[dict[str, str], bytes]:
    headers, body = to_binary(envelope.to_cloudevent())
    return dict(headers), body if isinstance(body, bytes) else str(body).encode()


def to_http_structured(envelope: Envelope[Any]) -> tuple[dict[str, str], bytes]:
    headers, body = to_structured(envelope.to_cloudevent())
    return dict(headers), body if isinstance(body, bytes) else str(body).encode()


def _parse_time(raw: object) -> datetime:
    if isinstance(raw, datetime):
        return raw
    if not isinstance(raw, str):
        return _now()
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise PoisonEvent(f"time is not RFC 3339: {raw!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def from_cloudevent(event: CloudEvent) -> Envelope[Event]:
    """A typed envelope, or `PoisonEvent` saying why there can never be one."""
    ce_type = str(event["type"])
    spec = spec_for_type(ce_type)
    if spec is None:
        raise PoisonEvent(f"unknown event type {ce_type!r}")
    data = event.get_data()
    if isinstance(data, (bytes, bytearray)):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise PoisonEvent(f"data of {ce_type} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PoisonEvent(f"data of {ce_type} must be a JSON object")
    try:
        model = spec.model.model_validate(data)
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise PoisonEvent(f"data of {ce_type} does not match its schema: {errors}") from exc
    return Envelope(
        data=model,
        source=str(event["source"]),
        id=str(event["id"]),
        time=_parse_time(event.get("time")),
        traceparent=str(event.get("traceparent") or ""),
        tracestate=str(event.get("tracestate") or ""),
    )


def from_kafka(headers: list[tuple[str, bytes]], value: bytes) -> Envelope[Event]:
    """Decode a binary-mode record (used by replay tools and tests)."""
    attrs = {
        name[3:]: raw.decode()
        for name, raw in headers
        if name.startswith("ce_")
    }
    for required in ("id", "source", "type", "specversion"):
        if required not in attrs:
            raise PoisonEvent(f"record lacks the ce_{required} header")
    attrs["datacontenttype"] = JSON
    return from_cloudevent(CloudEvent(attrs, value))
