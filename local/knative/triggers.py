"""What the cluster does around the functions, played locally: sources, pings, the watcher.

Follows the routing declaration: every reaction with topics gets a consumer
group (the KafkaSource emulator), every schedule a ping, and the hold-expiry
watcher turns Redis notifications into events. `local.stack.stack` runs it beside
the embedded servers; docker-compose runs it on its own against real ones:

    python -m local.knative.triggers --reactions-url http://reactions:8081 [--port 8090]

With `--port`, it answers `GET /healthz` there: 200 once every consumer
holds its partitions and the watcher listens, 503 before; and `GET /metrics`
(consumer lag per group, dead letters per function).

At rest it does next to nothing. With `MARKETPLACE_KAFKA_DOORBELL` set (the
local stack sets it), it listens there for the producers' bells
(`local.knative.doorbell`) and its consumers fetch only when their topics
rang. A schedule whose function says how to tell whether it has work
(`due(db)` in its module, a query, no function call) is called only when
that says so; one without is called on its period while bells ring and
backs off when they stop. Neither waits longer than a cluster's PingSource
would (once a minute), and the functions themselves are unchanged: in a
cluster their PingSources call them every minute.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

from functions import hold_expiry_watcher
from local.knative.doorbell import ANY, DoorbellListener
from local.knative.kafkasource import KafkaSourceEmulator
from local.knative.shutdown import stop_on_signals, wait_for_stop
from local.knative.sourcemetrics import SourceMetrics, exposition
from shared.runtime import logs
from shared.runtime.config import Settings
from shared.runtime.db import Database
from shared.runtime.kafka import DOORBELL_VARIABLE
from shared.runtime.routing import FUNCTIONS_PACKAGE, Reaction, load

log = logging.getLogger("marketplace.triggers")
RELAY_INTERVAL_SECONDS = 1.0
CLUSTER_PERIOD_SECONDS = 60.0
"""A PingSource's cron fires at most once a minute: no local schedule waits longer."""
RUN_AT_LEAST_EVERY_SECONDS = 3600.0
"""A schedule with `due` still runs this often, for what it does besides (the relay prunes)."""
# A shorter delivery timeout than the cluster's 30 s, for the fault-injection run.
DELIVERY_TIMEOUT_VARIABLE = "MARKETPLACE_DELIVERY_TIMEOUT_SECONDS"
Due = Callable[[Database], bool | None]
"""A scheduled function's `due(db)`: True, work now; False, none now but some may come
(look again on the period); None, nothing pending (look less and less often)."""


def kafka_triggered(reactions: list[Reaction]) -> list[Reaction]:
    """The reactions a KafkaSource feeds (locally: the emulator)."""
    return [r for r in reactions if r.topics]


def scheduled(reactions: list[Reaction]) -> list[Reaction]:
    """The reactions a PingSource feeds (locally: a ping thread)."""
    return [r for r in reactions if r.schedule]


def due_check(reaction: Reaction) -> Due | None:
    """The `due(db)` its module defines: is there anything for the function to do?"""
    module = importlib.import_module(f"{FUNCTIONS_PACKAGE}.{reaction.target}")
    due = getattr(module, "due", None)
    return due if callable(due) else None


@dataclass
class Pacing:
    """When a local schedule next looks: its period while there is work or activity,
    twice as long each time there was neither, never longer than a cluster's period."""

    every: float
    longest: float = CLUSTER_PERIOD_SECONDS
    wait: float = field(init=False)

    def __post_init__(self) -> None:
        self.longest = max(self.every, self.longest)
        self.wait = self.every

    def busy(self) -> None:
        self.wait = self.every

    def idle(self) -> None:
        self.wait = min(self.wait * 2, self.longest)


class Triggers:
    def __init__(self, settings: Settings, reactions_url: str,
                 doorbell_address: str | None = None) -> None:
        self.settings = settings
        self.reactions_url = reactions_url.rstrip("/")
        self.doorbell_address = doorbell_address
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.emulator: KafkaSourceEmulator | None = None
        self.doorbell: DoorbellListener | None = None
        self.ready = threading.Event()
        self._wakes: list[threading.Event] = []
        self._db: Database | None = None

    def url(self, reaction: Reaction) -> str:
        return f"{self.reactions_url}/{reaction.name}/"

    def start(self, ready_timeout: float = 60.0) -> None:
        reactions, _ = load()
        timeout = float(os.environ.get(DELIVERY_TIMEOUT_VARIABLE) or 30.0)
        if self.doorbell_address:
            try:
                self.doorbell = DoorbellListener(self.doorbell_address)
            except OSError as exc:  # consumers long-poll instead: slow on the embedded broker
                log.warning("cannot listen for the doorbell on %s (%s); polling instead",
                            self.doorbell_address, exc)
        self.emulator = KafkaSourceEmulator(
            self.settings.kafka_bootstrap_servers, kafka_triggered(reactions), sink_url=self.url,
            timeout=timeout, doorbell=self.doorbell)
        self.emulator.start()
        for reaction in scheduled(reactions):
            every = (RELAY_INTERVAL_SECONDS if reaction.target == "relay_outbox"
                     else float(getattr(self.settings, reaction.every)))
            wake = threading.Event()
            self._wakes.append(wake)
            if self.doorbell is not None:
                self.doorbell.subscribe([ANY], wake.set)
            self._thread(f"ping-{reaction.name}", self._ping_forever, reaction, every,
                         due_check(reaction), wake)
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

    def _ping_forever(self, reaction: Reaction, every: float, due: Due | None,
                      rung: threading.Event) -> None:
        """What a PingSource does: POST a `dev.knative.sources.ping` CloudEvent on a schedule.

        Only when there can be work: `due` says so, or, for a function without
        `due`, a bell rang since the last call. It looks each period while bells
        ring or `due` says work may come, and twice as seldom each time neither,
        up to a cluster's period (without a doorbell: each period). At most once
        a period, at least once a minute (a schedule with `due`: once an hour).
        """
        pacing = Pacing(every, CLUSTER_PERIOD_SECONDS if self.doorbell is not None else every)
        # The first look calls a function without `due` (to catch up), one with `due` if due.
        last_look = time.monotonic()
        last_call = last_look if due is not None else float("-inf")
        while True:
            woke = rung.wait(max(0.0, last_look + pacing.wait - time.monotonic()))
            if self.stopping.is_set():
                return
            if woke:  # a bell: there is activity, so look on the period again
                pacing.busy()
                if self.stopping.wait(max(0.0, last_look + every - time.monotonic())):
                    return
            last_look = time.monotonic()
            activity = rung.is_set()
            rung.clear()
            since = time.monotonic() - last_call
            pending = activity
            if due is None:
                call = activity or since >= pacing.longest
            else:
                answer = self._due(reaction, due)
                call = answer is True or since >= RUN_AT_LEAST_EVERY_SECONDS
                pending = pending or answer is not None
            if call:
                pacing.busy()
                last_call = time.monotonic()
                self._ping(reaction)
            elif pending:
                pacing.busy()
            else:
                pacing.idle()

    def _due(self, reaction: Reaction, due: Due) -> bool | None:
        """Ask the function's `due`; a question that fails (PostgreSQL away) says yes, and
        the function answers for itself."""
        try:
            if self._db is None:
                self._db = Database(self.settings.database_url, size=2)
            return due(self._db)
        except Exception as exc:
            log.debug("%s: due() failed (%s); calling it", reaction.name, exc)
            return True

    def _ping(self, reaction: Reaction) -> None:
        """POST one ping. A fresh connection each time: a kept-alive one may be closed by
        the server between ticks, and the POST would fail for nothing."""
        headers = {
            "ce-specversion": "1.0", "ce-id": str(uuid.uuid4()),
            "ce-source": f"/apis/v1/namespaces/local/pingsources/{reaction.name}",
            "ce-type": "dev.knative.sources.ping",
            "ce-time": datetime.now(UTC).isoformat(),
            "Content-Type": "application/json",
        }
        try:
            answer = requests.post(self.url(reaction), data=b"{}", headers=headers, timeout=30)
            if answer.status_code >= 300:
                log.warning("%s answered %s", reaction.name, answer.status_code)
        except requests.RequestException as exc:
            if not self.stopping.is_set():
                log.warning("%s unreachable: %s", reaction.name, exc)

    def stop(self) -> None:
        self.stopping.set()
        for wake in self._wakes:
            wake.set()
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None
        for thread in self.threads:
            thread.join(5)
        self.threads.clear()
        if self.doorbell is not None:
            self.doorbell.close()
            self.doorbell = None
        if self._db is not None:
            self._db.close()
            self._db = None


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
    triggers = Triggers(Settings.from_env(), args.reactions_url,
                        os.environ.get(DOORBELL_VARIABLE) or None)
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
