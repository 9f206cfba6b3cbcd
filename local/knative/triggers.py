"""What the cluster does around the functions, played locally: sources, pings, the watcher.

Follows the routing declaration: every reaction with topics gets a consumer
group (the KafkaSource emulator), every schedule a ping, and the hold-expiry
watcher turns Redis notifications into events. `local.stack.stack` runs it beside
the embedded servers; docker-compose runs it on its own against real ones:

    python -m local.knative.triggers --reactions-url http://reactions:8081 [--port 8090]

With `--port`, it answers `GET /healthz` there: 200 once every consumer
holds its partitions and the watcher listens, 503 before; and `GET /metrics`
(consumer lag per group, dead letters per function).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

from functions import hold_expiry_watcher
from local.knative.kafkasource import KafkaSourceEmulator
from local.knative.shutdown import stop_on_signals, wait_for_stop
from local.knative.sourcemetrics import SourceMetrics, exposition
from shared.runtime import logs
from shared.runtime.config import Settings
from shared.runtime.routing import Reaction, load

log = logging.getLogger("marketplace.triggers")
RELAY_INTERVAL_SECONDS = 1.0
# A shorter delivery timeout than the cluster's 30 s, for the fault-injection run.
DELIVERY_TIMEOUT_VARIABLE = "MARKETPLACE_DELIVERY_TIMEOUT_SECONDS"


def kafka_triggered(reactions: list[Reaction]) -> list[Reaction]:
    """The reactions a KafkaSource feeds (locally: the emulator)."""
    return [r for r in reactions if r.topics]


def scheduled(reactions: list[Reaction]) -> list[Reaction]:
    """The reactions a PingSource feeds (locally: a ping thread)."""
    return [r for r in reactions if r.schedule]


class Triggers:
    def __init__(self, settings: Settings, reactions_url: str) -> None:
        self.settings = settings
        self.reactions_url = reactions_url.rstrip("/")
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.emulator: KafkaSourceEmulator | None = None
        self.ready = threading.Event()

    def url(self, reaction: Reaction) -> str:
        return f"{self.reactions_url}/{reaction.name}/"

    def start(self, ready_timeout: float = 60.0) -> None:
        reactions, _ = load()
        timeout = float(os.environ.get(DELIVERY_TIMEOUT_VARIABLE) or 30.0)
        self.emulator = KafkaSourceEmulator(
            self.settings.kafka_bootstrap_servers, kafka_triggered(reactions), sink_url=self.url,
            timeout=timeout)
        self.emulator.start()
        for reaction in scheduled(reactions):
            every = (RELAY_INTERVAL_SECONDS if reaction.target == "relay_outbox"
                     else float(getattr(self.settings, reaction.every)))
            self._thread(f"ping-{reaction.name}", self._ping_forever, reaction, every)
        watcher_ready = threading.Event()
        self._thread("hold-expiry-watcher", hold_expiry_watcher.watch, self.settings.redis_url,
                     hold_expiry_watcher.kafka_publisher(self.settings.kafka_bootstrap_servers),
                     self.stopping, watcher_ready)
        watcher_ready.wait(10)
        self.emulator.wait_ready(ready_timeout)
        self.ready.set()

    def _thread(self, name: str, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _ping_forever(self, reaction: Reaction, every: float) -> None:
        """What a PingSource does: POST a `dev.knative.sources.ping` CloudEvent on a schedule."""
        # A fresh connection per tick: a kept-alive one may be closed by the server between
        # ticks, and the POST would fail for nothing.
        while not self.stopping.wait(every):
            headers = {
                "ce-specversion": "1.0", "ce-id": str(uuid.uuid4()),
                "ce-source": f"/apis/v1/namespaces/local/pingsources/{reaction.name}",
                "ce-type": "dev.knative.sources.ping",
                "ce-time": datetime.now(UTC).isoformat(),
                "Content-Type": "application/json",
            }
            try:
                answer = requests.post(self.url(reaction), data=b"{}", headers=headers,
                                       timeout=30)
                if answer.status_code >= 300:
                    log.warning("%s answered %s", reaction.name, answer.status_code)
            except requests.RequestException as exc:
                if not self.stopping.is_set():
                    log.warning("%s unreachable: %s", reaction.name, exc)

    def stop(self) -> None:
        self.stopping.set()
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None
        for thread in self.threads:
            thread.join(5)
        self.threads.clear()


def serve_health(triggers: Triggers, port: int) -> ThreadingHTTPServer:
    """`GET /healthz` on `port`: 200 once the triggers are live, 503 while they start.

    `GET /metrics` there too: the emulator's lag and dead letters.
    """
    collector = SourceMetrics(lambda: triggers.emulator)

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, content_type = exposition(collector)
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            ready = triggers.ready.is_set()
            body = json.dumps({"status": "ok" if ready else "starting"}).encode()
            if self.path != "/healthz":
                self.send_response(404)
            else:
                self.send_response(200 if ready else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Health)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="triggers-health", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reactions-url", required=True)
    parser.add_argument("--port", type=int, help="serve GET /healthz on this port")
    args = parser.parse_args(argv)
    logs.setup()  # LOG_FORMAT: json, or text under `make run`
    stop_on_signals()
    triggers = Triggers(Settings.from_env(), args.reactions_url)
    health = serve_health(triggers, args.port) if args.port else None
    try:
        triggers.start()
        log.info("triggers running for %s", args.reactions_url)
        wait_for_stop()
    except KeyboardInterrupt:
        pass
    finally:
        if health is not None:
            health.shutdown()
        triggers.stop()


if __name__ == "__main__":
    main()
