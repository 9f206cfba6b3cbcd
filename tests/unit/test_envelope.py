"""Events and their three wire forms round-trip; anything else is refused as poison."""

from __future__ import annotations

import json

import pytest
from cloudevents.http import from_http
from pydantic import BaseModel

from shared.domain.events import REGISTRY, Event
from shared.runtime.envelope import (
    Envelope,
    PoisonEvent,
    from_cloudevent,
    from_kafka,
    kafka_headers_to_http,
    to_http_binary,
    to_http_structured,
    to_kafka,
)
from tests.helpers.examples import EVENTS

IDS = [e.topic for e in EVENTS]


@pytest.mark.parametrize("event", EVENTS, ids=IDS)
def test_kafka_binary_round_trip(event: Event) -> None:
    envelope = Envelope(event, source="/test")
    record = to_kafka(envelope)
    headers = dict(record.headers)
    assert record.topic == event.topic
    assert record.key == event.partition_key.encode()
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_type"] == f"marketplace.{event.topic}".encode()
    assert headers["ce_subject"] == record.key
    assert headers["content-type"] == b"application/json"
    assert from_kafka(record.headers, record.value) == envelope


@pytest.mark.parametrize("event", EVENTS, ids=IDS)
def test_http_binary_round_trip(event: Event) -> None:
    envelope = Envelope(event, source="/test")
    headers, body = to_http_binary(envelope)
    assert headers["ce-id"] == envelope.id and json.loads(body) == json.loads(envelope.data_json())
    assert from_cloudevent(from_http(headers, body)) == envelope


@pytest.mark.parametrize("event", EVENTS, ids=IDS)
def test_http_structured_round_trip(event: Event) -> None:
    envelope = Envelope(event, source="/test")
    headers, body = to_http_structured(envelope)
    assert headers["content-type"] == "application/cloudevents+json"
    assert json.loads(body)["type"] == envelope.type
    assert from_cloudevent(from_http(headers, body)) == envelope


def test_kafka_headers_become_the_http_headers_knative_sends() -> None:
    record = to_kafka(Envelope(EVENTS[0], source="/test"))
    http = kafka_headers_to_http(record.headers)
    assert http["ce-type"] == EVENTS[0].cloudevent_type()
    assert http["Content-Type"] == "application/json"
    assert from_cloudevent(from_http(http, record.value)).data == EVENTS[0]


def test_unknown_fields_from_a_newer_producer_are_ignored() -> None:
    envelope = Envelope(EVENTS[0], source="/test")
    record = to_kafka(envelope)
    newer = json.dumps({**json.loads(record.value), "added_later": 1}).encode()
    assert from_kafka(record.headers, newer).data == EVENTS[0]


@pytest.mark.parametrize(("ce_type", "body", "why"), [
    ("marketplace.booking.teleported", b"{}", "unknown event type"),
    ("marketplace.booking.requested", b"{not json", "not JSON"),
    ("marketplace.booking.requested", b"[1, 2]", "JSON object"),
    ("marketplace.booking.requested", b'{"booking_id": "x"}', "does not match its schema"),
])
def test_poison_is_refused_with_the_reason(ce_type: str, body: bytes, why: str) -> None:
    headers = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/t", "ce-type": ce_type,
               "Content-Type": "application/json"}
    with pytest.raises(PoisonEvent, match=why):
        from_cloudevent(from_http(headers, body))


def test_a_record_without_ce_headers_is_poison() -> None:
    with pytest.raises(PoisonEvent, match="ce_id"):
        from_kafka([("content-type", b"application/json")], b"{}")


def test_example_builder_covers_every_model() -> None:
    assert all(isinstance(e, BaseModel) for e in EVENTS) and len(EVENTS) == len(REGISTRY) >= 16
