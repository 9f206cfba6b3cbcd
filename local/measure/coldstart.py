"""How fast each function starts from zero: `python -m local.measure.coldstart` (make cold-start).

A Knative Service that scaled to zero starts a fresh container for the next
event, so the event waits for the whole start: the interpreter, the imports,
the function's first connections and its first answer. This starts every
function alone in a fresh process the way its Service does (functions-framework,
`create_app` on the Service's source, then its gunicorn with one worker and
THREADS threads), against an embedded stack (Kafka, PostgreSQL, Redis, search,
AWS) started here, sends it the first event or request (`local.measure.coldstart_cases`)
and reports, median of `--runs`:

- import: `create_app` in the fresh process, i.e. loading functions-framework
  and the function's module with everything it imports;
- first event: from spawning the process to the first answer received;
- RSS: the resident memory of the gunicorn worker after that answer, from /proc
  (the worker is forked from the master after the imports and shares those
  pages with it);
- CPU: the CPU time the function's processes (master and worker) used until
  then, from /proc: the same work as the first-event time, but hardly moved
  by other load on the machine, so it shows what a change bought.

Runs go round-robin over the functions, so a noisy moment spreads over all of
them. The exit status is 1 if a function misses its target.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from local import console
from local.measure import coldstart_cases
from local.measure.coldstart_cases import Request, World
from local.stack import embedded
from local.stack.embedded import free_port
from local.stack.stack import ROOT, topic_partitions
from shared import migrations
from shared.domain.events import DEAD_LETTER_TOPIC, REGISTRY
from shared.edge.tokens import generate_keys
from shared.runtime.bootstrap import build
from shared.runtime.config import Settings, settings
from shared.runtime.routing import load, module_of

# (first event handled, ms; resident memory, MB) per kind of function, on 2 cores.
TARGETS = {"reaction": (450.0, 60.0), "schedule": (450.0, 60.0), "http": (550.0, 80.0)}
START_TIMEOUT = 60.0
ISSUER = "accounts"  # the one function given JWT_PRIVATE_KEY
JWT_VARIABLES = ("JWT_PRIVATE_KEY", "JWT_PUBLIC_KEYS", "JWT_KEY_ID")

# What functions-framework's CLI does (`_cli`), with a clock around create_app.
CHILD = """
import json, os, time
started = time.perf_counter()
from functions_framework import create_app
from functions_framework._http import create_server
app = create_app(os.environ["FUNCTION_TARGET"], os.environ["FUNCTION_SOURCE"])
imported = time.perf_counter() - started
with open(os.environ["COLDSTART_REPORT"], "w") as report:
    json.dump({"import_s": imported}, report)
create_server(app, False).run("127.0.0.1", int(os.environ["PORT"]))
"""


@dataclass
class Sample:
    import_ms: float
    first_event_ms: float
    rss_mb: float
    master_rss_mb: float
    cpu_ms: float


@dataclass
class Result:
    target: str
    kind: str
    source: str
    import_ms: float
    first_event_ms: float
    rss_mb: float
    master_rss_mb: float
    cpu_ms: float
    runs: int

    @property
    def within_target(self) -> bool:
        latency, memory = TARGETS[self.kind]
        return self.first_event_ms <= latency and self.rss_mb <= memory


def service_source(target: str) -> str:
    """The file functions-framework loads for `target`: its Knative Service's FUNCTION_SOURCE."""
    return module_of(target)


def functions() -> dict[str, str]:
    """Every function target and its kind, from the routing declaration."""
    reactions, endpoints = load()
    kinds = {r.target: "reaction" if r.topics else "schedule" for r in reactions}
    kinds.update({e.target: "http" for e in endpoints})
    return dict(sorted(kinds.items()))


# --- the stack ----------------------------------------------------------------------

class ColdStack:
    """The backing services, migrated and seeded once; every function process is its own."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.servers: list[embedded.EmbeddedServer] = []
        self.env: dict[str, str] = {}
        self._saved: dict[str, str | None] = {}

    def start(self) -> ColdStack:
        env = {k: v for k, v in os.environ.items() if v and k != "MARKETPLACE_LOCAL"}
        for variable, starter in (("KAFKA_BOOTSTRAP_SERVERS", embedded.start_kafka),
                                  ("DATABASE_URL", embedded.start_postgres),
                                  ("REDIS_URL", embedded.start_redis),
                                  ("ELASTICSEARCH_URL", embedded.start_search),
                                  ("AWS_ENDPOINT_URL", embedded.start_aws)):
            server = starter(self.workdir)
            self.servers.append(server)
            env[variable] = server.url
        payments = embedded.start_payments(self.workdir, "", coldstart_cases.WEBHOOK_SECRET)
        self.servers.append(payments)
        env.update({"STRIPE_API_BASE": payments.url, "STRIPE_API_KEY": "sk_test_coldstart",
                    "STRIPE_WEBHOOK_SECRET": coldstart_cases.WEBHOOK_SECRET})
        env.update({"ELASTICSEARCH_SERVER_MODE": "serverless", "AWS_ACCESS_KEY_ID": "local",
                    "AWS_SECRET_ACCESS_KEY": "local", "AWS_REGION": "us-east-1",
                    "PYTHONPATH": str(ROOT), "WORKERS": "1", "THREADS": "8"})
        env.update(generate_keys("coldstart"))
        self.env = env
        # This process signs the HTTP functions' tokens with the same key (put back in stop()).
        self._saved = {k: os.environ.get(k) for k in (*JWT_VARIABLES, "DATABASE_URL", "REDIS_URL",
                                                      "STRIPE_API_BASE", "STRIPE_API_KEY")}
        os.environ.update({k: env[k] for k in self._saved})
        settings.cache_clear()
        embedded.create_topics(env["KAFKA_BOOTSTRAP_SERVERS"], [*REGISTRY, DEAD_LETTER_TOPIC],
                               topic_partitions(env))
        return self

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved.clear()
        settings.cache_clear()


# --- one cold start -----------------------------------------------------------------

def _connect(port: int, process: subprocess.Popen[bytes], deadline: float) -> socket.socket:
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=30)
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"the function exited with {process.returncode}") from None
            if time.perf_counter() > deadline:
                raise RuntimeError(f"port {port} did not open in {START_TIMEOUT} s") from None
            time.sleep(0.002)


def _ask(sock: socket.socket, request: Request) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", timeout=30)
    connection.sock = sock
    connection.request(request.method, request.path, body=request.body or None,
                       headers={**request.headers, "Connection": "close"})
    answer = connection.getresponse()
    body = answer.read()
    connection.close()
    return answer.status, body


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu_ms(pid: int) -> float:
    """User and system time of `pid`, from /proc/PID/stat (fields 14 and 15, in ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def cold_start(stack: ColdStack, target: str, source: str, request: Request,
               log: Path) -> Sample:
    """Spawn `target` alone, send `request`, measure, stop it."""
    port = free_port()
    report = log.with_suffix(".json")
    env = {**stack.env, "FUNCTION_TARGET": target, "FUNCTION_SOURCE": source,
           "PORT": str(port), "COLDSTART_REPORT": str(report)}
    if target != ISSUER:
        env.pop("JWT_PRIVATE_KEY")  # as in the cluster: the others only verify
    with open(log, "ab") as out:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-c", CHILD], cwd=ROOT, env=env,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        sock = _connect(port, process, started + START_TIMEOUT)
        status, body = _ask(sock, request)
        first_event = time.perf_counter() - started
        if status not in request.ok:
            raise RuntimeError(f"{target} answered {status}: {body[:500]!r} (log: {log})")
        workers = _children(process.pid)
        rss = max((_rss_mb(pid) for pid in workers), default=0.0)
        master = _rss_mb(process.pid)
        cpu = _cpu_ms(process.pid) + sum(_cpu_ms(pid) for pid in workers)
        imported = json.loads(report.read_text())["import_s"]
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
    return Sample(imported * 1000, first_event * 1000, rss, master, cpu)


def measure(stack: ColdStack, kinds: dict[str, str], runs: int) -> list[Result]:
    rt = build(Settings.from_env(stack.env), publish=False)
    migrations.migrate(rt.database)  # once, as the deployment's Job does
    db = rt.db
    world = World().create(db)
    samples: dict[str, list[Sample]] = {t: [] for t in kinds}
    for run in range(runs):
        for target in kinds:
            with db.transaction() as tx:
                request = coldstart_cases.CASES[target](tx, world)
            log = stack.workdir / f"{target}.{run}.log"
            samples[target].append(cold_start(stack, target, service_source(target), request,
                                              log))
            print(f"  run {run + 1}/{runs} {target}: "
                  f"{samples[target][-1].first_event_ms:.0f} ms", file=sys.stderr, flush=True)
    rt.close()
    return [Result(t, kinds[t], service_source(t),
                   statistics.median(s.import_ms for s in samples[t]),
                   statistics.median(s.first_event_ms for s in samples[t]),
                   statistics.median(s.rss_mb for s in samples[t]),
                   statistics.median(s.master_rss_mb for s in samples[t]),
                   statistics.median(s.cpu_ms for s in samples[t]), runs)
            for t in kinds]


# --- report -------------------------------------------------------------------------

def table(results: list[Result]) -> str:
    lines = ["| function | kind | import ms | first event ms | RSS MB | CPU ms | target | ok |",
             "|---|---|---:|---:|---:|---:|---|---|"]
    for r in sorted(results, key=lambda r: (r.kind != "reaction", r.kind, r.target)):
        latency, memory = TARGETS[r.kind]
        lines.append(f"| {r.target} | {r.kind} | {r.import_ms:.0f} | {r.first_event_ms:.0f} |"
                     f" {r.rss_mb:.1f} | {r.cpu_ms:.0f} | ≤ {latency:.0f} ms, ≤ {memory:.0f} MB |"
                     f" {'yes' if r.within_target else 'NO'} |")
    return "\n".join(lines)


@console.command("cold-start")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="cold starts per function (5)")
    parser.add_argument("--only", nargs="*", default=None, help="these function targets only")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    kinds = functions()
    if args.only:
        unknown = set(args.only) - kinds.keys()
        if unknown:
            parser.error(f"unknown function(s): {', '.join(sorted(unknown))}")
        kinds = {t: k for t, k in kinds.items() if t in args.only}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="marketplace-coldstart-") as tmp:
        # COLDSTART_WORKDIR keeps each process's log (e.g. with PYTHONPROFILEIMPORTTIME=1)
        stack = ColdStack(Path(os.environ.get("COLDSTART_WORKDIR", tmp)))
        console.say(f"starting the broker, PostgreSQL, Redis, search, the AWS endpoint and the"
                    f" payment provider, embedded (logs: {stack.workdir}) ...")
        try:
            stack.start()
            console.say(f"starting each of {len(kinds)} functions from nothing,"
                        f" {args.runs} times:")
            results = measure(stack, kinds, args.runs)
        finally:
            stack.stop()
    load_after = os.getloadavg()[0]
    print(table(results))
    print(f"\nmedian of {args.runs} cold starts per function; {os.cpu_count()} CPUs;"
          f" load average {load_before:.2f} before, {load_after:.2f} after")
    if args.json:
        args.json.write_text(json.dumps({
            "runs": args.runs, "cpus": os.cpu_count(), "load": [load_before, load_after],
            "targets": {k: {"first_event_ms": v[0], "rss_mb": v[1]} for k, v in TARGETS.items()},
            "functions": [{**asdict(r), "within_target": r.within_target} for r in results],
        }, indent=2) + "\n")
    missed = [r.target for r in results if not r.within_target]
    if missed:
        print(f"over target: {', '.join(missed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
