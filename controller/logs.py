"""Log set-up for the CLI and the daemon: text or JSON lines, each with its trace ID.

A line logged while a run's span is current carries that run's trace ID (and
the span ID), so `grep <trace id>` finds every line of a run and `edgeprune
trace --run <trace id>` its timeline. Structured fields go in
`extra={"fields": {...}}`: JSON lines carry them as top-level keys, text
lines show only the message.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from opentelemetry import trace

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_HANDLER_NAME = "edgeprune"
_RESERVED = ("time", "level", "logger", "message", "trace_id", "span_id", "exception")


class TraceContextFilter(logging.Filter):
    """Adds `trace_id` and `span_id` (hex, "" outside a span) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        valid = context.is_valid
        record.trace_id = format(context.trace_id, "032x") if valid else ""
        record.span_id = format(context.span_id, "016x") if valid else ""
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        trace_id = getattr(record, "trace_id", "")
        return f"{line} trace_id={trace_id}" if trace_id else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, trace_id, fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("trace_id", "span_id"):
            if getattr(record, key, ""):
                out[key] = getattr(record, key)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update({k: v for k, v in fields.items() if k not in _RESERVED})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(
    level: str = "info", log_format: str = "text", stream: TextIO | None = None
) -> None:
    """Route all logging to `stream` (stderr) in `log_format`; replaces earlier set-up."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(TraceContextFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)  # only our own: a host's (or pytest's) handlers stay
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    # `transitions` logs every callback at INFO; the trace records each transition.
    logging.getLogger("transitions").setLevel(
        logging.DEBUG if level == "debug" else logging.WARNING
    )
