"""Metrics of real runs (in-memory reader) match the report; the Prometheus text file."""

from __future__ import annotations

import os
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from conftest import Device
from observability_helpers import (
    clear_otel_environment,
    no_sleep_store,
    observed_pruner,
    ready_to_prune,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData

from controller.promfile import metric_name, render_prometheus, write_textfile
from controller.pruner import Pruner
from controller.report import Report
from controller.telemetry import setup_telemetry


def points(data: MetricsData | None, name: str) -> dict[frozenset, Any]:
    """Data points of one metric, keyed by their attribute set."""
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    return {frozenset(p.attributes.items()): p for p in metric.data.data_points}
    return {}


def value(data: MetricsData | None, name: str, **attributes: str) -> Any:
    return points(data, name)[frozenset(attributes.items())].value


def test_metrics_of_a_real_run_match_the_report(device: Device) -> None:
    ready_to_prune(device)
    observed = observed_pruner(device.config())
    report = observed.pruner.run_once(trigger="after-update")
    assert report.outcome == "pruned"
    data = observed.metrics.get_metrics_data()

    assert value(data, "edgeprune.runs", outcome="pruned", trigger="after-update") == 1
    assert value(data, "edgeprune.removed", kind="image") == len(report.removed) == 1
    assert value(data, "edgeprune.removed", kind="artifact") == 0
    assert value(data, "edgeprune.removal.failures", kind="image") == len(report.failures) == 0
    assert value(data, "edgeprune.kept", kind="image") == len(report.kept) == 2
    assert value(data, "edgeprune.reclaimed", method="estimated") == report.estimated_bytes > 0
    assert report.measured_bytes is not None
    assert value(data, "edgeprune.reclaimed", method="measured") == max(0, report.measured_bytes)
    duration = points(data, "edgeprune.run.duration")[frozenset({("outcome", "pruned")})]
    assert duration.count == 1
    assert duration.sum == pytest.approx(report.duration_seconds)
    assert value(data, "edgeprune.last_run.timestamp") == pytest.approx(report.finished_at)
    assert points(data, "edgeprune.failures") == {}
    # one count per transition the run made, each (source, dest, trigger) right
    states = report.states
    expected = Counter(pairwise(states))
    recorded = {
        (dict(k)["source"], dict(k)["dest"]): p.value
        for k, p in points(data, "edgeprune.transitions").items()
    }
    assert recorded == dict(expected)


def test_failed_runs_are_counted_by_the_state_that_failed(device: Device) -> None:
    ready_to_prune(device)
    (device.spec_dir / "current.json").write_text("{not json")
    observed = observed_pruner(device.config())
    first = observed.pruner.run_once(trigger="test")
    second = observed.pruner.run_once(trigger="test")
    assert first.outcome == second.outcome == "failed"
    assert first.failed_state == "Inventory"
    data = observed.metrics.get_metrics_data()
    assert value(data, "edgeprune.failures", state="Inventory") == 2
    assert value(data, "edgeprune.runs", outcome="failed", trigger="test") == 2
    assert value(data, "edgeprune.transitions", source="Inventory", dest="Failed", trigger="fail")
    assert value(data, "edgeprune.transitions", source="Failed", dest="Idle", trigger="reset") == 1


def prom_samples(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, number = line.rpartition(" ")
            samples[name] = float(number)
    return samples


def test_prometheus_textfile_after_a_real_run_matches_the_report(
    device: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_otel_environment(monkeypatch)
    ready_to_prune(device)
    config = device.config(metrics_textfile=Path("metrics/edgeprune.prom"))
    telemetry = setup_telemetry(config)
    pruner = Pruner(config, store_factory=no_sleep_store, **telemetry.pruner_options())
    report = pruner.run_once(trigger="timer")
    path = device.state_dir / "metrics" / "edgeprune.prom"
    text = path.read_text()  # written after the run, before any shutdown
    telemetry.shutdown()

    samples = prom_samples(text)
    assert samples['edgeprune_runs_total{outcome="pruned",trigger="timer"}'] == 1
    assert samples['edgeprune_removed_total{kind="image"}'] == len(report.removed)
    assert samples['edgeprune_kept{kind="image"}'] == len(report.kept)
    assert samples['edgeprune_reclaimed_bytes_total{method="estimated"}'] == report.estimated_bytes
    assert samples['edgeprune_reclaimed_bytes_total{method="measured"}'] == max(
        0, report.measured_bytes or 0
    )
    assert samples['edgeprune_run_duration_seconds_count{outcome="pruned"}'] == 1
    assert samples['edgeprune_run_duration_seconds_sum{outcome="pruned"}'] == pytest.approx(
        report.duration_seconds
    )
    assert samples['edgeprune_run_duration_seconds_bucket{le="+Inf",outcome="pruned"}'] == 1
    assert "# TYPE edgeprune_runs_total counter" in text
    assert "# TYPE edgeprune_run_duration_seconds histogram" in text
    assert [p.name for p in path.parent.iterdir()] == ["edgeprune.prom"]  # no temp left


def test_the_textfile_is_rewritten_after_each_run_with_cumulative_counts(
    device: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_otel_environment(monkeypatch)
    config = device.config(metrics_textfile=device.state_dir / "edgeprune.prom")
    telemetry = setup_telemetry(config)
    pruner = Pruner(config, store_factory=no_sleep_store, **telemetry.pruner_options())
    path = device.state_dir / "edgeprune.prom"
    for runs in (1, 2):
        pruner.run_once(trigger="timer")
        key = 'edgeprune_runs_total{outcome="nothing-to-prune",trigger="timer"}'
        assert prom_samples(path.read_text())[key] == runs
    telemetry.shutdown()


# --- the text format (pure) ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "unit", "counter", "expected"),
    [
        ("edgeprune.runs", "{run}", True, "edgeprune_runs_total"),
        ("edgeprune.reclaimed", "By", True, "edgeprune_reclaimed_bytes_total"),
        ("edgeprune.run.duration", "s", False, "edgeprune_run_duration_seconds"),
        ("edgeprune.kept", "{item}", False, "edgeprune_kept"),
        ("edgeprune.last_run.timestamp", "s", False, "edgeprune_last_run_timestamp_seconds"),
        ("already_seconds", "s", False, "already_seconds"),
    ],
)
def test_metric_names_follow_prometheus_conventions(
    name: str, unit: str, counter: bool, expected: str
) -> None:
    assert metric_name(name, unit, counter=counter) == expected


def recorded(record) -> MetricsData:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("t")
    record(meter)
    data = reader.get_metrics_data()
    assert data is not None
    return data


def test_label_values_are_escaped_and_series_sorted() -> None:
    data = recorded(
        lambda meter: [
            meter.create_counter("c", description="a\nb").add(1, {"v": 'say "hi"\\'}),
            meter.create_counter("c", description="a\nb").add(2, {"v": "a"}),
        ]
    )
    text = render_prometheus(data)
    assert text.splitlines() == [
        "# HELP c_total a\\nb",
        "# TYPE c_total counter",
        'c_total{v="a"} 2',
        'c_total{v="say \\"hi\\"\\\\"} 1',
    ]


def test_histogram_buckets_are_cumulative() -> None:
    def record(meter) -> None:
        histogram = meter.create_histogram(
            "d", unit="s", explicit_bucket_boundaries_advisory=[1.0, 5.0]
        )
        for seconds in (0.5, 2.0, 3.0, 9.0):
            histogram.record(seconds)

    lines = render_prometheus(recorded(record)).splitlines()
    assert lines[2:] == [
        'd_seconds_bucket{le="1.0"} 1',
        'd_seconds_bucket{le="5.0"} 3',
        'd_seconds_bucket{le="+Inf"} 4',
        "d_seconds_sum 14.5",
        "d_seconds_count 4",
    ]


def test_write_textfile_replaces_atomically(tmp_path: Path, mocker: Any) -> None:
    path = tmp_path / "edgeprune.prom"
    write_textfile(path, "old 1\n")
    mocker.patch("controller.promfile.os.replace", side_effect=OSError("disk full"))
    with pytest.raises(OSError):
        write_textfile(path, "new 2\n")
    assert path.read_text() == "old 1\n"  # a failed write leaves the last good file
    assert os.listdir(tmp_path) == ["edgeprune.prom"]


def test_a_broken_meter_never_breaks_a_run(device: Device, mocker: Any) -> None:
    observed = observed_pruner(device.config())
    mocker.patch.object(
        observed.pruner._metrics, "record_run", side_effect=RuntimeError("meter broke")
    )
    report: Report = observed.pruner.run_once(trigger="test")
    assert report.outcome == "nothing-to-prune"
