"""PostgreSQL access: a small connection pool, prepared statements and transactions.

pg8000 is pure Python and has no pool of its own. A function process handles a
few requests at once (functions-framework threads), so a handful of pooled
connections is enough and saves a connect per event.

Every statement with parameters runs as a named prepared statement, kept per
connection: pg8000 runs an unnamed one in three round trips (parse, describe
and bind, execute) and rewrites its `:name` placeholders in Python each time,
while a prepared one is a single bind-and-execute. The SQL in this code base
is a fixed set of strings, so the cache stays small.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import pg8000.native
from pg8000.converters import timestamptz_in as pg8000_timestamptz_in
from pg8000.exceptions import DatabaseError, InterfaceError

from shared.runtime import pgtls

# Transient conflicts PostgreSQL asks the client to retry.
RETRYABLE_SQLSTATES = {"40001", "40P01"}
# The server going away: shut down (fast or crash), starting up, or the link broken.
LOST_SQLSTATES = {"57P01", "57P02", "57P03"}
# A prepared statement outlived the schema it was planned for (a migration
# altered a table, say): forget the connection's statements and run again.
STALE_STATEMENT_SQLSTATES = {"0A000", "26000"}
STATEMENTS_PER_CONNECTION = 200

Row = dict[str, Any]


def connect_kwargs(url: str) -> dict[str, Any]:
    """pg8000 keyword arguments from a libpq-style URL (`?host=/dir` names a unix socket dir,
    `?sslmode=` as libpq's, see `pgtls`)."""
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
    tls = pgtls.context(query.get("sslmode", "prefer"), unix_socket="unix_sock" in kwargs)
    if tls is not None:
        kwargs["ssl_context"] = tls
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


def is_stale_statement(exc: BaseException) -> bool:
    return sqlstate(exc) in STALE_STATEMENT_SQLSTATES


def is_retryable(exc: BaseException) -> bool:
    return (is_connection_lost(exc) or is_stale_statement(exc)
            or sqlstate(exc) in RETRYABLE_SQLSTATES)


TIMESTAMPTZ_OID = 1184


def timestamptz_in(text: str) -> Any:
    """PostgreSQL's `2026-12-04 01:23:45.123456+00` as an aware datetime.

    pg8000's own reader goes through `strptime`, 60 times slower: it was 5 to
    7% of a function host's CPU (py-spy, 15 bookings/s), a booking row holding
    several timestamps. What `fromisoformat` cannot read (infinity, BC, years
    past 9999) goes to pg8000's.
    """
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return pg8000_timestamptz_in(text)


class Connection(pg8000.native.Connection):  # type: ignore[misc]
    """A pg8000 connection that prepares each parameterised statement once."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.register_in_adapter(TIMESTAMPTZ_OID, timestamptz_in)
        self.statements: dict[str, pg8000.native.PreparedStatement] = {}

    def statement(self, sql: str) -> pg8000.native.PreparedStatement:
        prepared = self.statements.get(sql)
        if prepared is None:
            if len(self.statements) >= STATEMENTS_PER_CONNECTION:
                self.forget_statements()
            prepared = self.statements[sql] = self.prepare(sql)
        return prepared

    def forget_statements(self) -> None:
        statements, self.statements = self.statements, {}
        for prepared in statements.values():
            with suppress(Exception):
                prepared.close()


class Tx:
    """One open transaction; rows come back as dicts."""

    def __init__(self, con: Connection) -> None:
        self._con = con

    def _run(self, sql: str, params: dict[str, Any]) -> tuple[list[Any], Any]:
        """Rows and the statement's context (columns, row count)."""
        if not params:
            rows = self._con.run(sql)
            return rows or [], self._con
        prepared = self._con.statement(sql)
        return prepared.run(**params) or [], prepared._context

    def all(self, sql: str, **params: Any) -> list[Row]:
        rows, context = self._run(sql, params)
        names = [c["name"] for c in context.columns or []]
        return [dict(zip(names, row, strict=True)) for row in rows]

    def one(self, sql: str, **params: Any) -> Row | None:
        rows = self.all(sql, **params)
        return rows[0] if rows else None

    def scalar(self, sql: str, **params: Any) -> Any:
        rows, _ = self._run(sql, params)
        return rows[0][0] if rows else None

    def execute(self, sql: str, **params: Any) -> int:
        _, context = self._run(sql, params)
        return int(context.row_count)


class Database:
    def __init__(self, url: str, size: int = 8) -> None:
        self.url = url
        self._kwargs = connect_kwargs(url)
        self._idle: queue.LifoQueue[Connection] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)

    def _connect(self) -> Connection:
        return Connection(**self._kwargs, application_name="marketplace")

    @contextmanager
    def connection(self) -> Iterator[Connection]:
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
                elif is_stale_statement(exc):
                    healthy = True  # the connection is fine; its statements are not
                    con.forget_statements()
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


def _close_quietly(con: Connection) -> None:
    with suppress(Exception):
        con.close()
