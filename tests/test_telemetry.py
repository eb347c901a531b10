"""Traces of real runs on real Podman (in-memory exporter), and the SDK set-up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import Device
from observability_helpers import (
    APP,
    clear_otel_environment,
    no_sleep_store,
    observed_pruner,
    otlp_receiver,
    ready_to_prune,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import NoOpTracerProvider, StatusCode
from podman.errors import APIError

from controller.config import Config
from controller.machine import FAILED, IDLE
from controller.podman import RetryPolicy
from controller.pruner import Pruner
from controller.report import Report
from controller.telemetry import Telemetry, setup_telemetry, trace_file_path


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def children(spans: tuple[ReadableSpan, ...], parent: ReadableSpan) -> list[ReadableSpan]:
    found = [s for s in spans if s.parent and s.parent.span_id == parent.context.span_id]
    return sorted(found, key=lambda s: s.start_time or 0)


def transitions(root: ReadableSpan) -> list[tuple[str, str, str]]:
    return [
        (e.attributes["source"], e.attributes["dest"], e.attributes["trigger"])
        for e in root.events
        if e.name == "transition"
    ]


def test_a_pruning_run_is_one_trace_of_states_transitions_and_podman_calls(
    device: Device,
) -> None:
    ready_to_prune(device)
    observed = observed_pruner(device.config())
    report = observed.pruner.run_once(trigger="test")
    assert report.outcome == "pruned"
    spans = observed.spans.get_finished_spans()

    [root] = [s for s in spans if s.parent is None]
    assert root.name == "edgeprune.run"
    assert format(root.context.trace_id, "032x") == report.trace_id
    assert {s.context.trace_id for s in spans} == {root.context.trace_id}
    states = children(spans, root)
    assert [s.attributes["edgeprune.state"] for s in states] == report.states[1:-1]
    assert [s.name for s in states] == [f"edgeprune.state.{s}" for s in report.states[1:-1]]
    # one event per transition, source = the state left (design.md s6: not event.state)
    assert transitions(root) == [
        ("Idle", "Inventory", "start"),
        ("Inventory", "Plan", "inventoried"),
        ("Plan", "VerifyRollback", "planned"),
        ("VerifyRollback", "Remove", "verified"),
        ("Remove", "Validate", "removed"),
        ("Validate", "Idle", "validated"),
    ]
    attributes = root.attributes
    assert attributes["edgeprune.trigger"] == "test"
    assert attributes["edgeprune.outcome"] == "pruned"
    assert attributes["edgeprune.spec_generation"] == "3"
    assert attributes["edgeprune.images.removed"] == len(report.removed) == 1
    assert attributes["edgeprune.images.kept"] == len(report.kept)
    assert attributes["edgeprune.images.failed"] == 0
    assert attributes["edgeprune.artifacts.removed"] == 0
    assert attributes["edgeprune.bytes.estimated"] == report.estimated_bytes > 0
    assert attributes["edgeprune.bytes.measured"] == report.measured_bytes
    assert attributes["edgeprune.rollback.ok"] is True
    assert root.status.status_code is StatusCode.UNSET

    inventory, remove, validate = states[0], states[3], states[4]
    assert [s.name for s in children(spans, inventory)][:3] == [
        "podman.list_images",
        "podman.system_df",
        "podman.list_containers",
    ]
    [call] = children(spans, remove)
    assert call.name == "podman.remove_image"  # names never in span names
    assert call.attributes["edgeprune.image"] == f"{APP}:1"
    assert [s.name for s in children(spans, validate)] == ["podman.list_images"]
    assert all(APP not in s.name for s in spans)
    [removal] = [e for e in remove.events if e.name == "removal"]
    item = report.removed[0]
    assert removal.attributes["result"] == "removed"
    assert removal.attributes["kind"] == item.kind == "image"
    assert tuple(removal.attributes["names"]) == item.names == (f"{APP}:1",)
    assert removal.attributes["id"] == item.id
    assert removal.attributes["bytes"] == item.size_bytes
    assert tuple(removal.attributes["reasons"]) == item.reasons
    assert item.reasons[0].startswith("unreferenced:")


def test_a_run_failing_in_remove_records_retries_error_and_next_run_starts_from_idle(
    device: Device, mocker: Any
) -> None:
    ready_to_prune(device)
    stores = []

    def faulty_store(config: Config):
        store = no_sleep_store(config)
        # The socket dies mid-run: a fault real Podman cannot produce on demand.
        mocker.patch.object(store._client.images, "remove", side_effect=APIError("socket gone"))
        stores.append(store)
        return store

    observed = observed_pruner(device.config(), store_factory=faulty_store)
    report = observed.pruner.run_once(trigger="test")
    assert report.outcome == "failed" and report.failed_state == "Remove"
    assert observed.pruner.state == FAILED
    spans = observed.spans.get_finished_spans()
    [root] = by_name(spans, "edgeprune.run")
    assert root.status.status_code is StatusCode.ERROR
    assert "socket gone" in (root.status.description or "")
    assert transitions(root)[-1] == ("Remove", "Failed", "fail")
    fail_event = root.events[-1]
    assert "PodmanUnavailable" in fail_event.attributes["error"]

    [remove] = by_name(spans, "edgeprune.state.Remove")
    assert remove.status.status_code is StatusCode.ERROR
    [exception] = [e for e in remove.events if e.name == "exception"]
    assert exception.attributes["exception.type"].endswith("PodmanUnavailable")
    [call] = children(spans, remove)
    assert call.name == "podman.remove_image"
    assert call.status.status_code is StatusCode.ERROR
    retries = [e.attributes for e in call.events if e.name == "retry"]
    assert [r["attempt"] for r in retries] == list(range(1, RetryPolicy().attempts))
    assert [r["wait_seconds"] for r in retries] == [0.5, 1.0, 2.0]  # exponential backoff
    assert all("socket gone" in r["error"] for r in retries)

    # The next request resets Failed -> Idle first, then runs normally.
    mocker.stopall()
    observed.spans.clear()
    observed.pruner._store_factory = no_sleep_store
    again = observed.pruner.run_once(trigger="test")
    assert again.outcome == "pruned" and observed.pruner.state == IDLE
    [root] = by_name(observed.spans.get_finished_spans(), "edgeprune.run")
    assert transitions(root)[:2] == [("Failed", "Idle", "reset"), ("Idle", "Inventory", "start")]
    assert again.states[0] == IDLE


# --- set-up -------------------------------------------------------------------


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_default_setup_writes_spans_and_a_metrics_line_to_the_trace_file(
    device: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_otel_environment(monkeypatch)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "edgeprune-device-42")
    ready_to_prune(device)
    config = device.config()
    telemetry = setup_telemetry(config)
    assert telemetry.exporters == (f"trace-file {device.state_dir / 'traces.jsonl'}",)
    report = run_with(config, telemetry)
    telemetry.shutdown()

    path = trace_file_path(config)
    assert path == device.state_dir / "traces.jsonl"
    documents = read_lines(path)
    span_docs = [d for d in documents if "resourceSpans" in d]
    metric_docs = [d for d in documents if "resourceMetrics" in d]
    assert len(metric_docs) == 1  # one line after the run; shutdown adds none
    resource = span_docs[0]["resourceSpans"][0]["resource"]["attributes"]
    assert {"key": "service.name", "value": {"stringValue": "edgeprune-device-42"}} in resource
    names = [
        span["name"]
        for d in span_docs
        for rs in d["resourceSpans"]
        for ss in rs["scopeSpans"]
        for span in ss["spans"]
    ]
    assert "edgeprune.run" in names and "podman.remove_image" in names
    trace_ids = {
        span["traceId"]
        for d in span_docs
        for rs in d["resourceSpans"]
        for ss in rs["scopeSpans"]
        for span in ss["spans"]
    }
    assert trace_ids == {report.trace_id}


def run_with(config: Config, telemetry: Telemetry) -> Report:
    pruner = Pruner(config, store_factory=no_sleep_store, **telemetry.pruner_options())
    return pruner.run_once(trigger="test")


def test_otel_sdk_disabled_exports_nothing_at_all(
    device: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    ready_to_prune(device)
    with otlp_receiver() as receiver:
        config = device.config(
            otlp_endpoint=receiver.url,
            console_exporter=True,
            metrics_textfile=Path("edgeprune.prom"),
        )
        telemetry = setup_telemetry(config)
        assert isinstance(telemetry.tracer_provider, NoOpTracerProvider)
        assert telemetry.exporters == ()
        report = run_with(config, telemetry)
        telemetry.shutdown()
        assert report.outcome == "pruned"  # pruning itself is unaffected
        assert report.trace_id is None
        assert receiver.requests == []
    assert not (device.state_dir / "traces.jsonl").exists()
    assert not (device.state_dir / "edgeprune.prom").exists()


@pytest.mark.parametrize(
    ("config", "environ", "expected"),
    [
        ({}, {}, []),
        ({"otlp_endpoint": "http://collector:4318"}, {}, ["http://collector:4318/v1/traces"]),
        ({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, ["from OTEL_* variables"]),
        ({}, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ["from OTEL"]),
        ({}, {"OTEL_TRACES_EXPORTER": "otlp"}, ["from OTEL_* variables"]),
        ({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, []),
        (
            {"otlp_endpoint": "http://collector:4318/"},
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://other:4318"},
            ["http://collector:4318/v1/traces"],  # the config file wins
        ),
    ],
)
def test_otlp_is_chosen_by_config_and_standard_variables(
    config: dict,
    environ: dict,
    expected: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clear_otel_environment(monkeypatch)
    for variable, value in environ.items():
        monkeypatch.setenv(variable, value)
    telemetry = setup_telemetry(Config(state_dir=tmp_path, trace_file=None, **config))
    try:
        otlp = [e for e in telemetry.exporters if e.startswith("otlp-traces")]
        assert len(otlp) == len(expected)
        for exporter, want in zip(otlp, expected, strict=True):
            assert want in exporter
    finally:
        telemetry.shutdown()


def test_console_exporter_writes_spans_to_stderr_never_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_otel_environment(monkeypatch)
    telemetry = setup_telemetry(Config(state_dir=tmp_path, trace_file=None, console_exporter=True))
    tracer = telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("edgeprune.run"):
        pass
    telemetry.shutdown()
    captured = capsys.readouterr()
    assert captured.out == ""
    assert '"name": "edgeprune.run"' in captured.err


def test_an_unwritable_trace_file_never_breaks_a_run(
    device: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_otel_environment(monkeypatch)
    ready_to_prune(device)
    blocker = device.state_dir / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    config = device.config(trace_file=blocker / "traces.jsonl", metrics_textfile=blocker / "x.prom")
    telemetry = setup_telemetry(config)
    report = run_with(config, telemetry)
    telemetry.shutdown()
    assert report.outcome == "pruned"
    assert f"{APP}:1" not in device.image_names()
