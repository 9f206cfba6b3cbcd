"""`make run`'s process: its first 200 from /healthz means usable, it runs as root from a
private folder, and Ctrl-C (even pressed twice) leaves nothing running."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.helpers.ports import free_port
from tests.helpers.waiting import eventually

ROOT = Path(__file__).resolve().parents[3]


@contextmanager
def make_run(tmp_path: Path, root: Path = ROOT, python: str = sys.executable
             ) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """`python -m local.stack.run` from `root`; yields the process, its API URL and its workdir."""
    port = free_port()
    workdir = tmp_path / "work"
    with (tmp_path / "run.log").open("w") as log:
        run = subprocess.Popen([python, "-m", "local.stack.run", "--port", str(port),
                                "--workdir", str(workdir)],
                               cwd=root, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONPATH": str(root)})
        try:
            yield run, f"http://127.0.0.1:{port}", workdir
        finally:
            if run.poll() is None:
                run.send_signal(signal.SIGINT)
                try:
                    run.wait(60)
                except subprocess.TimeoutExpired:
                    run.kill()


def run_log(run: subprocess.Popen[bytes]) -> str:
    log = Path(str(run.args[-1])).parent / "run.log"  # make_run's: beside its workdir
    return log.read_text()[-2000:]


def first_healthy(api: str, run: subprocess.Popen[bytes], timeout: float = 120.0
                  ) -> list[requests.Response]:
    """Poll /healthz as a script would, until its first 200; returns every answer seen."""
    seen: list[requests.Response] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert run.poll() is None, f"make run exited while starting: {run_log(run)}"
        try:
            seen.append(requests.get(api + "/healthz", timeout=10))
        except requests.ConnectionError:
            time.sleep(0.05)  # nothing listens yet: there is no answer to wait for
            continue
        if seen[-1].status_code == 200:
            return seen
    raise AssertionError(f"/healthz not 200 within {timeout} s; last: {seen[-1:]}")


def assert_admin_logs_in_at_once(api: str, workdir: Path, answers: list[requests.Response]
                                 ) -> None:
    """The moment /healthz first says 200, the admin's password is there and works."""
    login = requests.post(api + "/auth/login", timeout=10, json={
        "email": "admin@marketplace.local",
        "password": (workdir / "admin-password").read_text()})
    assert login.status_code == 200, login.text
    for answer in answers[:-1]:  # before that: 503, saying what is still starting
        assert answer.status_code == 503, answer.text
        assert answer.headers["Content-Type"] == "application/problem+json"
        assert answer.json()["starting"], answer.text


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc (Linux)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def alive(pids: set[int]) -> set[int]:
    still = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            still.add(pid)
    return still


def test_first_200_from_healthz_means_the_admin_can_log_in(tmp_path: Path) -> None:
    with make_run(tmp_path) as (run, api, workdir):
        answers = first_healthy(api, run)
        assert_admin_logs_in_at_once(api, workdir, answers)
        assert "Marketplace is up." in (tmp_path / "run.log").read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="the private-folder problem is root's: as root,"
                    " PostgreSQL runs as another user; run the suite as root to check it")
def test_runs_as_root_from_a_private_folder(tmp_path: Path) -> None:
    """A fresh clone in a mode-700 folder, with its own virtualenv inside, serves and logs in.

    The virtualenv is the suite's own, hard-linked (seconds, where an install
    takes minutes): what matters is that every file lives below the private
    folder, where PostgreSQL's service user cannot enter.
    """
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    clone = private / "app"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    for changed in ("local", "shared", "functions"):  # the work tree as it is, committed or not
        shutil.rmtree(clone / changed)
        shutil.copytree(ROOT / changed, clone / changed,
                        ignore=shutil.ignore_patterns("__pycache__"))
    venv = Path(sys.prefix)
    if subprocess.run(["cp", "-al", str(venv), str(clone / ".venv")]).returncode != 0:
        shutil.rmtree(clone / ".venv", ignore_errors=True)  # another file system: copy
        subprocess.run(["cp", "-a", str(venv), str(clone / ".venv")], check=True)
    python = str(clone / ".venv" / "bin" / "python")
    assert private.stat().st_mode & 0o777 == 0o700
    with make_run(tmp_path, clone, python) as (run, api, workdir):
        assert_admin_logs_in_at_once(api, workdir, first_healthy(api, run))
    assert private.stat().st_mode & 0o777 == 0o700  # nothing loosened the user's folder


def test_ctrl_c_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "run.log").open("w")
    run = subprocess.Popen([sys.executable, "-m", "local.stack.run", "--port", str(port),
                            "--workdir", str(tmp_path / "work")],
                           cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        eventually(lambda: (tmp_path / "run.log").read_text(), lambda text: "is up" in text,
                   timeout=120, interval=0.5, what="make run serving")
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        started = descendants(run.pid)
        assert len(started) >= 7  # five servers and two function hosts at least
        for _ in range(30):  # an impatient user: Ctrl-C again and again must not stop the cleanup
            run.send_signal(signal.SIGINT)
            time.sleep(0.002)
        assert run.wait(60) == 0
        eventually(lambda: alive(started), lambda left: not left, timeout=20,
                   what="every child process gone")
    finally:
        if run.poll() is None:
            run.kill()
        log.close()
