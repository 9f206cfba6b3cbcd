"""`python -m shared.migrations`: apply the migrations to DATABASE_URL (the deployment Job)."""

from __future__ import annotations

import os
import sys

from shared.migrations import latest, migrate
from shared.runtime.db import Database


def main() -> int:
    url = os.environ.get("DATABASE_URL", "")
    if not url:
        print("DATABASE_URL is not set", file=sys.stderr)
        return 2
    db = Database(url, size=1)
    try:
        applied = migrate(db)
    finally:
        db.close()
    print(f"applied {', '.join(applied)}" if applied else "nothing to apply", end="; ")
    print(f"schema at {latest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
