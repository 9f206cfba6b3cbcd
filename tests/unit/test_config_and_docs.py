"""Settings refuse to run unsafely; the committed OpenAPI document matches the code."""

from __future__ import annotations

import pytest

from functions import api_docs
from shared.edge.tokens import generate_keys
from shared.runtime.config import Settings


def test_outside_local_mode_the_token_public_keys_are_required() -> None:
    with pytest.raises(RuntimeError, match="JWT_PUBLIC_KEYS"):
        Settings.from_env({})
    keys = generate_keys("k1")
    assert Settings.from_env(keys).jwt_key_id == "k1"


def test_local_mode_generates_a_key_pair_per_run() -> None:
    first = Settings.from_env({"MARKETPLACE_LOCAL": "1"})
    second = Settings.from_env({"MARKETPLACE_LOCAL": "1"})
    assert first.jwt_private_key and first.jwt_key_id in dict(first.jwt_public_keys)
    assert first.jwt_private_key != second.jwt_private_key


def test_numbers_are_checked() -> None:
    with pytest.raises(RuntimeError, match="HOLD_TTL_SECONDS"):
        Settings.from_env({**generate_keys(), "HOLD_TTL_SECONDS": "ten"})


def test_committed_openapi_document_is_current() -> None:
    assert api_docs.COMMITTED.read_text() == api_docs.rendered(), (
        "functions/openapi.json is stale: run `make schemas`")


def test_a_function_refuses_to_start_without_the_token_public_keys() -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items()
           if k not in {"JWT_PUBLIC_KEYS", "MARKETPLACE_LOCAL", "FUNCTION_TARGET"}}
    started = subprocess.run(
        [sys.executable, "-c", "from functions_framework import create_app;"
         " create_app('health', 'functions/health.py')"],
        cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert started.returncode != 0
    assert "JWT_PUBLIC_KEYS is required outside local mode" in started.stderr
