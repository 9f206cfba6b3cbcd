"""The database schema: versioned SQL files, applied once per deployment, never on a cold start.

A Kubernetes Job (`python -m shared.migrations`, in `knative/base/migrations.yaml`,
named after a hash of these files so a new one reruns it), `make run` and the
tests apply them. A function only checks that the schema is at least the
version its code was written for (`shared.runtime.schema`), so scaling from zero
never waits on the migration lock, and 21 Services never race for it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from shared.runtime.db import Database

DIRECTORY = Path(__file__).parent
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
LOCK_ID = 7310001  # pg_advisory_xact_lock: concurrent runs apply each file once


def files() -> list[Path]:
    """The migration files, oldest first."""
    return sorted(p for p in DIRECTORY.iterdir() if _NAME.match(p.name))


def latest() -> str:
    """The version the code expects: the name of the newest file."""
    return files()[-1].name


def digest() -> str:
    """A short hash of every file's name and content (names the deployment Job)."""
    sha = hashlib.sha256()
    for path in files():
        sha.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return sha.hexdigest()[:8]


def migrate(db: Database) -> list[str]:
    """Apply the files not applied yet, in order, in one transaction; returns their names."""
    applied: list[str] = []
    with db.transaction() as tx:
        tx.execute(f"SELECT pg_advisory_xact_lock({LOCK_ID})")
        tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in tx.all("SELECT version FROM schema_migrations")}
        for path in files():
            if path.name in done:
                continue
            for statement in _statements(path.read_text()):
                tx.execute(statement)
            tx.execute("INSERT INTO schema_migrations (version) VALUES (:v)", v=path.name)
            applied.append(path.name)
    return applied


def _statements(sql: str) -> list[str]:
    """Split a migration on `;` at line ends, keeping a `$$`-quoted body (a function's) whole.

    Our files hold no string literals with `;` and quote bodies with a bare `$$`.
    """
    without_comments = "\n".join(
        line for line in sql.splitlines() if not line.strip().startswith("--")
    )
    statements: list[str] = []
    current: list[str] = []
    for index, part in enumerate(without_comments.split("$$")):
        if index % 2:  # inside $$ ... $$
            current.append(f"$${part}$$")
            continue
        first, *rest = re.split(r";\s*$", part, flags=re.M)
        current.append(first)
        for piece in rest:
            statements.append("".join(current))
            current = [piece]
    statements.append("".join(current))
    return [s.strip() for s in statements if s.strip()]
