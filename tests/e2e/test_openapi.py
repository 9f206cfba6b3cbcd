"""The OpenAPI document: served, committed, complete, and no request to it finds a 5xx."""

from __future__ import annotations

import json
from contextlib import suppress
from pathlib import Path
from typing import Any

import requests
import schemathesis
from conftest import Marketplace
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

EXAMPLES = 10  # per operation and mode: a few hundred requests in all
COMMITTED = Path(__file__).resolve().parents[2] / "functions" / "openapi.json"

# CONTRACT section 2, every route.
CONTRACT_ROUTES = {
    ("post", "/auth/register"), ("post", "/auth/login"), ("post", "/auth/refresh"),
    ("post", "/auth/logout"), ("post", "/auth/password"), ("get", "/users/me"),
    ("patch", "/users/me"), ("put", "/users/me/avatar"), ("get", "/users"),
    ("post", "/courses"), ("get", "/courses"), ("get", "/courses/{course_id}"),
    ("patch", "/courses/{course_id}"), ("post", "/courses/{course_id}/deactivate"),
    ("post", "/bookings"), ("get", "/bookings/{booking_id}"), ("get", "/bookings"),
    ("post", "/bookings/{booking_id}/payment"), ("post", "/bookings/{booking_id}/cancel"),
    ("get", "/healthz"), ("get", "/analytics/summary"),
}


def test_served_document_is_the_committed_one(marketplace: Marketplace) -> None:
    served = requests.get(marketplace.url + "/openapi.json", timeout=30)
    assert served.status_code == 200
    assert served.json() == json.loads(COMMITTED.read_text())


def test_every_contract_route_is_documented() -> None:
    document = json.loads(COMMITTED.read_text())
    assert document["openapi"].startswith("3.1")
    documented = {(method, path) for path, ops in document["paths"].items() for method in ops}
    assert CONTRACT_ROUTES - documented == set()


def test_generated_requests_never_find_a_server_error(marketplace: Marketplace) -> None:
    """Schemathesis sends valid and malformed requests to every operation, signed in as a user.

    Positive and negative (schema-violating) cases both count: whatever arrives, the
    answer is never a 5xx.
    """
    user = marketplace.register()
    schema = schemathesis.openapi.from_dict(json.loads(COMMITTED.read_text()))
    schema.config.update(base_url=marketplace.url)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= len(CONTRACT_ROUTES)
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, mode, user.token, failures)
    assert failures == []


def _fuzz(operation: Any, mode: GenerationMode, token: str, failures: list[str]) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        response = case.call(headers={"Authorization": f"Bearer {token}"}, timeout=30)
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.formatted_path} ({mode.value}) ->"
                            f" {response.status_code}: {response.text[:200]}")

    # Unsatisfiable: nothing to vary in this mode, e.g. no parameter to break in a bare GET.
    with suppress(Unsatisfiable):
        run()
