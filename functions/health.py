"""The HTTP function behind /healthz: is everything up, and may a client start now?

200 means usable: every backing service answers and, under `make run`,
everything the banner promises exists (the local stack names what is still
starting in the file `MARKETPLACE_STARTUP_FILE`; in a cluster there is no such
file). Otherwise 503, a problem saying what is still starting or down, so a
script, a compose health check or a probe that waits for 200 never races the
stack.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import BaseModel

from shared.edge.api import Api, Problem
from shared.runtime import metrics
from shared.runtime.bootstrap import runtime
from shared.runtime.gauges import SystemGauges

api = Api()
metrics.add_collector(SystemGauges())  # outbox and holds, for the whole system
TIMEOUT = 2.0


class Health(BaseModel):
    status: Literal["ok"]
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


def still_starting() -> list[str]:
    """What the local stack has not finished starting; nothing outside `make run`."""
    path = os.environ.get("MARKETPLACE_STARTUP_FILE")
    if not path:
        return []
    try:
        return [str(part) for part in json.loads(Path(path).read_text())["starting"]]
    except (OSError, ValueError, KeyError, TypeError):
        return ["the local stack"]


@api.route("GET", "/healthz", errors=(503,))
def healthz() -> Health:
    """Each backing service `up`, `down: why` or `not_configured`; 503 until all is usable."""
    starting = still_starting()
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
    down = [name for name, state in components.items() if state not in {"up", "not_configured"}]
    if starting:
        raise Problem(503, "Starting", f"still starting: {', '.join(starting)}",
                      headers={"Retry-After": "1"},
                      extensions={"starting": starting, "components": components})
    if down:
        raise Problem(503, "Unavailable", f"down: {', '.join(down)}",
                      extensions={"components": components})
    return Health(status="ok", components=components)


health = api.function("/healthz")
