"""The one routing declaration: which function reacts to what, and where it lives.

Filled by the `@reaction`, `@effect` and `@scheduled` decorators and each HTTP
module's `api.function(...)` (or `@endpoint`) as the function modules are
imported. They only record metadata here; every client library a function
uses is imported when it first runs, so `load()` gives the whole declaration
(to the KafkaSource emulator, the front door and the Knative manifest
generator) without loading boto3, elasticsearch, kafka-python, argon2 or PyJWT
(tests/unit/test_routing.py checks it).

Each function lives in the module of its name, `functions/<target>.py` (its
`source`): a Knative Service points functions-framework at that one file, so
a cold start loads only what that function imports, and finding a function's
module needs no import at all.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

FUNCTIONS_PACKAGE = "functions"
ROOT = Path(__file__).resolve().parents[2]

Ordering = Literal["ordered", "unordered"]


@dataclass(frozen=True)
class Reaction:
    """A function triggered by Kafka topics (a KafkaSource) or by a schedule (a PingSource)."""

    target: str
    topics: tuple[str, ...] = ()
    schedule: str | None = None
    ordering: Ordering = "ordered"
    source: str = ""  # the module functions-framework loads, relative to the repository root
    # A schedule's period on one machine: the `Settings` field the local ping follows
    # (a cluster's PingSource runs the cron, at most once a minute).
    every: str = "sweep_interval_seconds"

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
    source: str = ""

    @property
    def name(self) -> str:
        return self.target.replace("_", "-")


REACTIONS: dict[str, Reaction] = {}
ENDPOINTS: dict[str, Endpoint] = {}


def source_of_handler(handler: Any) -> str:
    """The file defining `handler`, relative to the repository root (`functions/x.py`)."""
    path = Path(inspect.getsourcefile(handler) or "").resolve()
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def _refuse_unsafe_settings(target: str) -> None:
    """The function being served checks its settings at import, so a bad one never gets ready.

    (No JWT_SECRET outside local mode, for instance; functions-framework sets
    FUNCTION_TARGET before it loads the source.)
    """
    if os.environ.get("FUNCTION_TARGET") == target:
        from shared.runtime.config import settings

        settings()


def register_reaction(reaction: Reaction) -> None:
    _refuse_unsafe_settings(reaction.target)
    REACTIONS[reaction.target] = reaction


def register_endpoint(endpoint: Endpoint) -> None:
    _refuse_unsafe_settings(endpoint.target)
    ENDPOINTS[endpoint.target] = endpoint


def load() -> tuple[list[Reaction], list[Endpoint]]:
    """Import every module of `functions/` and return the declaration, sorted by name."""
    package = importlib.import_module(FUNCTIONS_PACKAGE)
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{FUNCTIONS_PACKAGE}.{module.name}")
    return (
        sorted(REACTIONS.values(), key=lambda r: r.target),
        sorted(ENDPOINTS.values(), key=lambda e: e.target),
    )


def module_of(target: str) -> str:
    """The module functions-framework loads for `target`, relative to the repository root."""
    return f"{FUNCTIONS_PACKAGE}/{target}.py"


def source_path(target: str) -> Path:
    """The absolute path of `target`'s module; the function must exist."""
    path = ROOT / module_of(target)
    if not path.is_file():
        raise KeyError(f"no function named {target!r} (no {module_of(target)})")
    return path
