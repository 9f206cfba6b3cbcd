"""Serve functions under functions-framework's own gunicorn server, one or several per process.

In a cluster each function is its own Knative Service, started on its own
module. Locally one process serves all HTTP functions behind the front door
(the API on one port, routed by path prefix as the cluster's ingress would),
and another serves all reactions, each under `/<name>` for the KafkaSource
emulator to call; each is still created from its own module. `function NAME`
serves exactly one, loading only its module, as its Service does.

The reactions host writes its base URL beside the local stack's startup file
(`shared.domain.dead_letters.announcement_path`): that, not what a dead letter
says, is where a redrive from the API finds the functions, as a cluster's
would find their Services.

    python -m local.knative.host api --port 8080
    python -m local.knative.host reactions --port 8081
    python -m local.knative.host function reserve_ticket --port 8082
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from functions_framework import create_app
from functions_framework._http.gunicorn import GunicornApplication

from local.knative import faults
from local.knative.timing import Timing
from shared.domain.dead_letters import announcement_path
from shared.runtime import logs, metrics
from shared.runtime.routing import load, source_path

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _not_found(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = json.dumps({"type": "about:blank", "title": "Not Found", "status": 404,
                       "detail": f"no route for {environ.get('PATH_INFO', '')}"}).encode()
    start_response("404 Not Found", [("Content-Type", "application/problem+json"),
                                     ("Content-Length", str(len(body)))])
    return [body]


class PrefixRouter:
    """Send a request to the app whose path prefix it starts with, longest prefix first."""

    def __init__(self, routes: dict[str, WSGIApp], strip: bool) -> None:
        self.routes = sorted(routes.items(), key=lambda item: -len(item[0]))
        self.strip = strip

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        for prefix, app in self.routes:
            if path == prefix or path.startswith(prefix + "/"):
                if self.strip:
                    environ = {**environ, "SCRIPT_NAME": prefix,
                               "PATH_INFO": path[len(prefix):] or "/"}
                return app(environ, start_response)
        return _not_found(environ, start_response)


def function_app(target: str) -> WSGIApp:
    """One function, created from its own module (`functions/<target>.py`), as its Service is."""
    return create_app(target, str(source_path(target)))  # type: ignore[no-any-return,no-untyped-call]


def api_app() -> WSGIApp:
    """The front door: every HTTP function under the path prefixes it declared."""
    _, endpoints = load()
    routes: dict[str, WSGIApp] = {}
    for endpoint in endpoints:
        app = function_app(endpoint.target)
        for prefix in endpoint.prefixes:
            routes[prefix] = app
    return PrefixRouter(routes, strip=False)


def reactions_app() -> WSGIApp:
    """Every reaction (and schedule) under `/<name>`, as the KafkaSource emulator calls them."""
    reactions, _ = load()
    return PrefixRouter(
        {f"/{r.name}": function_app(r.target) for r in reactions}, strip=True
    )


def announce_reactions(host: str, port: int, env: Mapping[str, str]) -> None:
    """Tell the API host where the reactions listen (written whole, then renamed into place)."""
    path = announcement_path(env)
    if path is None:
        return  # not under the local stack: REACTIONS_URL says it, if anything does
    address = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in address:
        address = f"[{address}]"
    partial = path.with_suffix(".tmp")
    partial.write_text(f"http://{address}:{port}\n")
    partial.replace(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", choices=["api", "reactions", "function"])
    parser.add_argument("target", nargs="?", help="with `function`: the function to serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", "16")))
    args = parser.parse_args(argv)
    logs.setup()  # LOG_FORMAT: json, or text under `make run`
    if args.role == "function":
        if not args.target:
            parser.error("`function` needs the name of the function")
        app = function_app(args.target)
    elif args.role == "api":
        app = api_app()
    else:
        app = reactions_app()
        announce_reactions(args.host, args.port, os.environ)
    app = faults.wrap(app)  # only under `make chaos`
    app = Timing(app)  # GET /__timing: calls, wall and CPU time per function (make bench)
    app = metrics.in_front_of(app)  # GET /metrics: this host's functions, every worker
    GunicornApplication(  # type: ignore[no-untyped-call]
        app, args.host, args.port, False, threads=args.threads, accesslog=None
    ).run()


if __name__ == "__main__":
    main()
