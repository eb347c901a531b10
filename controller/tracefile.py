"""The trace file: OTLP-JSON lines on the device, size-capped with rotation.

For devices with no collector. Each line is one OTLP/JSON export document
(`resourceSpans` for a batch of spans, `resourceMetrics` for the metrics
after a run). When a line would take the file past `max_bytes`, the file is
rotated like logrotate does it: `traces.jsonl` -> `traces.jsonl.1` -> ... ->
`traces.jsonl.<backups>`, the oldest dropped. `read_trace_file` reads the
backups oldest first, then the live file, and skips lines it cannot parse (a
process killed mid-write leaves at most one such line).
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from controller.otlpjson import SpanRecord, decode_spans, encode_spans

log = logging.getLogger("edgeprune")

DEFAULT_MAX_BYTES = 5 * 1024 * 1024
DEFAULT_BACKUPS = 2


class RotatingJsonLines:
    """Appends one JSON document per line; rotates before a line would overflow."""

    def __init__(
        self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS
    ) -> None:
        if max_bytes <= 0 or backups < 0:
            raise ValueError("max_bytes must be > 0 and backups >= 0")
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()

    def append(self, document: Mapping[str, Any]) -> None:
        line = (json.dumps(document, separators=(",", ":")) + "\n").encode("utf-8")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                info = self.path.stat()
            except FileNotFoundError:
                info = None
            if info is not None and not stat.S_ISREG(info.st_mode):
                # a FIFO or a device would block or swallow the run: never write there
                raise OSError(f"{self.path} is not a regular file")
            size = info.st_size if info is not None else 0
            if size and size + len(line) > self.max_bytes:
                self._rotate()
            # One write call per line: a crash leaves whole lines plus at most one torn one.
            # O_NONBLOCK: a FIFO swapped in since the check fails instead of hanging.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o600)
            with os.fdopen(fd, "ab") as file:
                file.write(line)

    def _rotate(self) -> None:
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
            return
        backup_path(self.path, self.backups).unlink(missing_ok=True)
        for number in range(self.backups - 1, 0, -1):
            older = backup_path(self.path, number)
            if older.exists():
                older.replace(backup_path(self.path, number + 1))
        self.path.replace(backup_path(self.path, 1))


def backup_path(path: Path, number: int) -> Path:
    return path.with_name(f"{path.name}.{number}")


def trace_files(path: Path) -> list[Path]:
    """The live file and its backups that exist, oldest first."""
    backups: list[tuple[int, Path]] = []
    for candidate in path.parent.glob(f"{path.name}.*"):
        suffix = candidate.name[len(path.name) + 1 :]
        if suffix.isdigit():
            backups.append((int(suffix), candidate))
    ordered = [p for _, p in sorted(backups, reverse=True)]
    return [*ordered, path] if path.exists() else ordered


class JsonLinesSpanExporter(SpanExporter):
    """Writes each batch of finished spans as one line of the trace file."""

    def __init__(self, file: RotatingJsonLines) -> None:
        self.file = file
        self._warned = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            self.file.append(encode_spans(spans))
        except (OSError, ValueError) as error:
            if not self._warned:  # once: a full disk must not flood the log
                log.warning("cannot write the trace file %s: %s", self.file.path, error)
                self._warned = True
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # every export is written before it returns


@dataclass
class TraceFileContents:
    spans: list[SpanRecord] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    skipped_lines: int = 0  # unparseable lines (torn by a crash, or not OTLP/JSON)


def _lines(path: Path) -> Iterator[bytes]:
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO would block the reader
            return
        with path.open("rb") as file:
            yield from file
    except FileNotFoundError:  # rotated away while we read
        return


def read_trace_file(path: Path) -> TraceFileContents:
    """Every span in the trace file and its backups, each span once, oldest file first.

    Metric lines are skipped silently; lines that are not OTLP/JSON are counted.
    """
    contents = TraceFileContents(files=trace_files(path))
    seen: set[tuple[str, str]] = set()
    for file in contents.files:
        for raw in _lines(file):
            if not raw.strip():
                continue
            try:
                document = json.loads(raw)
                if not isinstance(document, dict):
                    raise ValueError("not a JSON object")
                if "resourceMetrics" in document:
                    continue
                spans = decode_spans(document)
            except (ValueError, KeyError, TypeError, AttributeError):
                contents.skipped_lines += 1
                continue
            for span in spans:
                key = (span.trace_id, span.span_id)
                if key not in seen:  # a rotation during the read may show a line twice
                    seen.add(key)
                    contents.spans.append(span)
    return contents
