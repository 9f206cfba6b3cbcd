"""Settings refuse to run unsafely; the committed OpenAPI document matches the code."""

from __future__ import annotations

import pytest

from functions import api_docs
from shared.config import Settings


def test_outside_local_mode_a_jwt_secret_is_required() -> None:
    with pytest.raises(RuntimeError, match="JWT_SECRET"):
        Settings.from_env({})
    assert Settings.from_env({"JWT_SECRET": "s" * 32}).jwt_secret == "s" * 32


def test_local_mode_generates_a_secret_per_run() -> None:
    first = Settings.from_env({"MARKETPLACE_LOCAL": "1"}).jwt_secret
    second = Settings.from_env({"MARKETPLACE_LOCAL": "1"}).jwt_secret
    assert len(first) >= 32 and first != second


def test_numbers_are_checked() -> None:
    with pytest.raises(RuntimeError, match="HOLD_TTL_SECONDS"):
        Settings.from_env({"JWT_SECRET": "x", "HOLD_TTL_SECONDS": "ten"})


def test_committed_openapi_document_is_current() -> None:
    assert api_docs.COMMITTED.read_text() == api_docs.rendered(), (
        "functions/openapi.json is stale: run `make schemas`")
