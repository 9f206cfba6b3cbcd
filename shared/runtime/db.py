"""PostgreSQL access: a small connection pool and transactions.

pg8000 is pure Python and has no pool of its own. A function process handles a
few requests at once (functions-framework threads), so a handful of pooled
connections is enough and saves a connect per event.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import pg8000.native
from pg8000.exceptions import DatabaseError, InterfaceError

# Transient conflicts PostgreSQL asks the client to retry.
RETRYABLE_SQLSTATES = {"40001", "40P01"}
# The server going away: shut down (fast or crash), starting up, or the link broken.
LOST_SQLSTATES = {"57P01", "57P02", "57P03"}

Row = dict[str, Any]


def connect_kwargs(url: str) -> dict[str, Any]:
    """pg8000 keyword arguments from a libpq-style URL (`?host=/dir` names a unix socket dir)."""
    parsed = urlparse(url)
    if parsed.scheme not in {"postgresql", "postgres"}:
        raise RuntimeError(f"DATABASE_URL must start with postgresql://, got {url!r}")
    query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
    kwargs: dict[str, Any] = {
        "user": unquote(parsed.username or query.get("user", "postgres")),
        "database": unquote(parsed.path.lstrip("/") or query.get("dbname", "postgres")),
    }
    if parsed.password:
        kwargs["password"] = unquote(parsed.password)
    port = parsed.port or int(query.get("port", "5432"))
    socket_dir = query.get("host", "")
    if socket_dir.startswith("/"):
        kwargs["unix_sock"] = f"{socket_dir}/.s.PGSQL.{port}"
    else:
        kwargs["host"] = parsed.hostname or socket_dir or "127.0.0.1"
        kwargs["port"] = port
    return kwargs


def sqlstate(exc: BaseException) -> str:
    if isinstance(exc, DatabaseError) and exc.args and isinstance(exc.args[0], dict):
        return str(exc.args[0].get("C", ""))
    return ""


def is_connection_lost(exc: BaseException) -> bool:
    """The connection (or the server) is gone, not the statement wrong: worth a new one."""
    code = sqlstate(exc)
    return (isinstance(exc, (InterfaceError, OSError)) or code in LOST_SQLSTATES
            or code.startswith("08"))


def is_retryable(exc: BaseException) -> bool:
    return is_connection_lost(exc) or sqlstate(exc) in RETRYABLE_SQLSTATES


class Tx:
    """One open transaction; rows come back as dicts."""

    def __init__(self, con: pg8000.native.Connection) -> None:
        self._con = con

    def all(self, sql: str, **params: Any) -> list[Row]:
        rows = self._con.run(sql, **params) or []
        names = [c["name"] for c in self._con.columns or []]
        return [dict(zip(names, row, strict=True)) for row in rows]

    def one(self, sql: str, **params: Any) -> Row | None:
        rows = self.all(sql, **params)
        return rows[0] if rows else None

    def scalar(self, sql: str, **params: Any) -> Any:
        rows = self._con.run(sql, **params) or []
        return rows[0][0] if rows else None

    def execute(self, sql: str, **params: Any) -> int:
        self._con.run(sql, **params)
        return int(self._con.row_count)


class Database:
    def __init__(self, url: str, size: int = 8) -> None:
        self.url = url
        self._kwargs = connect_kwargs(url)
        self._idle: queue.LifoQueue[pg8000.native.Connection] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)

    def _connect(self) -> pg8000.native.Connection:
        return pg8000.native.Connection(**self._kwargs, application_name="marketplace")

    @contextmanager
    def connection(self) -> Iterator[pg8000.native.Connection]:
        self._slots.acquire()
        try:
            try:
                con = self._idle.get_nowait()
            except queue.Empty:
                con = self._connect()
            healthy = False
            try:
                yield con
                healthy = True
            except BaseException as exc:
                if is_connection_lost(exc):
                    # The server restarted or failed over: the idle connections
                    # went with it, and the next request must not find them.
                    self.close()
                raise
            finally:
                if healthy:
                    self._idle.put(con)
                else:
                    _close_quietly(con)
        finally:
            self._slots.release()

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """Commit on a clean exit, roll back on any exception (and re-raise it)."""
        with self.connection() as con:
            con.run("BEGIN")
            try:
                yield Tx(con)
            except BaseException:
                with suppress(Exception):  # else `connection()` drops the connection
                    con.run("ROLLBACK")
                raise
            con.run("COMMIT")

    def close(self) -> None:
        """Close the idle connections (those in use are closed when they come back broken)."""
        while True:
            try:
                _close_quietly(self._idle.get_nowait())
            except queue.Empty:
                return


def _close_quietly(con: pg8000.native.Connection) -> None:
    with suppress(Exception):
        con.close()
