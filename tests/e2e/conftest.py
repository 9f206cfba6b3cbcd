"""The whole local stack, broker included, started once for the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from local.knative import faults
from local.stack import seed
from local.stack.stack import Stack, StackConfig
from tests.helpers.client import signed_in
from tests.helpers.marketplace import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    E2E_LIMITS,
    HOLD_TTL_SECONDS,
    SWEEP_INTERVAL_SECONDS,
    Marketplace,
)
from tests.helpers.otlp import OtlpReceiver
from tests.helpers.ports import free_port
from tests.helpers.servers import start_or_exit


@pytest.fixture(scope="session")
def marketplace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Marketplace]:
    workdir: Path = tmp_path_factory.mktemp("e2e")
    traces = OtlpReceiver()  # the functions export their spans here, as to a Collector
    stack = Stack(StackConfig(
        workdir=workdir, port=free_port(), hold_ttl_seconds=HOLD_TTL_SECONDS,
        sweep_interval_seconds=SWEEP_INTERVAL_SECONDS, threads=8,
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": traces.url, "OTEL_BSP_SCHEDULE_DELAY": "200",
             "LOG_FORMAT": "json", faults.FAULTS_FILE_VARIABLE: str(workdir / "faults.json"),
             **E2E_LIMITS}))
    start_or_exit(stack.start)
    try:
        assert stack.runtime is not None
        seed.seed_admin(stack.runtime, ADMIN_EMAIL, ADMIN_PASSWORD)
        yield Marketplace(stack, signed_in(stack.api_url, ADMIN_EMAIL, ADMIN_PASSWORD), traces)
    finally:
        stack.stop()
        traces.close()
