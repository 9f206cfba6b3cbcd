"""The committed event schemas match the models, and breaking changes are caught."""

from __future__ import annotations

from typing import Any, ClassVar, Literal
from uuid import UUID

import jsonschema
import pytest

from shared.domain import schemas
from shared.domain.events import REGISTRY, Event
from tests.helpers.examples import EVENTS


def test_committed_schemas_match_the_models() -> None:
    assert schemas.check() == []


def test_every_event_type_has_a_committed_schema() -> None:
    assert set(schemas.committed()) == set(REGISTRY)


def test_committed_schemas_are_valid_json_schema_and_accept_real_events() -> None:
    saved = schemas.committed()
    for event in EVENTS:
        schema = saved[event.topic]
        jsonschema.Draft202012Validator.check_schema(schema)
        jsonschema.validate(event.model_dump(mode="json"), schema)


class V1(Event):
    topic: ClassVar[str] = "x.v1"
    key: ClassVar[str] = "id"
    id: UUID
    amount: int
    status: Literal["a", "b"]
    note: str | None = None


def schema_of(model: type[Event]) -> dict[str, Any]:
    return model.model_json_schema()


class AddsOptional(V1):
    extra: str | None = None


class AddsRequired(V1):
    extra: str


class WidensEnum(Event):
    topic: ClassVar[str] = "x"
    key: ClassVar[str] = "id"
    id: UUID
    amount: int
    status: Literal["a", "b", "c"]
    note: str | None = None


class NarrowsEnum(Event):
    topic: ClassVar[str] = "x"
    key: ClassVar[str] = "id"
    id: UUID
    amount: int
    status: Literal["a"]
    note: str | None = None


class Retyped(Event):
    topic: ClassVar[str] = "x"
    key: ClassVar[str] = "id"
    id: UUID
    amount: str
    status: Literal["a", "b"]
    note: str | None = None


class Removed(Event):
    topic: ClassVar[str] = "x"
    key: ClassVar[str] = "id"
    id: UUID
    status: Literal["a", "b"]
    note: str | None = None


@pytest.mark.parametrize(("model", "expected"), [
    (V1, []),
    (AddsOptional, []),
    (WidensEnum, []),
    (AddsRequired, ["field 'extra' is newly required"]),
    (NarrowsEnum, ["field 'status' no longer allows \"b\""]),
    (Retyped, ["field 'amount' changed type"]),
    (Removed, ["field 'amount' was removed"]),
])
def test_breaking_changes(model: type[Event], expected: list[str]) -> None:
    assert schemas.breaking_changes(schema_of(V1), schema_of(model)) == expected
