"""The whole marketplace on one machine: backing services, functions and their triggers.

Every backing service whose URL is not configured starts embedded (from
PyPI wheels). The functions run under functions-framework in two processes
(the API behind its front door, the reactions), and a third plays the parts
of the cluster around them (`local.knative.triggers`: the KafkaSource emulator for
every reaction with topics, a PingSource for every schedule, and the
hold-expiry watcher). All of it follows the routing declaration in
`shared.runtime.routing`. Those three are supervised: one that dies is started
again, as Kubernetes would restart a pod.

`/healthz` says 200 only once the whole stack is usable: the stack writes
what is still starting to a file the health function reads
(`MARKETPLACE_STARTUP_FILE`), and empties it last.

Every process gets the address of the triggers' doorbell
(`MARKETPLACE_KAFKA_DOORBELL`): its producers ring it once the broker has
their records, and the emulator's consumers, which the embedded broker would
otherwise keep polling, fetch only then (`local.knative.doorbell`).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import requests

from local import console
from local.stack import embedded
from local.stack.embedded import free_port, free_udp_port
from local.stack.supervisor import Supervised, Supervisor
from shared import migrations
from shared.domain.events import DEAD_LETTER_TOPIC, REGISTRY
from shared.edge.tokens import generate_keys
from shared.runtime.bootstrap import Runtime, build
from shared.runtime.config import Settings
from shared.runtime.kafka import DOORBELL_VARIABLE, Doorbell, KafkaPublisher

log = logging.getLogger("marketplace.stack")
ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4  # per topic, unless TOPIC_PARTITIONS says otherwise
PARTITIONS_VARIABLE = "TOPIC_PARTITIONS"  # the same name as in the ConfigMap and docker-compose
STARTUP_FILE_VARIABLE = "MARKETPLACE_STARTUP_FILE"
PAYMENTS = "payments"  # the embedded payment provider's role


def topic_partitions(env: Mapping[str, str]) -> int:
    """Partitions per topic for the topics this process creates (`TOPIC_PARTITIONS`, default 4).

    Partitions bound how many events of one ordered function are in flight at
    once (the docs' "Scaling" page), so a bench or a test can vary them; one name
    for the local stack, docker-compose and the cluster's topics Job keeps them
    from drifting apart. A bad value stops the start with the variable's name
    rather than creating topics nobody asked for.
    """
    text = env.get(PARTITIONS_VARIABLE, "").strip()
    if not text:
        return PARTITIONS
    try:
        partitions = int(text)
    except ValueError:
        partitions = 0
    if not 1 <= partitions <= 1000:
        raise ValueError(f"{PARTITIONS_VARIABLE}={text!r}: expected a whole number from 1 to 1000")
    return partitions


# What starts embedded when its URL is not configured, in this order.
SERVERS: list[tuple[str, str, Callable[[Path], embedded.EmbeddedServer]]] = [
    ("KAFKA_BOOTSTRAP_SERVERS", "the broker", embedded.start_kafka),
    ("DATABASE_URL", "PostgreSQL", embedded.start_postgres),
    ("REDIS_URL", "Redis", embedded.start_redis),
    ("ELASTICSEARCH_URL", "the search server", embedded.start_search),
    ("AWS_ENDPOINT_URL", "the AWS endpoint", embedded.start_aws),
]


def _listed(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _answers(probe: Callable[[], bool]) -> bool:
    try:
        return probe()
    except Exception:
        return False


LOAD_RUN_TOKEN_TTL_SECONDS = 24 * 3600
"""Access tokens for the bench's and the chaos run's clients: they sign in once, and a
long run (a `--max` outlives a default token) must not spend itself signing in again."""
LOAD_RUN_ENV = {"RATE_LIMITS": "off", "BOOKINGS_PER_USER_PER_COURSE": "1000000"}
"""The bench's and the chaos run's limits: a few dozen clients, all on this machine's one
address, each with many bookings of one course in flight, are a load test, not a bot."""


@dataclass
class StackConfig:
    workdir: Path
    port: int = 8080
    hold_ttl_seconds: int | None = None
    sweep_interval_seconds: int | None = None
    # Load runs sign their clients in once and may outlast a default 15-minute token.
    access_token_ttl_seconds: int | None = None
    threads: int = 16
    # Each GET ?wait_for= holds an API thread while it waits (not a database connection).
    api_threads: int = 64
    env: dict[str, str] = field(default_factory=dict)
    # Told each long step as it begins ("starting ..."), for a command to print; tests pass none.
    progress: Callable[[str], None] = field(default=lambda step: None, repr=False)


class Stack:
    """Start with `start()`, stop with `stop()` (idempotent); or use it as a context manager."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.servers: list[embedded.EmbeddedServer] = []
        self.supervisor = Supervisor()
        self.env: dict[str, str] = {}
        self.partitions = PARTITIONS  # per topic; set from TOPIC_PARTITIONS by start()
        self.runtime: Runtime | None = None
        self.reactions_url = ""
        self.triggers_url = ""
        self.api_url = f"http://127.0.0.1:{config.port}"
        self.startup_file = config.workdir / "startup.json"

    # --- start ------------------------------------------------------------------------

    def start(self, pending: Iterable[str] = ()) -> Stack:
        """Start everything; `/healthz` stays 503 until `pending` is done (see `mark_ready`).

        With nothing pending, the stack is marked ready as soon as it runs.
        """
        pending = list(pending)
        try:
            self._start(pending)
        except BaseException:
            self.stop()
            raise
        if not pending:
            self.mark_ready()
        return self

    def _start(self, pending: list[str]) -> None:
        cfg = self.config
        cfg.workdir.mkdir(parents=True, exist_ok=True)
        self._still_starting(["function hosts", "KafkaSource consumers", *pending])
        env = {k: v for k, v in os.environ.items() if v}
        env.update(cfg.env)
        env["MARKETPLACE_LOCAL"] = "1"
        env[STARTUP_FILE_VARIABLE] = str(self.startup_file)
        if not env.get("JWT_PUBLIC_KEYS") and not env.get("JWT_PRIVATE_KEY"):
            env.update(generate_keys())  # one pair per run: every process verifies its tokens
        if cfg.hold_ttl_seconds is not None:
            env["HOLD_TTL_SECONDS"] = str(cfg.hold_ttl_seconds)
        if cfg.sweep_interval_seconds is not None:
            env["SWEEP_INTERVAL_SECONDS"] = str(cfg.sweep_interval_seconds)
        if cfg.access_token_ttl_seconds is not None:
            env["ACCESS_TOKEN_TTL_SECONDS"] = str(cfg.access_token_ttl_seconds)
        starters = [(variable, name, starter) for variable, name, starter in SERVERS
                    if not env.get(variable)]
        if starters:
            cfg.progress(f"starting {_listed([name for _, name, _ in starters])}, embedded"
                         f" (their logs: {console.shown(cfg.workdir)})")
        for variable, _, starter in starters:
            server = starter(cfg.workdir)
            self.servers.append(server)
            env[variable] = server.url
        self._start_payments(env)
        if any(server.name == "search" for server in self.servers):
            # osmem speaks the serverless flavour of the API (no node or cluster endpoints)
            env["ELASTICSEARCH_SERVER_MODE"] = "serverless"
        if any(server.name == "aws" for server in self.servers):
            # the embedded endpoint takes any credentials; real AWS gets yours
            env.setdefault("AWS_ACCESS_KEY_ID", "local")
            env.setdefault("AWS_SECRET_ACCESS_KEY", "local")
        env["PORT"] = str(cfg.port)
        if not env.get(DOORBELL_VARIABLE):
            env[DOORBELL_VARIABLE] = f"127.0.0.1:{free_udp_port()}"
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # each host sums its own workers only
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.env = env
        settings = Settings.from_env(env)
        self.partitions = topic_partitions(env)
        cfg.progress(f"creating the topics ({self.partitions} partitions each) and migrating"
                     " the database")
        embedded.create_topics(env["KAFKA_BOOTSTRAP_SERVERS"],
                               [*REGISTRY, DEAD_LETTER_TOPIC], self.partitions)
        # Migrations are applied here, once, before the function processes start (in a
        # cluster: the migrations Job); the functions only check the schema's version.
        self.runtime = build(settings)
        if isinstance(self.runtime.publisher, KafkaPublisher):  # what this process emits rings
            self.runtime.publisher.doorbell = Doorbell(env[DOORBELL_VARIABLE])
        migrations.migrate(self.runtime.database)

        reactions_port, triggers_port = free_port(), free_port()
        self.reactions_url = f"http://127.0.0.1:{reactions_port}"
        self.triggers_url = f"http://127.0.0.1:{triggers_port}"
        cfg.progress("starting the function hosts (the API and the reactions)")
        self._supervise("reactions", "local.knative.host", "reactions",
                        "--port", str(reactions_port), "--threads", str(cfg.threads))
        self._supervise("api", "local.knative.host", "api", "--port", str(cfg.port),
                        "--threads", str(cfg.api_threads))
        self._wait_http(f"{self.reactions_url}/reserve-ticket/", expect_any=True)
        self._wait_http(f"{self.api_url}/healthz", expect_any=True)
        self._still_starting(["KafkaSource consumers", *pending])
        cfg.progress("starting the triggers (KafkaSource consumers, schedules, hold expiry"
                     " watcher)")
        self._supervise("triggers", "local.knative.triggers", "--reactions-url", self.reactions_url,
                        "--port", str(triggers_port))
        self._wait_http(f"{self.triggers_url}/healthz")
        self._still_starting(pending)

    def _start_payments(self, env: dict[str, str]) -> None:
        """The embedded payment provider, unless a provider is configured (a base or a key).

        Supervised like the function hosts: a fake that dies is started again and
        registers the stack's webhook again by itself (it keeps nothing: its
        intents are gone, as Redis's keys are after a restart). With
        `STRIPE_API_BASE` or a real key the stack starts nothing and registers
        nothing: the operator points that provider's webhook at `/webhooks/stripe`.
        """
        if env.get("STRIPE_API_BASE") or env.get("STRIPE_API_KEY"):
            return
        secret = env.setdefault("STRIPE_WEBHOOK_SECRET",
                                "whsec_" + secrets.token_urlsafe(32)).split(",")[0]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        self.config.progress("starting the fake payment provider")
        self.supervisor.add(Supervised(
            PAYMENTS, embedded.payments_argv(port, f"{self.api_url}/webhooks/stripe", secret),
            ROOT, env, self.config.workdir / "payments.log"))
        deadline = time.monotonic() + embedded.STARTUP_TIMEOUT_S
        while not _answers(lambda: embedded.payments_ready(url)):
            if time.monotonic() > deadline or self.supervisor.children[PAYMENTS].restarts:
                raise embedded.EmbeddedServerError(
                    PAYMENTS, "the fake Stripe server did not answer",
                    "read its log, or set STRIPE_API_BASE (or STRIPE_API_KEY) to a provider",
                    self.config.workdir / "payments.log")
            time.sleep(0.05)
        env["STRIPE_API_BASE"] = url
        env["STRIPE_API_KEY"] = "sk_test_embedded"  # the fake takes any sk_ key

    @property
    def embedded(self) -> list[str]:
        """The names of the backing services this stack started itself."""
        names = [s.name for s in self.servers]
        if PAYMENTS in self.supervisor.children:
            names.append(PAYMENTS)
        return names

    def _supervise(self, role: str, module: str, *args: str) -> None:
        self.supervisor.add(Supervised(
            role, [sys.executable, "-m", module, *args], ROOT, self.env,
            self.config.workdir / f"{role}.log"))

    def _still_starting(self, parts: list[str]) -> None:
        """Tell `/healthz` what is not ready yet (written whole, then renamed into place)."""
        partial = self.startup_file.with_suffix(".tmp")
        partial.write_text(json.dumps({"starting": parts}))
        partial.replace(self.startup_file)

    def mark_ready(self) -> None:
        """Everything the banner promises is true: `/healthz` may answer 200 from now on."""
        self._still_starting([])

    def _wait_http(self, url: str, expect_any: bool = False, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for child in self.supervisor.children.values():
                if child.restarts:
                    raise RuntimeError(f"the {child.role} process exited while starting; see"
                                       f" {child.log_path}")
            try:
                answer = requests.get(url, timeout=2)
                if expect_any or answer.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")

    def pids(self) -> dict[str, int]:
        """Each part of the stack by role, and the pid of its leading process."""
        found = {child.role: child.pid for child in self.supervisor.children.values()}
        found.update({server.name: server.process.pid for server in self.servers
                      if server.process is not None})
        return found

    # --- stop -------------------------------------------------------------------------

    def stop(self) -> None:
        if self.runtime is not None:
            self.runtime.close()
            self.runtime = None
        self.supervisor.stop()
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
