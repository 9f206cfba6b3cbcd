"""`make chaos`: the saga under steady load while each part of the stack fails in turn.

Starts a fresh local stack, offers bookings at a steady rate with a realistic
mix of behaviours (`local.measure.load`), and injects one fault at a time with
recovery in between: a function host or the KafkaSource emulator killed with
SIGKILL (the supervisor restarts it, as Kubernetes would), the broker frozen,
PostgreSQL restarted on its data, Redis restarted empty, a reaction answering
past the delivery timeout, the payment provider's webhooks dropped (the
reconciler must settle those payments). When the load stops and the saga has drained, it
checks what users and operators rely on (`local.chaos.checks`) and prints
what each fault cost, ending with

    N bookings, F faults, 0 lost, 0 duplicated, 0 oversold

It exits 1 on any violation. `--short` is the version `make test` runs.

    python -m local.chaos [--rate 15] [--duration 180] [--short] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local import console
from local.apiclient import ApiClient
from local.chaos.checks import Check, drain, run_checks
from local.knative import faults
from local.knative.triggers import DELIVERY_TIMEOUT_VARIABLE
from local.measure import load
from local.stack import seed
from local.stack.embedded import free_port
from local.stack.stack import (
    LOAD_RUN_ENV,
    LOAD_RUN_TOKEN_TTL_SECONDS,
    Stack,
    StackConfig,
)

ADMIN_EMAIL = "admin@marketplace.local"
ADMIN_PASSWORD = "chaos-admin-password"
# Long enough that a paid booking is confirmed before its hold ends even behind the
# longest fault (a frozen broker, a restarted emulator rejoining its groups).
HOLD_TTL_SECONDS = 20
SWEEP_INTERVAL_SECONDS = 2
DELIVERY_TIMEOUT_SECONDS = 3  # locally; the slow-reaction fault answers after 4 s
SLOW_SECONDS = 4.0
FREEZE_SECONDS = 10.0
WEBHOOKS_DROPPED_SECONDS = 10.0
# The reconciler asks about a payment without an answer after 3 s, every 2 s: well inside
# the hold, so a payment whose webhook was dropped is still confirmed.
RECONCILE_AFTER_SECONDS = 3
RECONCILE_INTERVAL_SECONDS = 2
MIX = {"pay": 0.70, "decline": 0.08, "cancel": 0.07, "expire": 0.07, "late_pay": 0.03,
       "retry_post": 0.05}


@dataclass
class Fault:
    """One fault: what it does to the stack, and for how long it lasts before it is undone."""

    name: str
    inject: Callable[[Stack, Path], None]
    lasts: float = 0.0
    undo: Callable[[Stack], None] | None = None


@dataclass
class Injected:
    """What a fault cost, once the run is over."""

    fault: Fault
    started: float  # epoch seconds
    ended: float  # the fault itself over (process killed, broker thawed, server back)
    recovered: float | None = None  # a booking requested after `started` was confirmed
    failed_requests: int = 0
    retried_ok: int = 0

    def row(self, origin: float) -> str:
        recovery = (f"{self.recovered - self.started:6.1f} s" if self.recovered is not None
                    else "   never")
        return (f"  {self.fault.name:<34} {self.started - origin:6.1f} s {recovery}"
                f"   {self.failed_requests:5d}   {self.retried_ok:5d}")


def _kill(role: str) -> Callable[[Stack, Path], None]:
    return lambda stack, _: stack.supervisor.children[role].kill()


def _server(stack: Stack, name: str) -> Any:
    return next(s for s in stack.servers if s.name == name)


def _slow(stack: Stack, faults_file: Path) -> None:
    faults.slow_down(faults_file, "/reserve-ticket", SLOW_SECONDS, for_seconds=15.0)


def _drop_webhooks(stack: Stack, faults_file: Path) -> None:
    faults.drop(faults_file, "/webhooks/stripe", WEBHOOKS_DROPPED_SECONDS)


ALL_FAULTS = [
    Fault("SIGKILL reactions host", _kill("reactions")),
    Fault("SIGKILL API host", _kill("api")),
    Fault("SIGKILL KafkaSource emulator", _kill("triggers")),
    Fault(f"broker frozen {FREEZE_SECONDS:g} s", lambda stack, _: _server(stack, "kafka").freeze(),
          FREEZE_SECONDS, lambda stack: _server(stack, "kafka").thaw()),
    Fault("PostgreSQL restarted (fast)", lambda stack, _: _server(stack, "postgres").restart()),
    Fault("Redis restarted empty", lambda stack, _: _server(stack, "redis").restart()),
    Fault("reserve_ticket slower than the timeout", _slow, 15.0),
    Fault(f"provider webhooks dropped {WEBHOOKS_DROPPED_SECONDS:g} s", _drop_webhooks,
          WEBHOOKS_DROPPED_SECONDS),
]
SHORT_FAULTS = ["SIGKILL reactions host", "SIGKILL API host", f"broker frozen {FREEZE_SECONDS:g} s",
                "Redis restarted empty",
                f"provider webhooks dropped {WEBHOOKS_DROPPED_SECONDS:g} s"]


@dataclass
class Report:
    rate: float
    duration: float
    origin: float
    injected: list[Injected]
    checks: list[Check]
    bookings: int

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def figure(self, name: str) -> int:
        return next((c.count for c in self.checks if c.name == name), 0)

    def render(self) -> str:
        lines = [f"Fault injection: {self.rate:g} bookings/s for {self.duration:g} s",
                 "", "  fault                                 at   recovery  failed  retried ok"]
        lines += [i.row(self.origin) for i in self.injected]
        lines += ["", "  checks after the load stopped and the saga drained:"]
        lines += [f"  {'ok  ' if c.ok else 'FAIL'} {c.name:<58} {c.figure}" for c in self.checks]
        lines += ["", f"{self.bookings} bookings, {len(self.injected)} faults,"
                  f" {self.figure('lost')} lost, {self.figure('duplicated')} duplicated,"
                  f" {self.figure('oversold')} oversold"]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "rate": self.rate, "duration": self.duration, "bookings": self.bookings,
            "ok": self.ok,
            "faults": [{"fault": i.fault.name, "at": i.started - self.origin,
                        "recovery_seconds": None if i.recovered is None
                        else i.recovered - i.started,
                        "failed_requests": i.failed_requests, "retried_ok": i.retried_ok}
                       for i in self.injected],
            "checks": [{"name": c.name, "ok": c.ok, "count": c.count, "figure": c.figure}
                       for c in self.checks],
        }


def inject(stack: Stack, fault: Fault, faults_file: Path, origin: float) -> Injected:
    console.say(f"  {time.time() - origin:5.0f} s  injecting: {fault.name}")
    started = time.time()
    fault.inject(stack, faults_file)
    if fault.lasts:
        time.sleep(fault.lasts)  # the fault's own duration, not a wait for a condition
        if fault.undo is not None:
            fault.undo(stack)
    return Injected(fault, started, time.time())


def attribute(injected: list[Injected], result: load.LoadResult, grace: float,
              origin: float) -> list[str]:
    """Count each failed client request against the fault it happened in; list the others."""
    strays = []
    for attempt in result.failed_attempts():
        window = next((i for i in injected
                       if i.started <= attempt.at <= (i.recovered or i.ended) + grace), None)
        if window is None:
            answer = f"{attempt.status} {attempt.error}" if attempt.status else attempt.error
            strays.append(f"{attempt.method} {attempt.path} at {attempt.at - origin:.1f} s:"
                          f" {answer}")
            continue
        window.failed_requests += 1
        window.retried_ok += attempt.recovered
    return strays


def recoveries(injected: list[Injected], result: load.LoadResult) -> None:
    """A fault is over for users once a booking requested after it began is confirmed."""
    confirmed = sorted((s.requested, s.final) for s in result.sessions
                       if s.final_status == "CONFIRMED" and s.final is not None)
    for item in injected:
        after = [final for requested, final in confirmed if requested >= item.started]
        item.recovered = min(after) if after else None


def run(rate: float, duration: float, names: list[str], workdir: Path, gap: float) -> Report:
    faults_file = workdir / "faults.json"
    stack = Stack(StackConfig(
        workdir=workdir, port=free_port(), hold_ttl_seconds=HOLD_TTL_SECONDS,
        sweep_interval_seconds=SWEEP_INTERVAL_SECONDS, threads=16,
        access_token_ttl_seconds=LOAD_RUN_TOKEN_TTL_SECONDS,
        env={**LOAD_RUN_ENV, faults.FAULTS_FILE_VARIABLE: str(faults_file),
             DELIVERY_TIMEOUT_VARIABLE: str(DELIVERY_TIMEOUT_SECONDS),
             "PAYMENT_RECONCILE_AFTER_SECONDS": str(RECONCILE_AFTER_SECONDS),
             "PAYMENT_RECONCILE_INTERVAL_SECONDS": str(RECONCILE_INTERVAL_SECONDS)},
        progress=lambda step: console.say(f"  {step} ...")))
    chosen = [f for f in ALL_FAULTS if f.name in names]
    console.say(f"Starting a fresh stack in {workdir}")
    with stack:
        assert stack.runtime is not None
        seed.seed_admin(stack.runtime, ADMIN_EMAIL, ADMIN_PASSWORD)
        admin = ApiClient(stack.api_url).login(ADMIN_EMAIL, ADMIN_PASSWORD)
        capacity = int(rate * duration * 1.2) + 50
        courses = [str(admin.publish_course(min(capacity, 10_000), title=f"Chaos {i}")["course_id"])
                   for i in range(max(1, -(-capacity // 10_000)))]
        console.say("registering the load's users ...")
        users = load.register_users(stack.api_url, 32)
        profile = load.Profile(
            rate=rate, duration=duration, mix=MIX, seed=7,
            session=load.SessionSettings(step_timeout=120.0, expiry_grace=60.0),
            retry=load.RetryPolicy(attempts=40, first_backoff=0.1, max_backoff=2.0))
        console.say(f"offering {rate:g} bookings/s for {duration:g} s, with {len(chosen)} faults"
                    " one at a time:")
        origin = time.time()
        running = load.start(load.Target(stack.api_url, users, courses), profile)
        injected: list[Injected] = []
        first = min(10.0, duration / 6)
        for index, fault in enumerate(chosen):
            time.sleep(max(0.0, origin + first + index * gap - time.time()))  # the schedule
            injected.append(inject(stack, fault, faults_file, origin))
        console.say("waiting for the last sessions to end ...")
        result = running.join()
        recoveries(injected, result)
        strays = attribute(injected, result, grace=5.0, origin=origin)
        console.say("waiting for the saga to come to rest (nothing held, sent or handled"
                    " any more) ...")
        drain(stack)
        console.say("checking what users and operators rely on ...")
        checks = run_checks(stack, result, strays)
        console.say("stopping the stack ...")
    return Report(rate, duration, origin, injected, checks, len(result.sessions))


def logged_errors(workdir: Path) -> list[str]:
    """The error lines of every process's log, with a plain-text traceback that follows one:
    what a failed check needs to be understood after the stack's folder is gone."""
    markers = ('"level": "error"', '"level": "critical"', "[ERROR]", " ERROR: ", "Traceback")
    found: list[str] = []
    for path in sorted(workdir.glob("*.log")):
        following = 0
        for line in path.read_text(errors="replace").splitlines():
            if any(marker in line for marker in markers):
                found.append(f"{path.stem}: {line[:2000]}")
                following = 25
            elif following and not line.startswith(("{", "[")):
                found[-1] += "\n    " + line[:300]
                following -= 1
            else:
                following = 0
    return found


@console.command("chaos")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    # Below the highest rate a small machine sustains with the payment provider in the loop
    # (its fake server: three calls and a webhook a booking), so what fails is the faults'
    # doing, not the load's (the figures: docs, Performance and Reliability).
    parser.add_argument("--rate", type=float, default=15.0, help="bookings offered per second")
    parser.add_argument("--duration", type=float, help="seconds of load (default: 180, short 60)")
    parser.add_argument("--short", action="store_true",
                        help="the version make test runs: one kill of each function host,"
                             " a broker freeze and a Redis restart in a minute")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--keep", type=Path,
                        help="run the stack in this folder and keep its logs (default: a"
                             " temporary folder, removed afterwards)")
    args = parser.parse_args(argv)
    console.quiet("kafka")  # its complaints about the broker the run freezes on purpose
    names = SHORT_FAULTS if args.short else [f.name for f in ALL_FAULTS]
    duration = args.duration or (60.0 if args.short else 180.0)
    gap = (duration - min(10.0, duration / 6)) / len(names)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        report = run(args.rate, duration, names, args.keep, gap)
        errors = logged_errors(args.keep) if not report.ok else []
    else:
        with tempfile.TemporaryDirectory(prefix="marketplace-chaos-") as tmp:
            report = run(args.rate, duration, names, Path(tmp), gap)
            errors = logged_errors(Path(tmp)) if not report.ok else []
    if errors:
        console.say("errors the stack logged (the last 10):\n  " + "\n  ".join(errors[-10:]))
    console.say()
    console.say(report.render())
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
