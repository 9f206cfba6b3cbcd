"""A valid example of every event model, built from its field types.

Built rather than written out, so a new event or field is covered the day it is declared.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from shared.domain.events import REGISTRY, Event


def example(model: type[Event]) -> Event:
    values: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        text = repr(field.annotation)
        if "UUID" in text:
            values[name] = uuid.uuid4()
        elif "datetime" in text.lower():
            values[name] = datetime(2026, 11, 24, 10, 0, 0, 123000, tzinfo=UTC)
        elif "Literal" in text:
            values[name] = field.annotation.__args__[0]  # type: ignore[union-attr]
        elif "int" in text:
            values[name] = 4900 if name != "capacity" else 3
        else:
            values[name] = {"email": "ada@example.com", "currency": "EUR", "role": "user"}.get(
                name, f"some {name}")
    return model(**values)


EVENTS = [example(spec.model) for spec in REGISTRY.values()]
