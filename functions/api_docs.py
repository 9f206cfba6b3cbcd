"""The HTTP function behind /openapi.json and its reference page at /docs
(shared.edge.api_page), and the command that writes the committed copy.

    python -m functions.api_docs           # exit 1 when functions/openapi.json is stale
    python -m functions.api_docs --write

The function serves the committed copy, which the suite keeps equal to the
document rendered from the routes (tests/unit/test_config_and_docs.py):
rendering it imports every HTTP function's module, which a cold start should
not pay for a file the image already holds.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

import flask

from shared.edge import api_page
from shared.edge.api import Api, Problem, endpoint
from shared.runtime.routing import ENDPOINTS, load

COMMITTED = Path(__file__).with_name("openapi.json")
VERSION = "1.0.0"

# What a view reads by itself, past its route's models, by operationId: the payment
# provider's webhook checks its `Stripe-Signature` over the raw body, then wants an event
# (an object with a string `id` and `type`); anything else is a 400.
READ_BY_VIEWS: dict[str, dict[str, Any]] = {
    "receive_stripe_event": {
        "parameters": [{
            "name": "Stripe-Signature", "in": "header", "required": True,
            "description": "t=<unix time>,v1=<HMAC-SHA256 of \"<t>.<body>\">, under the"
                           " endpoint's secret; at most 5 minutes old",
            "schema": {"type": "string", "pattern": "^t=[0-9]{1,12}(,v1=[0-9a-f]{64})+$"}}],
        "body": {"type": "object", "required": ["id", "type"],
                 "properties": {"id": {"type": "string"}, "type": {"type": "string"}},
                 "description": "a provider event; types other than payment_intent.* are"
                                " answered 200 and ignored"},
    },
}


def apis() -> dict[str, Api]:
    """Every HTTP function's routes, found through the routing declaration."""
    load()
    found = {}
    for endpoint_ in ENDPOINTS.values():
        module = importlib.import_module(f"functions.{endpoint_.target}")
        api = getattr(module, "api", None)
        if isinstance(api, Api):
            found[endpoint_.name] = api
    return found


@cache
def rendered() -> str:
    from shared.edge.openapi import document

    return json.dumps(document(apis(), VERSION, READ_BY_VIEWS), indent=2, sort_keys=False) + "\n"


@cache
def served() -> bytes:
    return COMMITTED.read_bytes()


def spec() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(rendered())
    return result


@endpoint("/openapi.json", api_page.PAGE)
def api_docs(request: flask.Request) -> flask.Response:
    if request.method not in {"GET", "HEAD"}:
        return Problem(405, "Method Not Allowed", "use GET, HEAD",
                       headers={"Allow": "GET, HEAD"}).response()
    if request.path != "/openapi.json":
        return api_page.serve(request)
    return flask.Response(served(), 200, mimetype="application/json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    if args.write:
        COMMITTED.write_text(rendered())
        return 0
    if not COMMITTED.exists() or COMMITTED.read_text() != rendered():
        print("functions/openapi.json is stale: run `make schemas`")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
