"""The HTTP function behind /healthz: is each backing service answering?"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Literal
from urllib.parse import urlparse

import flask
from pydantic import BaseModel

from shared.bootstrap import runtime
from shared.http import Api, Request, endpoint

api = Api()
TIMEOUT = 2.0


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    components: dict[str, str]


def _tcp(address: str) -> None:
    host, _, port = address.rpartition(":")
    with socket.create_connection((host or "127.0.0.1", int(port)), timeout=TIMEOUT):
        pass


def _check(probe: Callable[[], object]) -> str:
    try:
        probe()
    except Exception as exc:
        return f"down: {type(exc).__name__}"
    return "up"


def _http_url(url: str) -> Callable[[], object]:
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return lambda: _tcp(f"{parsed.hostname}:{port}")


@api.route("GET", "/healthz", response=Health, errors=(503,))
def healthz(request: Request) -> object:
    """Each backing service: `up`, `down: why`, or `not_configured`; 503 when one is down."""
    rt = runtime()
    cfg = rt.settings

    def postgres() -> None:
        with rt.db.transaction() as tx:
            tx.scalar("SELECT 1")

    components = {
        "kafka": _check(lambda: _tcp(cfg.kafka_bootstrap_servers.split(",")[0]))
        if cfg.kafka_bootstrap_servers else "not_configured",
        "postgres": _check(postgres),
        "redis": _check(rt.redis.ping),
        "search": _check(_http_url(cfg.elasticsearch_url)) if cfg.elasticsearch_url
        else "not_configured",
        "aws": _check(_http_url(cfg.aws_endpoint_url)) if cfg.aws_endpoint_url
        else "not_configured",
    }
    healthy = all(state in {"up", "not_configured"} for state in components.values())
    answer = Health(status="ok" if healthy else "degraded", components=components)
    return (200 if healthy else 503), answer


@endpoint("/healthz")
def health(request: flask.Request) -> flask.Response:
    return api.dispatch(request)
