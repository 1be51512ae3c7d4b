"""Log lines for people (text) or for Cloud Logging (one JSON object per line).

The JSON form carries the fields Cloud Logging reads: `severity`, `message`, `httpRequest`,
`logging.googleapis.com/trace`. What a line is about (the request's trace, the build's id) is
set once per request or build with `log_context` and added to every line logged meanwhile, in
either form, by a filter on the handler: callers never pass it by hand.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
TRACE_FIELD = "logging.googleapis.com/trace"
# Fields a record may carry (as `extra=`) that the JSON form writes out as they are.
_EXTRA_FIELDS = (
    "httpRequest",
    "request_id",
    "build_id",
    "phase",
    "seconds",
    "outcome",
    "repository",
)

_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "nixery_log_context", default=None
)


@contextlib.contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Every line logged within (on this thread or context) carries `fields`; None is left out."""
    merged = {**(_context.get() or {}), **{name: value for name, value in fields.items() if value}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> dict[str, str]:
    return dict(_context.get() or {})


def trace_of(header: str | None, project: str | None) -> str | None:
    """The trace Cloud Logging groups lines by, from `X-Cloud-Trace-Context: TRACE/SPAN;o=1`."""
    if not header:
        return None
    trace = header.split("/", 1)[0].split(";", 1)[0].strip()
    if not trace or not all(c in "0123456789abcdefABCDEF" for c in trace) or len(trace) > 64:
        return None
    return f"projects/{project}/traces/{trace}" if project else trace


class ContextFilter(logging.Filter):
    """Copies the current log context onto each record (unless the record sets the field)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in (_context.get() or {}).items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelno, record.levelname),
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        if record.exc_info:
            entry["message"] += "\n" + self.formatException(record.exc_info)
        trace = getattr(record, "trace", None)
        if trace:
            entry[TRACE_FIELD] = trace
        for name in _EXTRA_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        return json.dumps(entry, separators=(",", ":"), default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        build_id = getattr(record, "build_id", None)
        request_id = getattr(record, "request_id", None)
        if request_id:
            text = f"{text} [request {request_id}]"
        return f"{text} [build {build_id}]" if build_id else text


_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}


def configure_logging(log_format: str, level: int = logging.INFO) -> None:
    """Root logging to stderr in `log_format`, replacing whatever was configured before."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def project_id() -> str | None:
    return os.environ.get("GOOGLE_CLOUD_PROJECT") or None
