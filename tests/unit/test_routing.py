"""The routing declaration is complete without a client library, and each function loads alone.

Both run in a fresh interpreter, so what this test process imported for other
tests cannot hide an import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from shared.runtime.routing import load, module_of

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("boto3", "botocore", "elasticsearch", "elastic_transport", "kafka", "argon2", "jwt",
         "opentelemetry", "prometheus_client")


def fresh(code: str) -> dict[str, object]:
    """Run `code` in a new interpreter; it prints one JSON object as its last line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MARKETPLACE_LOCAL": "1"}
    env.pop("FUNCTION_TARGET", None)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def test_the_declaration_loads_without_any_client_library() -> None:
    found = fresh(f"""
import json, sys
from shared.runtime.routing import load
reactions, endpoints = load()
print(json.dumps({{"reactions": [r.target for r in reactions if r.topics or r.schedule],
                  "endpoints": [e.target for e in endpoints],
                  "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
""")
    assert found["heavy"] == []
    reactions, endpoints = load()
    assert found["reactions"] == [r.target for r in reactions]
    assert found["endpoints"] == [e.target for e in endpoints]
    assert len(reactions) >= 9 and len(endpoints) >= 8


def test_every_function_lives_in_the_module_of_its_name() -> None:
    reactions, endpoints = load()
    for function in [*reactions, *endpoints]:
        assert function.source == module_of(function.target), function
        assert (ROOT / function.source).is_file()


def test_loading_every_function_from_its_own_module_imports_no_client() -> None:
    """What a Service's create_app does, for each function: clients wait for their first use."""
    reactions, endpoints = load()
    targets = [f.target for f in [*reactions, *endpoints]]
    found = fresh(f"""
import json, sys
from functions_framework import create_app
for target in {targets!r}:
    create_app(target, f"functions/{{target}}.py")
print(json.dumps({{"heavy": [m for m in {(*HEAVY, "redis", "requests")!r} if m in sys.modules]}}))
""")
    assert found["heavy"] == []
