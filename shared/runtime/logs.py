"""One log line per handled event and per HTTP request: JSON for machines, text for people.

`LOG_FORMAT=json` (the default; what a cluster's log pipeline wants) writes
each record as one JSON object with `time`, `level`, `logger`, `message` and
the record's fields (`function`, `event_id`, `type`, `subject`, `trace_id`,
`outcome`, `duration_ms`, `attempt`; `method`, `route`, `path`, `status` for
requests). `LOG_FORMAT=text` (what `make run` sets) writes the same on one
readable line. Lines carry ids, never bodies, headers, tokens or passwords:
the fields above are the only ones the runtime adds.

functions-framework configures no logging, so the first function declared in
a process calls `setup()`; a host that configured logging first keeps its own.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime

FORMAT_VARIABLE = "LOG_FORMAT"
FIELDS = ("function", "event_id", "type", "subject", "trace_id", "outcome", "duration_ms",
          "attempt", "method", "route", "path", "status")

events = logging.getLogger("marketplace.events")
requests = logging.getLogger("marketplace.requests")


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {name: record.__dict__[name] for name in FIELDS if name in record.__dict__}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_fields(record))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items()
                         if k not in ("function", "type"))
        return f"{text} {extra}" if extra else text


def formatter(kind: str | None = None) -> logging.Formatter:
    kind = (kind or os.environ.get(FORMAT_VARIABLE) or "json").lower()
    return TextFormatter() if kind == "text" else JsonFormatter()


def setup(force: bool = False) -> None:
    """Log INFO and above to stdout in the chosen format, unless logging is configured."""
    root = logging.getLogger()
    if root.handlers and not force:
        return
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter())
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("kafka").setLevel(logging.ERROR)  # its event-loop timing chatter


def event(function: str, event_id: str, event_type: str, subject: str, trace_id: str,
          outcome: str, seconds: float, attempt: int) -> None:
    level = logging.WARNING if outcome in ("poison", "transient") else logging.INFO
    if not events.isEnabledFor(level):
        return
    events.log(level, "%s %s %s", function, event_type, outcome, extra={
        "function": function, "event_id": event_id, "type": event_type, "subject": subject,
        "trace_id": trace_id, "outcome": outcome, "duration_ms": round(seconds * 1000, 2),
        "attempt": attempt})


def request(function: str, method: str, route: str, path: str, status: int, trace_id: str,
            seconds: float) -> None:
    level = logging.WARNING if status >= 500 else logging.INFO
    if not requests.isEnabledFor(level):
        return
    requests.log(level, "%s %s %s", method, path, status, extra={
        "function": function, "method": method, "route": route, "path": path,
        "status": status, "trace_id": trace_id, "duration_ms": round(seconds * 1000, 2)})
