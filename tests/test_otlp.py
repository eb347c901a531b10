"""OTLP over HTTP: a real run's spans and metrics reach a receiver on loopback."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Device
from observability_helpers import (
    Receiver,
    clear_otel_environment,
    no_sleep_store,
    otlp_receiver,
    ready_to_prune,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from controller.config import Config
from controller.pruner import Pruner
from controller.report import Report
from controller.telemetry import setup_telemetry


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_otel_environment(monkeypatch)


def plain(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(plain(v) for v in value.array_value.values)
    return getattr(value, kind) if kind else None


def attributes(pairs: list[KeyValue]) -> dict[str, Any]:
    return {pair.key: plain(pair.value) for pair in pairs}


def received_spans(receiver: Receiver) -> tuple[dict[str, Any], list[Any]]:
    """(resource attributes, spans) from every trace export the receiver got."""
    resource: dict[str, Any] = {}
    spans = []
    for body in receiver.bodies("/v1/traces"):
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            resource = attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                spans.extend(scope_spans.spans)
    return resource, spans


def received_metrics(receiver: Receiver) -> dict[tuple[str, frozenset], Any]:
    """(metric name, attributes) -> value of the last metrics export."""
    bodies = receiver.bodies("/v1/metrics")
    assert bodies, "no metrics export reached the receiver"
    request = ExportMetricsServiceRequest.FromString(bodies[-1])
    values: dict[tuple[str, frozenset], Any] = {}
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                data = getattr(metric, metric.WhichOneof("data"))
                for point in data.data_points:
                    key = (metric.name, frozenset(attributes(point.attributes).items()))
                    if metric.WhichOneof("data") == "histogram":
                        values[key] = (point.count, point.sum)
                    else:
                        values[key] = getattr(point, point.WhichOneof("value"))
    return values


def run_and_flush(config: Config) -> Report:
    telemetry = setup_telemetry(config)
    pruner = Pruner(config, store_factory=no_sleep_store, **telemetry.pruner_options())
    report = pruner.run_once(trigger="test")
    telemetry.shutdown()  # what the CLI does before it exits
    return report


def test_spans_and_metrics_reach_an_otlp_receiver_with_the_report_figures(
    device: Device,
) -> None:
    ready_to_prune(device)
    with otlp_receiver() as receiver:
        report = run_and_flush(device.config(otlp_endpoint=receiver.url, trace_file=None))
    assert report.outcome == "pruned"

    resource, spans = received_spans(receiver)
    assert resource["service.name"] == "edgeprune"
    names = [span.name for span in spans]
    assert names.count("edgeprune.run") == 1
    for state in ("Inventory", "Plan", "VerifyRollback", "Remove", "Validate"):
        assert f"edgeprune.state.{state}" in names
    assert "podman.remove_image" in names
    [root] = [span for span in spans if span.name == "edgeprune.run"]
    assert root.trace_id.hex() == report.trace_id
    assert not root.parent_span_id
    root_attributes = attributes(root.attributes)
    assert root_attributes["edgeprune.outcome"] == "pruned"
    assert root_attributes["edgeprune.images.removed"] == len(report.removed) == 1
    assert root_attributes["edgeprune.bytes.estimated"] == report.estimated_bytes
    assert root_attributes["edgeprune.bytes.measured"] == report.measured_bytes
    transitions = [
        attributes(event.attributes) for event in root.events if event.name == "transition"
    ]
    assert [(t["source"], t["dest"]) for t in transitions] == list(
        zip(report.states, report.states[1:], strict=False)
    )
    [remove_call] = [span for span in spans if span.name == "podman.remove_image"]
    assert attributes(remove_call.attributes)["edgeprune.image"] == report.removed[0].names[0]

    metrics = received_metrics(receiver)
    assert metrics[("edgeprune.runs", frozenset({("outcome", "pruned"), ("trigger", "test")}))] == 1
    assert metrics[("edgeprune.removed", frozenset({("kind", "image")}))] == len(report.removed)
    estimated = metrics[("edgeprune.reclaimed", frozenset({("method", "estimated")}))]
    assert estimated == report.estimated_bytes
    count, total = metrics[("edgeprune.run.duration", frozenset({("outcome", "pruned")}))]
    assert count == 1 and total == pytest.approx(report.duration_seconds)


def test_the_standard_variables_alone_turn_otlp_on(
    device: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    with otlp_receiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "pruner-on-device-x")
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "device.id=device-x,site=plant%201")
        report = run_and_flush(device.config(trace_file=None))
    resource, spans = received_spans(receiver)
    assert resource["service.name"] == "pruner-on-device-x"
    assert resource["device.id"] == "device-x" and resource["site"] == "plant 1"
    assert [s.trace_id.hex() for s in spans if s.name == "edgeprune.run"] == [report.trace_id]
    assert receiver.bodies("/v1/metrics")
