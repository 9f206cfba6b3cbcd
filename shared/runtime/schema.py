"""Is the database schema the one this code expects? Asked once per process, then remembered.

Functions do not migrate (a Job does, before they roll out). A function that
finds an older schema answers 503 with the reason instead of failing on a
missing column, and asks again on the next event; once the schema is current
it never asks again, so the check costs one query per process.
"""

from __future__ import annotations

import threading

from shared import migrations
from shared.runtime.db import Database, sqlstate
from shared.runtime.errors import SchemaBehind

UNDEFINED_TABLE = "42P01"


class SchemaGate:
    def __init__(self, expected: str | None = None) -> None:
        self.expected = expected or migrations.latest()
        self.current = False
        self._lock = threading.Lock()

    def ensure(self, db: Database) -> None:
        """Return if the schema is at least `expected`; raise `SchemaBehind` otherwise."""
        if self.current:
            return
        with self._lock:
            if self.current:
                return
            found = applied_version(db)
            # Versions are zero-padded file names: their order is the order of application.
            if found is None or found < self.expected:
                raise SchemaBehind(
                    f"the database schema is at {found or 'no version'}, this code needs"
                    f" {self.expected}: apply the migrations (python -m shared.migrations)")
            self.current = True


def applied_version(db: Database) -> str | None:
    """The newest applied migration, or None on a database never migrated."""
    try:
        with db.transaction() as tx:
            found = tx.scalar("SELECT max(version) FROM schema_migrations")
    except Exception as exc:
        if sqlstate(exc) == UNDEFINED_TABLE:
            return None
        raise
    return str(found) if found is not None else None
