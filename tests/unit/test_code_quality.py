"""The linters are pinned and run by `make lint`, which CI runs before the tests.

Not inside pytest: a new release of ruff or mypy with new rules must not fail `make test`
with no change of ours, and a lint finding needs no stack started to be found.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def target(name: str) -> list[str]:
    """The recipe lines of one Makefile target."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{name}:"))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def test_the_linters_are_pinned_to_one_version() -> None:
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["dev"]
    for tool in ("ruff", "mypy"):
        assert any(re.fullmatch(rf"{tool}==[0-9.]+", pin) for pin in dev), (tool, dev)


def test_make_lint_runs_both_and_ci_lints_before_it_tests() -> None:
    assert target("lint") == ["$(BIN)/ruff check .", "$(BIN)/mypy shared functions local"]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.startswith("make ")]
    assert ci[:2] == ["make lint", "make test"], ci
