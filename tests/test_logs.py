"""Log lines: text or JSON, each line of a run with its trace ID; one line per removal."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Device, edgeprune
from observability_helpers import APP, observed_pruner, ready_to_prune
from opentelemetry.sdk.trace import TracerProvider

from controller.logs import JsonFormatter, TraceContextFilter, setup_logging


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    setup_logging("info", "json", stream)
    yield stream
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == "edgeprune"]:
        root.removeHandler(handler)


def test_every_line_of_a_run_carries_its_trace_id(device: Device, json_logs: io.StringIO) -> None:
    ready_to_prune(device)
    json_logs.truncate(0)
    json_logs.seek(0)
    report = observed_pruner(device.config()).pruner.run_once(trigger="test")
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    run = [line for line in lines if line["logger"] == "edgeprune"]
    assert run[0]["message"].startswith("prune run started (trigger=test")
    assert run[-1]["message"].startswith("prune run finished: outcome=pruned removed=1")
    assert {line.get("trace_id") for line in run} == {report.trace_id}

    [removed] = [line for line in run if line.get("event") == "item.removed"]
    item = report.removed[0]
    assert removed["message"] == (
        f"removed image {APP}:1 ({item.id[:12]}), {item.size_bytes} bytes"
    )
    assert (removed["kind"], removed["names"], removed["id"], removed["bytes"]) == (
        "image",
        [f"{APP}:1"],
        item.id,
        item.size_bytes,
    )
    end = run[-1]
    assert end["event"] == "run.finished" and end["level"] == "INFO"
    assert (end["outcome"], end["removed"], end["kept"], end["failed"]) == ("pruned", 1, 2, 0)
    assert end["reclaimed_estimated_bytes"] == report.estimated_bytes
    assert end["reclaimed_measured_bytes"] == report.measured_bytes
    assert end["duration_seconds"] == report.duration_seconds


def test_a_failed_run_logs_a_warning_with_the_error(device: Device, json_logs: io.StringIO) -> None:
    (device.spec_dir / "current.json").write_text("{not json")
    report = observed_pruner(device.config()).pruner.run_once(trigger="test")
    [end] = [
        json.loads(line) for line in json_logs.getvalue().splitlines() if '"run.finished"' in line
    ]
    assert end["level"] == "WARNING" and end["outcome"] == "failed"
    assert end["error"] == report.error and "current.json" in end["error"]
    assert end["trace_id"] == report.trace_id


def record(message: str = "hello", **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("edgeprune", logging.INFO, __file__, 1, message, None, None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_trace_filter_reads_the_current_span() -> None:
    line = record()
    TraceContextFilter().filter(line)
    assert line.trace_id == "" and line.span_id == ""
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("edgeprune.run") as span:
        TraceContextFilter().filter(line)
    assert line.trace_id == format(span.get_span_context().trace_id, "032x")
    assert line.span_id == format(span.get_span_context().span_id, "016x")


def test_json_formatter_keeps_its_own_keys_over_fields() -> None:
    line = record(trace_id="ab" * 16, span_id="", fields={"message": "spoof", "bytes": 3})
    out = json.loads(JsonFormatter().format(line))
    assert out["message"] == "hello" and out["bytes"] == 3
    assert out["trace_id"] == "ab" * 16 and "span_id" not in out
    assert out["time"].endswith("+00:00")


def cli_args(device: Device, config: Path) -> list[str]:
    return device.cli_args(config)


def test_cli_log_formats_from_flag_and_config(device: Device, tmp_path: Path) -> None:
    ready_to_prune(device)
    config = tmp_path / "config.yaml"
    config.write_text("min-age: 0s\n")
    result = edgeprune(
        "run", "--json", "--dry-run", "--log-format", "json", *cli_args(device, config)
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    lines = [json.loads(line) for line in result.stderr.splitlines()]  # every line is JSON
    assert lines and {line.get("trace_id") for line in lines} == {report["trace_id"]}

    text = edgeprune("run", "--dry-run", "--json", *cli_args(device, config))
    trace_id = json.loads(text.stdout)["trace_id"]
    assert all(line.endswith(f" trace_id={trace_id}") for line in text.stderr.splitlines())

    config.write_text("min-age: 0s\nlog-format: json\n")
    from_config = edgeprune("run", "--dry-run", *cli_args(device, config))
    assert all(json.loads(line)["level"] for line in from_config.stderr.splitlines())
