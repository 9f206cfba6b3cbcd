"""`make bench BENCH_ARGS="--idle 60"`: what the `make run` stack costs when nothing happens.

    python -m local.measure.bench --idle [SECONDS] [--settle 10] [--json PATH]

A stack at rest still spends CPU: consumers poll the broker, schedules tick,
servers keep their timers. Those costs are per second, not per booking, so
the load bench spreads them thinly and hides them. This starts the stack
`make run` starts (`local.stack.run`: the same `Stack`, the admin and the demo
course seeded), waits until `/healthz` answers 200 and then `--settle`
seconds more (start-up's last work: the consumers joining their groups, the
first schedules), and reads every process's CPU from /proc over the window
(`local.measure.cpu`): % of one core per process and for the stack in total.
The fake payment provider is on its own line, not in the total (it stands in
for Stripe), and so is the stack's parent process (`make run`'s own; here this
command), which only holds the stack.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from local import console
from local.measure import cpu
from local.measure.bench import reference_loop_ms
from local.stack import seed
from local.stack.embedded import free_port
from local.stack.stack import PAYMENTS, Stack, StackConfig

SETTLE_SECONDS = 10.0
DEFAULT_SECONDS = 60.0
PARENT = "parent process"  # the process holding the stack: `make run`'s own
NOT_IN_STACK_TOTAL = (PAYMENTS, PARENT)
HEALTHY_WITHIN_SECONDS = 180.0


@dataclass(frozen=True)
class IdleSample:
    at: float  # time.monotonic()
    roles: dict[str, float]  # CPU seconds so far of each role's process tree
    parent: float  # CPU seconds of the parent process alone
    machine: float  # busy CPU seconds of the whole machine since boot


def sample(roles: dict[str, int], parent_seconds: float) -> IdleSample:
    return IdleSample(time.monotonic(), cpu.tree_seconds(roles), parent_seconds,
                      cpu.machine_busy_seconds()[0])


def report(before: IdleSample, after: IdleSample, settle: float) -> dict[str, Any]:
    """% of one core per role over the window; the total leaves out the provider and parent."""
    window = after.at - before.at

    def pct(seconds: float) -> float:
        return round(100 * max(0.0, seconds) / window, 2)

    spent = {role: after.roles[role] - before.roles.get(role, 0.0) for role in after.roles}
    shares = {role: pct(seconds) for role, seconds in sorted(spent.items())}
    shares[PARENT] = pct(after.parent - before.parent)
    shares["stack total"] = pct(sum(s for r, s in spent.items() if r not in NOT_IN_STACK_TOTAL))
    ours = sum(max(0.0, s) for s in spent.values()) + max(0.0, after.parent - before.parent)
    busy = after.machine - before.machine
    return {"window_s": round(window, 2), "settle_s": settle,
            "cpu_pct_of_one_core": shares, "stack_total_excludes": list(NOT_IN_STACK_TOTAL),
            "machine_busy_cores": round(busy / window, 2),
            "other_processes_busy_cores": round(max(0.0, busy - ours) / window, 2),
            "cores": os.cpu_count() or 1}


def wait_healthy(url: str, alive: Callable[[], bool] = lambda: True,
                 timeout: float = HEALTHY_WITHIN_SECONDS) -> None:
    """Until `url` (a `/healthz`) answers 200; RuntimeError if it does not in time or dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("the stack exited before /healthz answered 200")
        with contextlib.suppress(OSError, urllib.error.URLError), \
                urllib.request.urlopen(url, timeout=2) as answer:
            if answer.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f} s")


@contextlib.contextmanager
def run_stack(workdir: Path, progress: Callable[[str], None]) -> Iterator[Stack]:
    """The stack `make run` starts (`local.stack.run`), on a free port; stopped on exit."""
    stack = Stack(StackConfig(workdir=workdir, port=free_port(), progress=progress,
                              env={"LOG_FORMAT": os.environ.get("LOG_FORMAT") or "text"}))
    try:
        stack.start(pending=["admin account and demo course"])
        assert stack.runtime is not None
        admin_id, _ = seed.seed_admin(
            stack.runtime, os.environ.get("ADMIN_EMAIL", "admin@marketplace.local"),
            os.environ.get("ADMIN_PASSWORD"))
        seed.seed_demo_course(stack.runtime, admin_id)
        stack.mark_ready()
        yield stack
    finally:
        console.quiet("kafka")  # sockets closing under it
        stack.stop()


def measure(seconds: float, settle: float, progress: Callable[[str], None]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="marketplace-idle-") as tmp, \
            run_stack(Path(tmp), progress) as stack:
        wait_healthy(f"{stack.api_url}/healthz")
        progress(f"up; settling {settle:.0f} s, then measuring {seconds:.0f} s")
        time.sleep(settle)
        before = sample(stack.pids(), cpu.own_seconds())
        time.sleep(seconds)
        after = sample(stack.pids(), cpu.own_seconds())
    return report(before, after, settle)


def lines(figures: dict[str, Any]) -> list[str]:
    """The CPU table: the total, each process by share, then the provider and the parent."""
    shares: dict[str, float] = figures["cpu_pct_of_one_core"]
    aside = {*NOT_IN_STACK_TOTAL, "stack total"}
    rows = [("stack total", shares["stack total"])]
    rows += sorted(((r, v) for r, v in shares.items() if r not in aside), key=lambda i: -i[1])
    if PAYMENTS in shares:
        rows.append((f"{PAYMENTS} (fake provider; not in total)", shares[PAYMENTS]))
    rows.append((f"{PARENT} (make run's own; not in total)", shares[PARENT]))
    return [f"    {role:<46} {value:6.2f} %" for role, value in rows]


def render(result: dict[str, Any]) -> str:
    figures = result["idle"]
    return "\n".join([
        f"Marketplace at rest ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {figures['cores']} cores):"
        f" the make run stack, {figures['window_s']:.0f} s measured {figures['settle_s']:.0f} s"
        " after /healthz answered 200",
        f"  machine speed      {result['reference_loop_ms']:.0f} ms of CPU for a 10 M-step"
        " Python loop",
        f"  machine            {figures['machine_busy_cores']:.2f} of {figures['cores']} cores"
        f" busy, {figures['other_processes_busy_cores']:.2f} of them outside the stack",
        "  CPU by process, % of one core:",
        *lines(figures),
    ])


def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle", type=float, nargs="?", const=DEFAULT_SECONDS,
                        default=DEFAULT_SECONDS, metavar="SECONDS", help="measured seconds")
    parser.add_argument("--settle", type=float, default=SETTLE_SECONDS,
                        help="seconds after /healthz answers, before measuring")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    return parser.parse_args(argv)


@console.command("bench-idle")
def main(argv: list[str] | None = None) -> None:
    args = arguments(list(sys.argv[1:] if argv is None else argv))
    console.say(f"this command's log: {console.shown(console.log_path('bench-idle'))}")
    result: dict[str, Any] = {"started": datetime.now(UTC).isoformat(),
                              "loadavg": os.getloadavg(), "reference_loop_ms": reference_loop_ms()}
    console.say("starting the make run stack ...")
    result["idle"] = measure(args.idle, args.settle, lambda step: console.say(f"  {step} ..."))
    console.say()
    console.say(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
