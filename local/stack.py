"""The whole marketplace on one machine: backing services, functions and their triggers.

Every backing service whose URL is not configured starts embedded (from
PyPI wheels). The functions run under functions-framework in two processes
(the API behind its front door, the reactions); this process plays the parts
of the cluster: the KafkaSource emulator for every reaction with topics, a
PingSource for every schedule, and the hold-expiry watcher (`local.triggers`).
All of it follows the routing declaration in `shared.routing`.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from local import embedded
from local.triggers import Triggers
from shared.bootstrap import Runtime, build
from shared.config import Settings
from shared.events import DEAD_LETTER_TOPIC, REGISTRY

log = logging.getLogger("marketplace.stack")
ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 4


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
        self.triggers: Triggers | None = None
        self.env: dict[str, str] = {}
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
        if any(server.name == "search" for server in self.servers):
            env["ELASTICSEARCH_SERVER_MODE"] = "serverless"  # what osmem speaks (FIELD-NOTES)
        if any(server.name == "aws" for server in self.servers):
            # the embedded endpoint takes any credentials; real AWS gets yours
            env.setdefault("AWS_ACCESS_KEY_ID", "local")
            env.setdefault("AWS_SECRET_ACCESS_KEY", "local")
        env["PORT"] = str(cfg.port)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.env = env
        settings = Settings.from_env(env)
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

        self.triggers = Triggers(settings, self.reactions_url)
        self.triggers.start()

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

    # --- stop -------------------------------------------------------------------------

    def stop(self) -> None:
        if self.runtime is not None:
            self.runtime.close()
            self.runtime = None
        if self.triggers is not None:
            self.triggers.stop()
            self.triggers = None
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
