"""Another tree's `make run` at rest, measured from outside through /proc.

For `--idle --against REF` when REF's bench has no `--idle` of its own: its
stack cannot be started through this tree's code (that would measure this
tree), so its own `make run` module runs as a subprocess in its folder, on a
free PORT, and its process tree is read from /proc. Its children are told
apart by their command lines (`role`), as `Stack.pids()` would name them, and
the figures take the same shape as `local.measure.idle`'s, so the comparison
reads both alike. The run module's own process is the parent, as in `idle`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from local.measure import cpu, idle
from local.stack.embedded import free_port

STOP_WITHIN_SECONDS = 60.0
# A child's role from a word of its command line: (test on one argument, role).
_BY_ARGUMENT = (
    (lambda arg: arg.endswith("fakestripe"), "payments"),
    (lambda arg: arg.endswith(".triggers"), "triggers"),
    (lambda arg: arg == "moto.server", "aws"),
    (lambda arg: _program(arg).startswith("tansu"), "kafka"),
    (lambda arg: _program(arg) == "postgres", "postgres"),
    (lambda arg: _program(arg) == "redis-server", "redis"),
    (lambda arg: _program(arg) == "osmem-server", "search"),
)


def _program(arg: str) -> str:
    """A program's name from an argument; redis retitles itself "redis-server HOST:PORT"."""
    return Path(arg.split(" ")[0]).name


def role(argv: list[str]) -> str:
    """`Stack.pids()`'s name for a child of a run, from its command line."""
    for index, arg in enumerate(argv):
        if arg.endswith(".host") and index + 1 < len(argv):  # -m local.knative.host api
            return argv[index + 1]
    for test, name in _BY_ARGUMENT:
        if any(test(arg) for arg in argv):
            return name
    return _program(argv[0]) if argv else "unknown"


def roles_of(leader: int) -> dict[str, int]:
    """Each child of `leader` by role (a second one of a role is named by its pid too)."""
    found: dict[str, int] = {}
    for child in cpu.children(leader):
        name = role(cpu.command_line(child))
        found[name if name not in found else f"{name} ({child})"] = child
    return found


@contextlib.contextmanager
def started(tree: Path, module: str, log: Path, env: dict[str, str] | None = None
            ) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`python -m module` in `tree` on a free PORT, once its /healthz answers: (process, port).

    Its state goes to a folder of its own next to `log` when the module takes
    `--workdir`: `make run` empties its default folder (`.local/run`), which in
    this tree may be a person's running stack. Stopped, and that folder
    removed, on exit.
    """
    port = free_port()
    argv = [sys.executable, "-m", module]
    if '"--workdir"' in (tree / (module.replace(".", "/") + ".py")).read_text():
        argv += ["--workdir", str(log.with_suffix(".workdir"))]
    with log.open("ab") as output:
        process = subprocess.Popen(argv, cwd=tree, env={**os.environ, **(env or {}),
                                                        "PORT": str(port)},
                                   stdin=subprocess.DEVNULL, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        idle.wait_healthy(f"http://127.0.0.1:{port}/healthz", lambda: process.poll() is None)
        yield process, port
    finally:
        stop(process)
        shutil.rmtree(log.with_suffix(".workdir"), ignore_errors=True)


def measure(tree: Path, module: str, seconds: float, settle: float, log: Path
            ) -> dict[str, Any]:
    """`python -m module` in `tree` (`started`): `idle.report` over `seconds` at rest."""
    with started(tree, module, log) as (process, _):
        time.sleep(settle)
        before = idle.sample(roles_of(process.pid), cpu.own_process_seconds(process.pid))
        time.sleep(seconds)
        after = idle.sample(roles_of(process.pid), cpu.own_process_seconds(process.pid))
    return idle.report(before, after, settle)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, as a person stops `make run`; killed with its group if it does not stop."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_WITHIN_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
