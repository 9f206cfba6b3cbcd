"""`make bench`: book and pay through the HTTP API and print how fast bookings get confirmed.

Starts a fresh local stack (or drives one already running, with --url), makes
a course with enough tickets, registers one user per client, warms up, then
has C clients each book, wait for the hold, pay with `pm_card_visa` and wait
for the confirmation, until N bookings are confirmed. Prints confirmed
bookings per second, the request-to-confirmed latency, and events handled per
second by each function (from the inbox, which every reaction writes once
per event).

    python -m local.bench --bookings 200 --clients 8
    python -m local.bench --url http://127.0.0.1:8080 --admin-password ... --database-url ...
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from local import seed
from local.stack import Stack, StackConfig, free_port
from shared.db import Database

# Clients poll for the saga's progress; faster polling would load the API more than the saga.
POLL_SECONDS = 0.025


@dataclass
class Sample:
    requested: float
    held: float
    confirmed: float


@dataclass
class Driver:
    base: str
    token: str
    session: requests.Session = field(default_factory=requests.Session)

    def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        answer = self.session.request(method, self.base + path, json=body, timeout=60,
                                      headers={"Authorization": f"Bearer {self.token}"})
        if answer.status_code != expect:
            raise RuntimeError(f"{method} {path}: {answer.status_code} {answer.text}")
        return answer.json() if answer.content else None

    def wait(self, booking_id: str, status: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.call("GET", f"/bookings/{booking_id}")["status"]
            if found == status:
                return
            if found in {"REJECTED", "CANCELLED", "EXPIRED"}:
                raise RuntimeError(f"booking {booking_id} ended {found}, not {status}")
            time.sleep(POLL_SECONDS)
        raise RuntimeError(f"booking {booking_id} not {status} within {timeout} s")

    def book_and_pay(self, course_id: str) -> Sample:
        start = time.monotonic()
        booking_id = self.call("POST", "/bookings", {"course_id": course_id}, 202)["booking_id"]
        self.wait(booking_id, "AWAITING_PAYMENT")
        held = time.monotonic()
        self.call("POST", f"/bookings/{booking_id}/payment",
                  {"payment_method": "pm_card_visa"}, 202)
        self.wait(booking_id, "CONFIRMED")
        return Sample(start, held, time.monotonic())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def register(base: str) -> str:
    answer = requests.post(base + "/auth/register", timeout=60, json={
        "email": f"bench-{uuid.uuid4().hex[:12]}@example.com", "password": "benchmark-password",
        "full_name": "Bench User"})
    answer.raise_for_status()
    return str(answer.json()["access_token"])


def run(base: str, admin_token: str, db: Database | None, bookings: int, clients: int,
        warmup: int, hold_ttl: int = 600) -> None:
    admin = Driver(base, admin_token)
    course = admin.call("POST", "/courses", {
        "title": "Benchmark course", "price_cents": 1000, "currency": "EUR",
        "starts_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        "capacity": min(10_000, bookings + warmup + clients)}, 201)
    drivers = [Driver(base, register(base)) for _ in range(clients)]
    print(f"warming up with {warmup} bookings...", flush=True)
    for i in range(warmup):
        drivers[i % clients].book_and_pay(course["course_id"])

    samples: list[Sample] = []
    errors: list[str] = []
    lock = threading.Lock()
    remaining = [bookings]

    def client(driver: Driver) -> None:
        while True:
            with lock:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            try:
                sample = driver.book_and_pay(course["course_id"])
            except Exception as exc:
                with lock:
                    errors.append(str(exc))
                continue
            with lock:
                samples.append(sample)

    load_before = os.getloadavg()
    started_wall = datetime.now(UTC)
    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(d,)) for d in drivers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    load_after = os.getloadavg()

    total = [(s.confirmed - s.requested) * 1000 for s in samples]
    to_hold = [(s.held - s.requested) * 1000 for s in samples]
    print(f"""
Marketplace benchmark ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)
  machine           {os.cpu_count()} cores, load average {load_before[0]:.2f} before,
                    {load_after[0]:.2f} after (1 min)
  run               {len(samples)} bookings confirmed by {clients} clients in {elapsed:.1f} s
                    ({warmup} warm-up bookings excluded), {len(errors)} errors
  throughput        {len(samples) / elapsed:.1f} confirmed bookings/s
  request->confirmed  p50 {percentile(total, 50):.0f} ms  p95 {percentile(total, 95):.0f} ms"""
          f"""  p99 {percentile(total, 99):.0f} ms  mean {statistics.fmean(total):.0f} ms
  request->held       p50 {percentile(to_hold, 50):.0f} ms  p95 {percentile(to_hold, 95):.0f} ms"""
          f"""  p99 {percentile(to_hold, 99):.0f} ms""")
    if errors:
        print("  first error       " + errors[0])
    if db is not None:
        with db.transaction() as tx:
            rows = tx.all(
                "SELECT consumer, count(*) AS n FROM inbox WHERE handled_at >= :t"
                " GROUP BY consumer ORDER BY consumer", t=started_wall)
            stages = tx.one(
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY held - created) AS held_p50,"
                " percentile_cont(0.95) WITHIN GROUP (ORDER BY held - created) AS held_p95,"
                " percentile_cont(0.5) WITHIN GROUP (ORDER BY confirmed - paid) AS conf_p50,"
                " percentile_cont(0.95) WITHIN GROUP (ORDER BY confirmed - paid) AS conf_p95"
                " FROM (SELECT extract(epoch FROM b.created_at) * 1000 AS created,"
                "  extract(epoch FROM b.hold_expires_at) * 1000 - :ttl * 1000 AS held,"
                "  extract(epoch FROM p.updated_at) * 1000 AS paid,"
                "  extract(epoch FROM b.updated_at) * 1000 AS confirmed"
                "  FROM bookings b JOIN payments p USING (booking_id)"
                "  WHERE b.status = 'CONFIRMED' AND b.created_at >= :t) AS s",
                t=started_wall, ttl=hold_ttl)
        if stages and stages["held_p50"] is not None:
            print("  server side, from the database's timestamps (no client polling in them):")
            print(f"    requested->held    p50 {stages['held_p50']:.0f} ms"
                  f"  p95 {stages['held_p95']:.0f} ms")
            print(f"    paid->confirmed    p50 {stages['conf_p50']:.0f} ms"
                  f"  p95 {stages['conf_p95']:.0f} ms")
        print("  events handled per second, by function (measured window):")
        for r in rows:
            print(f"    {r['consumer']:<22} {r['n'] / elapsed:8.1f}/s  ({r['n']} events)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bookings", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--url", help="a running stack's API (default: start a fresh one)")
    parser.add_argument("--admin-email", default=os.environ.get("ADMIN_EMAIL",
                                                                "admin@marketplace.local"))
    parser.add_argument("--admin-password", default=os.environ.get("ADMIN_PASSWORD", ""))
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""),
                        help="with --url: read per-function figures from this database")
    args = parser.parse_args(argv)

    if args.url:
        login = requests.post(args.url + "/auth/login", timeout=30, json={
            "email": args.admin_email, "password": args.admin_password})
        login.raise_for_status()
        db = Database(args.database_url) if args.database_url else None
        run(args.url, login.json()["access_token"], db, args.bookings, args.clients, args.warmup,
            int(os.environ.get("HOLD_TTL_SECONDS", "600")))
        return

    with tempfile.TemporaryDirectory(prefix="marketplace-bench-") as tmp:
        print("starting a fresh local stack...", flush=True)
        with Stack(StackConfig(workdir=Path(tmp), port=free_port())) as stack:
            assert stack.runtime is not None
            seed.seed_admin(stack.runtime, "admin@marketplace.local", "bench-admin-password")
            login = requests.post(stack.api_url + "/auth/login", timeout=30, json={
                "email": "admin@marketplace.local", "password": "bench-admin-password"})
            run(stack.api_url, login.json()["access_token"], stack.runtime.db,
                args.bookings, args.clients, args.warmup, stack.runtime.settings.hold_ttl_seconds)


if __name__ == "__main__":
    main()
