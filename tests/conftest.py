"""Shared fixtures: real embedded servers for the whole session, a clean database per test.

A backing service whose URL is set in the environment (DATABASE_URL,
REDIS_URL, KAFKA_BOOTSTRAP_SERVERS) is used as it is; otherwise it is
started from its wheel, so the suite needs nothing installed on the machine.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from local import embedded
from shared import migrations
from shared.edge.tokens import generate_keys
from shared.runtime import bootstrap
from shared.runtime.bootstrap import Runtime
from shared.runtime.config import settings
from shared.runtime.db import Database

os.environ.setdefault("MARKETPLACE_LOCAL", "1")
if not os.environ.get("JWT_PUBLIC_KEYS") and not os.environ.get("JWT_PRIVATE_KEY"):
    os.environ.update(generate_keys("test"))  # one pair per run, as the local stack makes



def start(starter: Callable[[Path], embedded.EmbeddedServer], workdir: Path
          ) -> embedded.EmbeddedServer:
    """Start an embedded server; one that cannot start ends the run with its one-line reason."""
    try:
        return starter(workdir)
    except embedded.EmbeddedServerError as exc:
        pytest.exit(str(exc), returncode=1)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def database_url(workdir: Path) -> Iterator[str]:
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    server = start(embedded.start_postgres, workdir)
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def migrated(database_url: str) -> str:
    """The schema, applied once per session as the deployment's Job would."""
    db = Database(database_url, size=1)
    migrations.migrate(db)
    db.close()
    return database_url


@pytest.fixture(scope="session")
def redis_url(workdir: Path) -> Iterator[str]:
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    server = start(embedded.start_redis, workdir)
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def aws_url(workdir: Path) -> Iterator[str]:
    """An AWS endpoint (S3, SES, SNS): AWS_ENDPOINT_URL if set, else moto's server."""
    if os.environ.get("AWS_ENDPOINT_URL"):
        yield os.environ["AWS_ENDPOINT_URL"]
        return
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    server = start(embedded.start_aws, workdir)
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def search_url(workdir: Path) -> Iterator[str]:
    """A search cluster: ELASTICSEARCH_URL if set, else the embedded OpenSearch-compatible one."""
    if os.environ.get("ELASTICSEARCH_URL"):
        yield os.environ["ELASTICSEARCH_URL"]
        return
    server = start(embedded.start_search, workdir)
    yield server.url
    server.stop()


@pytest.fixture
def rt(migrated: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    """A runtime on clean state whose emitted events stay in the outbox for the test to read."""
    monkeypatch.setenv("DATABASE_URL", migrated)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    settings.cache_clear()
    runtime = bootstrap.build(publish=False)
    with runtime.db.transaction() as tx:
        tables = [r["tablename"] for r in tx.all(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            " AND tablename <> 'schema_migrations'")]
        tx.execute(f"TRUNCATE {', '.join(tables)}")
    runtime.redis.flushdb()
    bootstrap.install(runtime)
    yield runtime
    bootstrap.install(None)
    runtime.close()
    settings.cache_clear()
