"""The whole marketplace on one machine: backing services, functions and their triggers.

Every backing service whose URL is not configured starts embedded (from
PyPI wheels). The functions run under functions-framework in two processes
(the API behind its front door, the reactions); this process plays the parts
of the cluster: the KafkaSource emulator for every reaction with topics, a
PingSource for every schedule, and the hold-expiry watcher. All of it follows
the routing declaration in `shared.routing`.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from functions import hold_expiry_watcher
from local import embedded
from local.kafkasource import KafkaSourceEmulator
from shared.bootstrap import Runtime, build
from shared.config import Settings
from shared.events import DEAD_LETTER_TOPIC, REGISTRY
from shared.routing import Reaction, load

log = logging.getLogger("marketplace.stack")
ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 4
RELAY_INTERVAL_SECONDS = 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class StackConfig:
    workdir: Path
    port: int = 8080
    hold_ttl_seconds: int | None = None
    sweep_interval_seconds: int | None = None
    threads: int = 16
    env: dict[str, str] = field(default_factory=dict)


class Stack:
    """Start with `start()`, stop with `stop()` (idempotent); or use it as a context manager."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.servers: list[embedded.EmbeddedServer] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.threads: list[threading.Thread] = []
        self.stopping = threading.Event()
        self.emulator: KafkaSourceEmulator | None = None
        self.env: dict[str, str] = {}
        self.settings: Settings | None = None
        self.runtime: Runtime | None = None
        self.reactions_url = ""
        self.api_url = f"http://127.0.0.1:{config.port}"

    # --- start ------------------------------------------------------------------------

    def start(self) -> Stack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        cfg = self.config
        cfg.workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if v}
        env.update(cfg.env)
        env["MARKETPLACE_LOCAL"] = "1"
        env.setdefault("JWT_SECRET", secrets.token_urlsafe(32))
        if cfg.hold_ttl_seconds is not None:
            env["HOLD_TTL_SECONDS"] = str(cfg.hold_ttl_seconds)
        if cfg.sweep_interval_seconds is not None:
            env["SWEEP_INTERVAL_SECONDS"] = str(cfg.sweep_interval_seconds)
        for variable, starter in (("KAFKA_BOOTSTRAP_SERVERS", embedded.start_kafka),
                                  ("DATABASE_URL", embedded.start_postgres),
                                  ("REDIS_URL", embedded.start_redis),
                                  ("ELASTICSEARCH_URL", embedded.start_search),
                                  ("AWS_ENDPOINT_URL", embedded.start_aws)):
            if not env.get(variable):
                server = starter(cfg.workdir)
                self.servers.append(server)
                env[variable] = server.url
        if any(server.name == "aws" for server in self.servers):
            # the embedded endpoint takes any credentials; real AWS gets yours
            env.setdefault("AWS_ACCESS_KEY_ID", "local")
            env.setdefault("AWS_SECRET_ACCESS_KEY", "local")
        env["PORT"] = str(cfg.port)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.env = env
        settings = self.settings = Settings.from_env(env)
        reactions, _ = load()
        embedded.create_topics(env["KAFKA_BOOTSTRAP_SERVERS"],
                               [*REGISTRY, DEAD_LETTER_TOPIC], PARTITIONS)
        # Migrations are applied here, once, before the function processes start.
        self.runtime = build(settings)

        reactions_port = free_port()
        self.reactions_url = f"http://127.0.0.1:{reactions_port}"
        self._spawn("reactions", reactions_port)
        self._spawn("api", cfg.port)
        self._wait_http(f"{self.reactions_url}/reserve-ticket/", expect_any=True)
        self._wait_http(f"{self.api_url}/healthz")

        self.emulator = KafkaSourceEmulator(
            env["KAFKA_BOOTSTRAP_SERVERS"], [r for r in reactions if r.topics],
            sink_url=lambda r: f"{self.reactions_url}/{r.name}/",
        )
        self.emulator.start()
        for reaction in reactions:
            if reaction.schedule:
                every = (RELAY_INTERVAL_SECONDS if reaction.target == "relay_outbox"
                         else float(settings.sweep_interval_seconds))
                self._thread(f"ping-{reaction.name}", self._ping_forever, reaction, every)
        watcher_ready = threading.Event()
        self._thread("hold-expiry-watcher", hold_expiry_watcher.watch, env["REDIS_URL"],
                     hold_expiry_watcher.kafka_publisher(env["KAFKA_BOOTSTRAP_SERVERS"]),
                     self.stopping, watcher_ready)
        watcher_ready.wait(10)
        self.emulator.wait_ready(60)

    def _spawn(self, role: str, port: int) -> None:
        logfile = open(self.config.workdir / f"{role}.log", "ab")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "local.host", role, "--port", str(port),
             "--threads", str(self.config.threads)],
            cwd=ROOT, env=self.env, stdout=logfile, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=embedded.death_signal_preexec(signal.SIGTERM),
        )
        self.processes.append(process)

    def _wait_http(self, url: str, expect_any: bool = False, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"a function host exited; see {self.config.workdir}/*.log")
            try:
                answer = requests.get(url, timeout=2)
                if expect_any or answer.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")

    def _thread(self, name: str, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _ping_forever(self, reaction: Reaction, every: float) -> None:
        """What a PingSource does: POST a `dev.knative.sources.ping` CloudEvent on a schedule."""
        session = requests.Session()
        url = f"{self.reactions_url}/{reaction.name}/"
        while not self.stopping.wait(every):
            headers = {
                "ce-specversion": "1.0", "ce-id": str(uuid.uuid4()),
                "ce-source": f"/apis/v1/namespaces/local/pingsources/{reaction.name}",
                "ce-type": "dev.knative.sources.ping",
                "ce-time": datetime.now(UTC).isoformat(),
                "Content-Type": "application/json",
            }
            try:
                answer = session.post(url, data=b"{}", headers=headers, timeout=30)
                if answer.status_code >= 300:
                    log.warning("%s answered %s", reaction.name, answer.status_code)
            except requests.RequestException as exc:
                if not self.stopping.is_set():
                    log.warning("%s unreachable: %s", reaction.name, exc)

    # --- stop -------------------------------------------------------------------------

    def stop(self) -> None:
        self.stopping.set()
        if self.runtime is not None:
            self.runtime.close()
            self.runtime = None
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None
        for thread in self.threads:
            thread.join(5)
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self.processes.clear()
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
