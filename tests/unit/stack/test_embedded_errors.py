"""A backing server that cannot start is named, with its cause and the fix, in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from local.stack import embedded, run
from local.stack.embedded import EmbeddedServerError


def test_the_error_names_server_cause_and_fix() -> None:
    error = EmbeddedServerError("postgres", "initdb failed (Permission denied)",
                                "set DATABASE_URL", Path("/tmp/w/postgres.log"))
    assert str(error) == ("embedded postgres could not start: initdb failed (Permission"
                          " denied). Fix: set DATABASE_URL (log: /tmp/w/postgres.log)")


def test_a_missing_wheel_says_how_to_install_it() -> None:
    with pytest.raises(EmbeddedServerError, match="make install"):
        embedded._package_dir("no_such_embedded_server")


def test_make_run_prints_one_line_not_a_traceback(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(self: object, pending: object = ()) -> None:
        raise EmbeddedServerError("redis", "redis-server exited with code 1", "read its log")

    monkeypatch.setattr(run.Stack, "start", fail)
    monkeypatch.setattr(run, "stop_on_signals", lambda: None)  # pytest keeps its own
    assert run.main(["--port", "0", "--workdir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "embedded redis could not start: redis-server exited with code 1. Fix: read its log"]
