"""The documentation: a site that builds strictly, a short README that leads into all of it.

A broken link, a missing anchor or a page left out of the nav fails the strict build, so
the docs cannot rot quietly; the README is what a newcomer reads first, so it stays short
and points at every page. And nothing in the repository may send a reader to a document
that is not in it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "docs" / "mkdocs.yml"
PAGES = ROOT / "docs" / "pages"
README = ROOT / "README.md"
README_MAX_LINES = 250

# Spelled in pieces so that this file does not mention them itself.
OUTSIDE_DOCUMENTS = ("CONTRACT" + ".md", "FIELD" + "-NOTES", ".." + "/shared/")
# What is not the repository's own: environments, caches, build output, the built site.
NOT_OURS = {".git", ".venv", ".local", "node_modules", "site", "build", "__pycache__",
            ".pytest_cache", ".mypy_cache", ".ruff_cache"}


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(CONFIG),
         "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, f"mkdocs build --strict failed:\n{built.stdout}{built.stderr}"
    assert (tmp_path / "site" / "index.html").is_file()


def test_the_readme_is_short() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines, at most {README_MAX_LINES}: move the detail into docs/pages")


def test_the_readme_links_to_every_page() -> None:
    linked = set(re.findall(r"\]\((docs/pages/[^)#\s]+\.md)(?:#[^)]*)?\)", README.read_text()))
    pages = {page.relative_to(ROOT).as_posix() for page in PAGES.rglob("*.md")}
    assert pages - linked == set(), "pages the README does not link to"
    assert linked - pages == set(), "README links to pages that do not exist"


def _our_text_files() -> Iterator[Path]:
    for directory, subdirectories, files in os.walk(ROOT):
        subdirectories[:] = [d for d in subdirectories
                             if d not in NOT_OURS and not d.endswith(".egg-info")]
        for name in files:
            path = Path(directory, name)
            try:
                text = path.read_bytes()
            except OSError:
                continue
            if b"\0" not in text[:8192]:
                yield path


def test_nothing_points_at_documents_outside_the_repository() -> None:
    found = []
    for path in _our_text_files():
        text = path.read_text(errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            for name in OUTSIDE_DOCUMENTS:
                if name in line:
                    found.append(f"{path.relative_to(ROOT)}:{number}: {name}")
    assert found == [], "references to documents that are not in the repository:\n" + "\n".join(
        found)


def test_every_docs_page_the_repository_names_exists() -> None:
    """A comment that sends a reader to a page must name one that is there (pages move)."""
    missing = []
    for path in _our_text_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            # Our own paths, not the tail of someone else's URL (`.../blob/main/docs/...`).
            for named in re.findall(r"(?<![\w./-])docs/[\w./-]+\.md\b", line):
                if not (ROOT / named).is_file():
                    missing.append(f"{path.relative_to(ROOT)}:{number}: {named}")
    assert missing == [], "docs pages named but not there:\n" + "\n".join(missing)
