"""Keep the local stack's own processes running, the way Kubernetes keeps a pod's container.

A function host or the triggers process that dies (a crash, an operator's
SIGKILL, the fault-injection run) is started again after a back-off that
doubles with each quick death (0.5 s up to 10 s, like a CrashLoopBackOff with
a shorter ceiling) and resets once the process has stayed up for a while.
Every restart is written to the log, so a person can see what happened.
Each child has a thread blocked in `wait()`: a death is seen at once, and
nothing runs while every child lives.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from local.stack.embedded import death_signal_preexec

log = logging.getLogger("marketplace.supervisor")

FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 10.0
STABLE_AFTER_SECONDS = 30.0


@dataclass
class Restart:
    """One restart, as the fault-injection run and the log report it."""

    role: str
    exit_code: int
    at: float  # time.time() when the death was seen
    back_after: float  # seconds of back-off before the new process started


@dataclass
class Supervised:
    """A process the supervisor keeps alive: how to start it and what became of it."""

    role: str
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff: float = FIRST_BACKOFF_SECONDS
    restarts: list[Restart] = field(default_factory=list)

    def spawn(self, long_lived_thread: bool = False) -> None:
        with self.log_path.open("ab") as output:
            self.process = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: a kill reaches its workers too
                preexec_fn=death_signal_preexec(signal.SIGTERM, long_lived_thread),
            )
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group, as a node losing the pod would."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def stop(self, grace: float = 10.0) -> None:
        if self.process is None:
            return
        self.kill(signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
            self.process.wait(5)
        self.kill(signal.SIGKILL)  # stragglers in its group (a gunicorn worker)


class Supervisor:
    """Watches every `Supervised` process from a thread of its own and restarts it when it dies."""

    def __init__(self, on_restart: Callable[[Supervised], None] | None = None) -> None:
        self.children: dict[str, Supervised] = {}
        self.on_restart = on_restart
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def add(self, child: Supervised) -> Supervised:
        """Start `child` now (from the caller's thread) and watch it from then on."""
        child.spawn()
        with self._lock:
            self.children[child.role] = child
            thread = threading.Thread(target=self._watch, args=(child,),
                                      name=f"supervisor-{child.role}", daemon=True)
            self._threads.append(thread)
        thread.start()
        return child

    def _watch(self, child: Supervised) -> None:
        while not self._stopping.is_set():
            assert child.process is not None
            code = child.process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - child.started_at > STABLE_AFTER_SECONDS:
                child.backoff = FIRST_BACKOFF_SECONDS  # it had been up a while: not a loop
            child.restarts.append(Restart(child.role, code, time.time(), child.backoff))
            log.warning("%s exited with %s; restarting in %.1f s (restart %d)",
                        child.role, _describe(code), child.backoff, len(child.restarts))
            if self._stopping.wait(child.backoff):
                return
            with self._lock:  # stop() either sees the new process or none is started
                if self._stopping.is_set():
                    return
                child.kill(signal.SIGKILL)  # what is left of its group
                # Spawned from this thread, which lives until stop(): the death
                # signal then still ties the child to the stack's lifetime.
                child.spawn(long_lived_thread=True)
            child.backoff = min(child.backoff * 2, MAX_BACKOFF_SECONDS)
            log.warning("%s restarted (pid %d)", child.role, child.pid)
            if self.on_restart is not None:
                self.on_restart(child)

    def stop(self) -> None:
        """Stop watching, then stop every child (each gets SIGTERM, then SIGKILL)."""
        with self._lock:
            self._stopping.set()
            children, self.children = list(self.children.values()), {}
            threads, self._threads = self._threads, []
        for child in reversed(children):
            child.stop()
        for thread in threads:
            thread.join(5)


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"
