"""One measured benchmark run: open-loop load at a rate, figures from a window after warm-up.

The load runs for warm-up + window (+1 s, so arrivals are still steady when
the window closes). At the window's edges the run samples the CPU of every
process of the stack (`local.measure.cpu`), the load generator's own threads, the
local hosts' per-function counters (`local.knative.timing`) and the machine's CPU.
Latencies come from the sessions that started in the window, as the
clients saw them; confirmations are those seen in the window.

The fake payment provider is measured on its own line and left out of the
stack total: it stands in for Stripe, which a deployment does not run, so
its CPU is the test double's, not the marketplace's.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from local.apiclient import SignedIn
from local.knative.timing import BUCKETS_MS
from local.measure import cpu, load
from local.measure.load import LoadRun, Profile, Target
from local.stack.stack import PAYMENTS

NOT_IN_STACK_TOTAL = (PAYMENTS,)  # the fake provider: Stripe's part, not the marketplace's

PAYING = {"pay", "retry_post"}
# Sustainable: confirmations keep up with the offered paying rate (to within this share),
KEEP_UP = 0.9
# ... and latency does not climb through the window: the median of its last third stays
# within this factor (plus a little) of its first third's. A backlog that grows shows here.
GROWTH, GROWTH_SLACK_MS = 1.5, 100.0


@dataclass
class Sample:
    at: float  # epoch seconds
    roles: dict[str, float]  # CPU seconds per role
    generator: float  # CPU seconds of the load generator's threads
    own: float  # CPU seconds of this process
    timing: dict[str, dict[str, Any]]  # host -> function -> counters
    machine: tuple[float, float]
    loadavg: float


@dataclass
class Figures:
    rate: float
    window: float
    mix: dict[str, float]
    offered: int = 0  # sessions that started in the window
    confirmed: int = 0  # CONFIRMED seen in the window
    expected_confirmations: float = 0.0
    unexpected: int = 0
    failed_attempts: int = 0
    late_starts: int = 0
    # (when the session started, epoch seconds; latency ms)
    to_held_ms: list[tuple[float, float]] = field(default_factory=list, repr=False)
    to_confirmed_ms: list[tuple[float, float]] = field(default_factory=list, repr=False)
    cpu_ms: dict[str, float] = field(default_factory=dict)  # per confirmed booking, per role
    functions: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    hops: dict[str, dict[str, float]] = field(default_factory=dict)  # see local.measure.hops
    loadavg: tuple[float, float] = (0.0, 0.0)
    machine_busy: float = 0.0  # cores busy on average in the window, all processes
    others_busy: float = 0.0  # of which not ours (other engineers' work): noise
    cores: int = os.cpu_count() or 1
    first_problem: str | None = None
    first_failed_attempt: str | None = None  # its answer, to tell a 5xx from a reset

    @property
    def confirmed_per_s(self) -> float:
        return self.confirmed / self.window

    def latency(self, which: str) -> dict[str, float]:
        samples = self.to_held_ms if which == "held" else self.to_confirmed_ms
        return {f"p{q}": round(percentile([ms for _, ms in samples], q), 1)
                for q in (50, 95, 99)} if samples else {}

    def growing(self, which: str) -> bool:
        """Whether latency climbed through the window (a queue that keeps growing)."""
        samples = sorted(self.to_held_ms if which == "held" else self.to_confirmed_ms)
        third = len(samples) // 3
        if third < 5:
            return False
        first = percentile([ms for _, ms in samples[:third]], 50)
        last = percentile([ms for _, ms in samples[-third:]], 50)
        return last > GROWTH * first + GROWTH_SLACK_MS

    def sustainable(self, max_p99_ms: float) -> bool:
        stages = ("held", "confirmed")
        return (self.unexpected == 0
                and self.confirmed >= KEEP_UP * self.expected_confirmations
                and all(self.latency(w).get("p99", math.inf) <= max_p99_ms for w in stages)
                and not any(self.growing(w) for w in stages))

    def to_json(self) -> dict[str, Any]:
        return {
            "rate": self.rate, "window_s": self.window, "mix": self.mix, "cores": self.cores,
            "sessions_in_window": self.offered, "confirmed": self.confirmed,
            "confirmed_per_s": round(self.confirmed_per_s, 2),
            "unexpected_sessions": self.unexpected, "failed_attempts": self.failed_attempts,
            "late_starts": self.late_starts,
            "latency_growing": {w: self.growing(w) for w in ("held", "confirmed")},
            "request_to_held_ms": self.latency("held"),
            "pay_to_confirmed_ms": self.latency("confirmed"),
            "cpu_ms_per_confirmed_booking": self.cpu_ms,
            "stack_total_excludes": list(NOT_IN_STACK_TOTAL), "functions": self.functions,
            "hops_ms": self.hops,
            "loadavg_1min": {"before": self.loadavg[0], "after": self.loadavg[1]},
            "machine_busy_cores": round(self.machine_busy, 2),
            "other_processes_busy_cores": round(self.others_busy, 2),
            "first_problem": self.first_problem,
            "first_failed_attempt": self.first_failed_attempt,
        }


@dataclass
class Bench:
    """A running stack to measure: its API, its users, the pids of its processes by role."""

    base_url: str
    admin: SignedIn
    users: list[SignedIn]
    pids: Callable[[], dict[str, int]]  # role -> leader pid, read at each sample (restarts)
    hosts: dict[str, str]  # "api"/"reactions" -> base URL, for /__timing
    session: load.SessionSettings = field(default_factory=load.SessionSettings)
    # (window start, end) in epoch seconds -> "topic -> function" -> p50/p95/p99 ms
    # (local.measure.hops)
    hops: Callable[[float, float], dict[str, dict[str, float]]] | None = None

    def timing(self) -> dict[str, dict[str, Any]]:
        found = {}
        for host, url in self.hosts.items():
            with urllib.request.urlopen(url + "/__timing", timeout=10) as answer:
                found[host] = json.loads(answer.read())["functions"]
        return found

    def sample(self, run: LoadRun) -> Sample:
        return Sample(time.time(), cpu.tree_seconds(self.pids()),
                      sum(cpu.thread_seconds(run.thread_ids()).values()), cpu.own_seconds(),
                      self.timing(), cpu.machine_busy_seconds(), os.getloadavg()[0])

    def courses(self, sessions: int) -> list[str]:
        return load.publish_courses(self.admin, sessions)

    def measure(self, rate: float, window: float, warmup: float, mix: dict[str, float]
                ) -> Figures:
        total = warmup + window + 1.0
        target = Target(self.base_url, self.users, self.courses(math.ceil(rate * total)))
        run = load.start(target, Profile(rate, total, mix, session=self.session))
        try:
            edge = threading.Event()  # never set: waits for a moment of the schedule
            edge.wait(max(0.0, run.started + warmup - time.monotonic()))
            before = self.sample(run)
            edge.wait(max(0.0, run.started + warmup + window - time.monotonic()))
            after = self.sample(run)
        except BaseException:  # Ctrl-C: do not keep retrying against a stack being stopped
            run.abort()
            raise
        result = run.join()
        fig = figures(self, result, before, after, rate, mix)
        if self.hops is not None:
            fig.hops = self.hops(before.at, after.at)
        return fig


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile: a value that was actually seen."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))]


def figures(bench: Bench, result: load.LoadResult, before: Sample, after: Sample, rate: float,
            mix: dict[str, float]) -> Figures:
    window = after.at - before.at
    fig = Figures(rate, window, mix, loadavg=(before.loadavg, after.loadavg))
    cohort = [s for s in result.sessions if before.at <= s.requested < after.at]
    fig.offered = len(cohort)
    fig.unexpected = sum(1 for s in cohort if not s.ok)
    fig.failed_attempts = sum(len(s.failures) for s in cohort)
    fig.late_starts = sum(1 for s in cohort if s.requested - s.scheduled > 0.1)
    failed = next((f for s in cohort for f in s.failures), None)
    if failed is not None:
        answer = f"{failed.status} {failed.error}" if failed.status else failed.error
        fig.first_failed_attempt = f"{failed.method} {failed.path}: {answer}"
    bad = next((s for s in cohort if not s.ok), None)
    if bad is not None:
        fig.first_problem = f"{bad.behaviour} {bad.booking_id}: {bad.error or bad.final_status}"
    fig.confirmed = sum(1 for s in result.sessions if s.final_status == "CONFIRMED"
                        and s.final is not None and before.at <= s.final < after.at)
    share = sum(w for b, w in mix.items() if b in PAYING) / sum(mix.values())
    fig.expected_confirmations = rate * share * window
    fig.to_held_ms = [(s.requested, (s.held - s.requested) * 1000)
                      for s in cohort if s.held is not None]
    fig.to_confirmed_ms = [(s.requested, (s.final - s.pay_sent) * 1000) for s in cohort
                           if s.final_status == "CONFIRMED" and s.final is not None
                           and s.pay_sent is not None]
    per = 1000.0 / max(1, fig.confirmed)
    spent = {role: after.roles[role] - before.roles.get(role, 0.0) for role in after.roles}
    generator = after.generator - before.generator
    own = after.own - before.own  # the generator, and the bench's own sampling
    fig.cpu_ms = {role: round(seconds * per, 2) for role, seconds in spent.items()}
    fig.cpu_ms["stack total"] = round(sum(seconds for role, seconds in spent.items()
                                          if role not in NOT_IN_STACK_TOTAL) * per, 2)
    fig.cpu_ms["load generator"] = round(generator * per, 2)
    fig.cpu_ms["bench process, besides the generator"] = round((own - generator) * per, 2)
    busy = after.machine[0] - before.machine[0]
    fig.machine_busy = busy / window
    fig.others_busy = max(0.0, busy - sum(spent.values()) - own) / window
    fig.functions = _functions(before.timing, after.timing, window)
    return fig


def _functions(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]],
               window: float) -> dict[str, dict[str, dict[str, float]]]:
    """Per host and function: calls/s, mean wall and CPU ms, and the p99's histogram bound."""
    found: dict[str, dict[str, dict[str, float]]] = {}
    for host, functions in after.items():
        for name, stats in sorted(functions.items()):
            old = before.get(host, {}).get(name, {"count": 0, "wall_s": 0.0, "cpu_s": 0.0,
                                                  "buckets": [0] * len(stats["buckets"])})
            count = stats["count"] - old["count"]
            if count <= 0:
                continue
            buckets = [a - b for a, b in zip(stats["buckets"], old["buckets"], strict=True)]
            seen, p99 = 0, math.inf
            for index, n in enumerate(buckets):
                seen += n
                if seen >= 0.99 * count:
                    p99 = BUCKETS_MS[index] if index < len(BUCKETS_MS) else math.inf
                    break
            found.setdefault(host, {})[name] = {
                "per_s": round(count / window, 2),
                "wall_ms": round((stats["wall_s"] - old["wall_s"]) / count * 1000, 2),
                "cpu_ms": round((stats["cpu_s"] - old["cpu_s"]) / count * 1000, 2),
                "p99_wall_ms_at_most": p99,
            }
    return found
