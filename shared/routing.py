"""The one routing declaration: which function reacts to which topics or schedule.

Filled by the `@reaction`, `@scheduled` and `@endpoint` decorators as the
function modules are imported; `local/` (the KafkaSource emulator and the
front door) and the Knative manifest generator read it from here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Literal

FUNCTIONS_PACKAGE = "functions"
FUNCTION_SOURCE = "functions/main.py"

Ordering = Literal["ordered", "unordered"]


@dataclass(frozen=True)
class Reaction:
    """A function triggered by Kafka topics (a KafkaSource) or by a schedule (a PingSource)."""

    target: str
    topics: tuple[str, ...] = ()
    schedule: str | None = None
    ordering: Ordering = "ordered"

    @property
    def name(self) -> str:
        return self.target.replace("_", "-")

    @property
    def consumer_group(self) -> str:
        return f"marketplace-{self.name}"


@dataclass(frozen=True)
class Endpoint:
    """An HTTP function and the URL path prefixes the front door sends to it."""

    target: str
    prefixes: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.target.replace("_", "-")


REACTIONS: dict[str, Reaction] = {}
ENDPOINTS: dict[str, Endpoint] = {}


def register_reaction(reaction: Reaction) -> None:
    REACTIONS[reaction.target] = reaction


def register_endpoint(endpoint: Endpoint) -> None:
    ENDPOINTS[endpoint.target] = endpoint


def load() -> tuple[list[Reaction], list[Endpoint]]:
    """Import every function and return the declaration, sorted by name."""
    importlib.import_module(f"{FUNCTIONS_PACKAGE}.main")
    return (
        sorted(REACTIONS.values(), key=lambda r: r.target),
        sorted(ENDPOINTS.values(), key=lambda e: e.target),
    )
