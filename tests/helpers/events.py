"""CloudEvents for the functions under test: the recorded fixtures and how they are delivered.

A test posts to a function's own app, created from its module as its Knative Service
creates it, so what is tested is what is deployed, without a server in between.
"""

from __future__ import annotations

import json
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import flask
from functions_framework import create_app

from shared.runtime.routing import source_path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

# The ids the recorded fixtures use.
BOOKING = uuid.UUID("b0000000-0000-4000-8000-000000000001")
COURSE = uuid.UUID("c0000000-0000-4000-8000-000000000001")
USER = uuid.UUID("a0000000-0000-4000-8000-000000000001")
AUTHOR = uuid.UUID("a0000000-0000-4000-8000-0000000000a1")


@cache
def app(target: str) -> flask.Flask:
    """The function's app, created from its own module as its Knative Service does."""
    return create_app(target, str(source_path(target)))


def fixture(name: str, **data: Any) -> dict[str, Any]:
    """A recorded structured-mode CloudEvent from tests/fixtures, data fields overridable."""
    event: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    if isinstance(event.get("data"), dict):
        event["data"].update({k: str(v) if isinstance(v, uuid.UUID) else v
                              for k, v in data.items()})
    return event


def post(target: str, event: dict[str, Any], mode: str = "binary") -> Any:
    """POST an event to a function the way KafkaSource (binary) or a person (structured) does."""
    return post_to(app(target), event, mode)


def post_to(function: flask.Flask, event: dict[str, Any], mode: str = "binary") -> Any:
    """The same, to an app already made (one kept for many deliveries)."""
    client = function.test_client()
    if mode == "structured":
        return client.post("/", data=json.dumps(event),
                           headers={"Content-Type": "application/cloudevents+json"})
    headers = {f"ce-{k}": str(v) for k, v in event.items() if k not in {"data", "datacontenttype"}}
    headers["Content-Type"] = event.get("datacontenttype", "application/json")
    body = event.get("data")
    raw = body if isinstance(body, str) else json.dumps(body)
    return client.post("/", data=raw, headers=headers)
