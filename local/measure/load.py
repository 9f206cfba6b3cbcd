"""An open-loop load generator for the booking saga, shared by `make bench` and the chaos run.

Open loop: sessions arrive on schedule (`rate` per second for `duration`
seconds) whether or not earlier ones finished, as real users do, so a slow
system meets a growing backlog instead of a politely slower client. Each
session is one booking by one of the pre-registered users, playing one
behaviour of a mix, and it waits for the saga with the long-poll
(`GET /bookings/{id}?wait_for=`), never a polling loop:

    pay         wait for AWAITING_PAYMENT, pay pm_card_visa, wait for CONFIRMED
    decline     ... pay pm_card_chargeDeclined -> CANCELLED payment_failed
    cancel      ... POST /cancel -> CANCELLED user_cancelled
    expire      never pays -> EXPIRED hold_expired
    late_pay    pays after hold_expires_at: 409, then EXPIRED
    retry_post  POSTs twice with one Idempotency-Key (same booking id), then pays

Every request is retried on connection errors and 5xx (`local.apiclient`)
and every failed attempt is kept; every session records its booking id,
timestamps (seconds since the epoch, from a monotonic clock), what it saw
and what it expected. `LoadResult` holds it all for a report or for checks
against the database.

    target = Target(base_url, register_users(base_url, 20), [course_id])
    result = run(target, Profile(rate=20, duration=60, mix={"pay": 0.9, "expire": 0.1}))
    assert not result.unexpected()

`start()` instead of `run()` returns at once, for a caller that injects
faults or samples CPU while the load runs.
"""

from __future__ import annotations

import math
import random
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from local.apiclient import ApiClient, FailedAttempt, RetryPolicy, SignedIn
from local.measure.sessions import BEHAVIOURS, Clock, SessionRecord, SessionSettings, play

__all__ = [
    "BEHAVIOURS",
    "ApiClient",
    "FailedAttempt",
    "LoadResult",
    "LoadRun",
    "Profile",
    "RetryPolicy",
    "SessionRecord",
    "SessionSettings",
    "SignedIn",
    "Target",
    "publish_courses",
    "register_users",
    "run",
    "start",
]


@dataclass(frozen=True)
class Profile:
    """What load to offer: arrivals, the mix of behaviours, and how patient sessions are."""

    rate: float  # sessions per second
    duration: float  # seconds of arrivals
    mix: Mapping[str, float] = field(default_factory=lambda: {"pay": 1.0})
    workers: int = 512  # sessions in flight at most; beyond that, arrivals queue (and say so)
    poisson: bool = False  # exponential gaps instead of even spacing
    seed: int | None = None  # for Poisson gaps
    session: SessionSettings = field(default_factory=SessionSettings)
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        unknown = set(self.mix) - set(BEHAVIOURS)
        if unknown:
            raise ValueError(f"unknown behaviours {sorted(unknown)}; use {sorted(BEHAVIOURS)}")
        if self.rate <= 0 or self.duration <= 0 or sum(self.mix.values()) <= 0:
            raise ValueError("rate, duration and the mix's weights must be positive")


@dataclass
class Target:
    """Where to send the load: the API, its users (pre-registered) and the courses to book."""

    base_url: str
    users: list[SignedIn]
    course_ids: list[str]


@dataclass
class LoadResult:
    profile: Profile
    started: float  # epoch seconds of the first scheduled arrival
    arrivals_ended: float
    finished: float
    sessions: list[SessionRecord]
    cpu_seconds: float  # the generator's own CPU (its threads), for its cost

    def unexpected(self) -> list[SessionRecord]:
        """Sessions that did not end as their behaviour expects."""
        return [s for s in self.sessions if not s.ok]

    def failed_attempts(self) -> list[FailedAttempt]:
        return [a for s in self.sessions for a in s.failures]

    def by_behaviour(self) -> dict[str, list[SessionRecord]]:
        grouped: dict[str, list[SessionRecord]] = {}
        for session in self.sessions:
            grouped.setdefault(session.behaviour, []).append(session)
        return grouped

    def late_starts(self, tolerance: float = 0.1) -> int:
        """Sessions that started later than scheduled (the generator could not keep up)."""
        return sum(1 for s in self.sessions if s.requested - s.scheduled > tolerance)

    def summary(self) -> str:
        lines = [f"{len(self.sessions)} sessions in {self.finished - self.started:.1f} s,"
                 f" {len(self.unexpected())} unexpected,"
                 f" {len(self.failed_attempts())} failed attempts"]
        for behaviour, sessions in sorted(self.by_behaviour().items()):
            finals: dict[str, int] = {}
            for s in sessions:
                finals[str(s.final_status)] = finals.get(str(s.final_status), 0) + 1
            lines.append(f"  {behaviour:<10} {len(sessions):5d}  {finals}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "rate": self.profile.rate, "duration": self.profile.duration,
            "mix": dict(self.profile.mix), "started": self.started,
            "arrivals_ended": self.arrivals_ended, "finished": self.finished,
            "cpu_seconds": self.cpu_seconds,
            "sessions": [s.to_json() for s in self.sessions],
        }


class LoadRun:
    """One run of a profile against a target; `start()`, then `join()` for the result."""

    def __init__(self, target: Target, profile: Profile) -> None:
        if not target.users or not target.course_ids:
            raise ValueError("a target needs at least one user and one course")
        self.target = target
        self.profile = profile
        self.clock = Clock()
        self.client = ApiClient(target.base_url, profile.retry, clock=self.clock.now)
        self.stopping = threading.Event()
        self._futures: list[Future[SessionRecord]] = []
        self._thread_ids: list[int] = []
        self._ids_lock = threading.Lock()
        self._cpu = 0.0
        self._pool = ThreadPoolExecutor(profile.workers, thread_name_prefix="load",
                                        initializer=self._register_thread)
        self._scheduler = threading.Thread(target=self._schedule, name="load-scheduler",
                                           daemon=True)
        self.started = 0.0  # monotonic time of the first arrival
        self.arrivals_ended = 0.0

    def _register_thread(self) -> None:
        with self._ids_lock:
            self._thread_ids.append(threading.get_native_id())

    def thread_ids(self) -> list[int]:
        """Native ids of the generator's threads, to read their CPU from /proc/self/task."""
        with self._ids_lock:
            return list(self._thread_ids)

    def start(self) -> LoadRun:
        self.started = time.monotonic()
        self._scheduler.start()
        return self

    def stop(self) -> None:
        """Offer no more sessions; those under way play to their end."""
        self.stopping.set()

    def abort(self) -> None:
        """Offer no more sessions and retry nothing more: for Ctrl-C, or a stack gone."""
        self.stopping.set()
        self.client.give_up.set()

    def _schedule(self) -> None:
        self._register_thread()
        cpu_start = time.thread_time()
        profile = self.profile
        rng = random.Random(profile.seed)
        mix = _Interleave(profile.mix)
        at, index = self.started, 0
        end = self.started + profile.duration
        while at < end and not self.stopping.is_set():
            if self.stopping.wait(max(0.0, at - time.monotonic())):
                break
            behaviour = mix.next()
            user = self.target.users[index % len(self.target.users)]
            course = self.target.course_ids[index % len(self.target.course_ids)]
            scheduled = self.clock.at(at)
            self._futures.append(self._pool.submit(
                play, self.client, profile.session, self.clock, index, behaviour, user, course,
                scheduled))
            index += 1
            at = (at + rng.expovariate(profile.rate) if profile.poisson
                  else self.started + index / profile.rate)  # no drift from adding floats
        self.arrivals_ended = time.monotonic()
        self._cpu += time.thread_time() - cpu_start

    def join(self) -> LoadResult:
        """Wait for the arrivals to end and every session to finish; the result."""
        self._scheduler.join()
        sessions = [f.result() for f in self._futures]
        self._pool.shutdown(wait=True)
        return LoadResult(self.profile, self.clock.at(self.started),
                          self.clock.at(self.arrivals_ended), self.clock.now(), sessions,
                          self._cpu + sum(s.cpu_seconds for s in sessions))


class _Interleave:
    """Behaviours in the mix's exact proportions, spread evenly (smooth weighted round robin).

    Deterministic rather than drawn at random, so a short run still plays every
    behaviour its share and two runs of one profile offer the same sequence.
    """

    def __init__(self, mix: Mapping[str, float]) -> None:
        self.weights = {name: weight for name, weight in mix.items() if weight > 0}
        self.total = sum(self.weights.values())
        self.current = dict.fromkeys(self.weights, 0.0)

    def next(self) -> str:
        for name, weight in self.weights.items():
            self.current[name] += weight
        chosen = max(self.current, key=lambda name: self.current[name])
        self.current[chosen] -= self.total
        return chosen


def start(target: Target, profile: Profile) -> LoadRun:
    return LoadRun(target, profile).start()


def run(target: Target, profile: Profile) -> LoadResult:
    return start(target, profile).join()


# --- setting up a target -------------------------------------------------------------------


COURSE_TICKETS = 10_000  # the most tickets a course may have (the API's limit)


def publish_courses(admin: SignedIn, sessions: int) -> list[str]:
    """Enough courses for `sessions` bookings and a few spare, as few as the API allows."""
    capacity = sessions + 20
    count = math.ceil(capacity / COURSE_TICKETS)
    return [str(admin.publish_course(math.ceil(capacity / count))["course_id"])
            for _ in range(count)]


def register_users(base_url: str, count: int, workers: int = 4) -> list[SignedIn]:
    """`count` fresh users (registered in parallel: each costs a password hash)."""
    client = ApiClient(base_url)
    password = "load-" + uuid.uuid4().hex

    def one(_: int) -> SignedIn:
        return client.register(f"load-{uuid.uuid4().hex[:16]}@example.com", password,
                               "Load User")

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, range(count)))
