"""Another commit's tree beside this one, for `make bench --against REF`, and what it holds.

REF is built with `git archive REF | tar -x` into a temporary folder: no
worktree, no checkout, nothing written to the repository, so it is safe while
others work in it. Each tree's commands then run there with this interpreter
(`python -m` puts the tree's folder first on the path, ahead of the editable
install of this one), so REF runs on this virtualenv's packages. Older
commits kept the commands elsewhere (`local.bench`, `local.run`), and their
routing declaration says which reactions are schedules rather than deliveries.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BENCH_MODULES = ("local.measure.bench", "local.bench")
RUN_MODULES = ("local.stack.run", "local.run")

# Prints {function name: {"topics": [...], "schedule": ...}} from the tree it runs in.
_ROUTING = """
import importlib, json
for name in ("shared.runtime.routing", "shared.routing"):
    try:
        routing = importlib.import_module(name)
        break
    except ImportError:
        continue
else:
    raise SystemExit("no routing declaration")
reactions = routing.load()[0]
print(json.dumps({getattr(r, "name", r.target.replace("_", "-")):
                  {"topics": list(r.topics), "schedule": r.schedule} for r in reactions}))
"""


class TreeError(Exception):
    """REF could not be built or holds no command to measure it with."""


@dataclass(frozen=True)
class Tree:
    label: str
    folder: Path
    bench: str  # the bench's module
    run: str | None  # `make run`'s module

    def supports(self, option: str) -> bool:
        """Whether this tree's bench takes `option` (read from its source, not run)."""
        source = self.folder / (self.bench.replace(".", "/") + ".py")
        return f'"{option}"' in source.read_text()


def _git(*args: str) -> bytes:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True,
                          capture_output=True).stdout


def resolve(ref: str) -> str:
    """REF's full commit id; TreeError if it names no commit."""
    try:
        return _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").decode().strip()
    except subprocess.CalledProcessError as exc:
        raise TreeError(f"{ref!r} names no commit of {ROOT}") from exc


def head() -> str:
    return _git("rev-parse", "--short", "HEAD").decode().strip()


def export(commit: str, into: Path) -> None:
    """The commit's files into `into` (`git archive | tar -x`), the repository untouched."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", commit],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert archive.stdout is not None
    untar = subprocess.run(["tar", "-x", "-C", str(into)], stdin=archive.stdout,
                           capture_output=True)
    archive.stdout.close()
    failed = archive.wait() != 0
    if failed or untar.returncode != 0:
        assert archive.stderr is not None
        why = (archive.stderr.read() + untar.stderr).decode(errors="replace").strip()
        raise TreeError(f"git archive {commit[:12]} | tar -x failed: {why}")


def module_in(folder: Path, candidates: tuple[str, ...]) -> str | None:
    """The first of `candidates` that is a module of `folder`."""
    for module in candidates:
        if (folder / (module.replace(".", "/") + ".py")).is_file():
            return module
    return None


def tree(label: str, folder: Path) -> Tree:
    bench = module_in(folder, BENCH_MODULES)
    if bench is None:
        raise TreeError(f"{label} has no bench ({' or '.join(BENCH_MODULES)})")
    return Tree(label, folder, bench, module_in(folder, RUN_MODULES))


def routing(folder: Path) -> dict[str, dict[str, Any]] | None:
    """The tree's reactions by function name (topics, schedule); None if it cannot be read."""
    found = subprocess.run([sys.executable, "-c", _ROUTING], cwd=folder, capture_output=True,
                           text=True, timeout=120)
    if found.returncode != 0:
        return None
    try:
        loaded = json.loads(found.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return loaded if isinstance(loaded, dict) else None
