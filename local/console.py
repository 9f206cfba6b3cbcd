"""What a command prints for people, and where its libraries' log lines go instead.

A command's own output (its steps, what it waits for, its results) is text on
stdout, written by the command. The libraries under it (the search client,
kafka-python, urllib3, werkzeug) and the stack's own loggers write records
worth keeping but not worth reading as they scroll by: every record goes to
the command's log file, `.local/<command>.log`, and only our own warnings (a
process restarted, a topic left as it was) also reach the terminal, on one
short line each.

A command's `main` is decorated with `@console.command("name")`: the logging
is set up for the call and put back after it, so a test that calls `main` in
its own process keeps its own logging.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ParamSpec, TypeVar

ROOT = Path(__file__).resolve().parents[1]
LOG_FOLDER = ROOT / ".local"
OURS = "marketplace"  # the loggers of this project: marketplace.stack, .supervisor, ...
P = ParamSpec("P")
R = TypeVar("R")


class _OursOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.name == OURS or record.name.startswith(OURS + ".")


def log_path(command: str) -> Path:
    return LOG_FOLDER / f"{command}.log"


@contextmanager
def logging_to(command: str) -> Iterator[Path]:
    """Every log record to the command's file while it runs; what was configured, after.

    It replaces whatever a module configured on import (the functions' JSON
    lines on stdout), which is why it puts that back rather than adding to it.
    """
    path = log_path(command)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    kafka = logging.getLogger("kafka")
    kafka_level = kafka.level
    to_file = logging.FileHandler(path, mode="w", encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    to_terminal = logging.StreamHandler(sys.stderr)
    to_terminal.setLevel(logging.WARNING)
    to_terminal.addFilter(_OursOnly())
    to_terminal.setFormatter(logging.Formatter("  ! %(message)s"))
    for handler in before:
        root.removeHandler(handler)
    root.addHandler(to_file)
    root.addHandler(to_terminal)
    root.setLevel(logging.INFO)
    kafka.setLevel(logging.ERROR)  # its event-loop timing chatter
    logging.captureWarnings(True)  # a library's warnings go to the file, not the terminal
    try:
        yield path
    finally:
        logging.captureWarnings(False)
        for handler in (to_file, to_terminal):
            root.removeHandler(handler)
            handler.close()
        for handler in before:
            root.addHandler(handler)
        root.setLevel(level)
        kafka.setLevel(kafka_level)


def command(name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a command's `main`: its libraries log to `.local/<name>.log` while it runs."""

    def decorate(main: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(main)
        def logged(*args: P.args, **kwargs: P.kwargs) -> R:
            with logging_to(name):
                return main(*args, **kwargs)

        return logged

    return decorate


def quiet(name: str) -> None:
    """No more records from logger `name`, even in the file: for a library's shutdown noise."""
    logging.getLogger(name).setLevel(logging.CRITICAL)


def shown(path: Path) -> str:
    """`path` as a person would type it here: relative to this folder when it is inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def say(text: str = "") -> None:
    """One line for the person at the terminal, at once (not when a buffer fills)."""
    print(text, flush=True)
