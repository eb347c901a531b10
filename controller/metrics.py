"""The run metrics: OpenTelemetry instruments fed from each run's report.

Library code: the OpenTelemetry API only. The host (CLI, daemon, tests) passes
a meter provider; without one the global provider is used, a no-op until
somebody configures the SDK. Every figure comes from the `Report`, so the
metrics, the trace attributes and the JSON report cannot disagree.

Names (Prometheus form in docs/observability.md):

- `edgeprune.runs` {outcome, trigger}: runs
- `edgeprune.removed` {kind}: images / manifest lists / artifacts removed
- `edgeprune.removal.failures` {kind}: items whose removal failed
- `edgeprune.kept` {kind}: items the last run kept (gauge)
- `edgeprune.reclaimed` {method=measured|estimated}: bytes reclaimed
- `edgeprune.run.duration` {outcome}: run duration in seconds (histogram)
- `edgeprune.failures` {state}: runs that ended in Failed, by the failing state
- `edgeprune.transitions` {source, dest, trigger}: state machine transitions
- `edgeprune.last_run.timestamp`: end of the last run, epoch seconds (gauge)
"""

from __future__ import annotations

from collections import Counter

from opentelemetry import metrics

from controller.report import Item, Report

# Every kind gets a series each run (zero included), so a dashboard sees 0, not "no data".
KINDS = ("image", "manifest-list", "artifact")
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def _by_kind(items: list[Item]) -> Counter[str]:
    return Counter(item.kind for item in items)


class RunMetrics:
    """The instruments of one meter; `record_run` after each run."""

    def __init__(self, meter_provider: metrics.MeterProvider | None = None) -> None:
        meter = metrics.get_meter("edgeprune", meter_provider=meter_provider)
        self.runs = meter.create_counter(
            "edgeprune.runs", unit="{run}", description="Prune runs by outcome and trigger"
        )
        self.removed = meter.create_counter(
            "edgeprune.removed", unit="{item}", description="Images and artifacts removed"
        )
        self.removal_failures = meter.create_counter(
            "edgeprune.removal.failures",
            unit="{item}",
            description="Images and artifacts whose removal failed",
        )
        self.kept = meter.create_gauge(
            "edgeprune.kept", unit="{item}", description="Images and artifacts the last run kept"
        )
        self.reclaimed = meter.create_counter(
            "edgeprune.reclaimed",
            unit="By",
            description="Bytes reclaimed: measured on the filesystem, estimated from unique sizes",
        )
        self.duration = meter.create_histogram(
            "edgeprune.run.duration",
            unit="s",
            description="Duration of prune runs",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.failures = meter.create_counter(
            "edgeprune.failures",
            unit="{run}",
            description="Runs that ended in Failed, by the state that failed",
        )
        self.transitions = meter.create_counter(
            "edgeprune.transitions", unit="{transition}", description="State machine transitions"
        )
        self.last_run = meter.create_gauge(
            "edgeprune.last_run.timestamp",
            unit="s",
            description="When the last run finished (Unix time)",
        )

    def record_transition(
        self, source: str, dest: str, trigger: str, error: BaseException | None = None
    ) -> None:
        """A `machine.TransitionHook`."""
        self.transitions.add(1, {"source": source, "dest": dest, "trigger": trigger})

    def record_run(self, report: Report) -> None:
        self.runs.add(1, {"outcome": report.outcome, "trigger": report.trigger})
        removed, failed, kept = (
            _by_kind(report.removed),
            _by_kind(report.failures),
            _by_kind(report.kept),
        )
        for kind in sorted({*KINDS, *removed, *failed, *kept}):
            self.removed.add(removed[kind], {"kind": kind})
            self.removal_failures.add(failed[kind], {"kind": kind})
            self.kept.set(kept[kind], {"kind": kind})
        self.reclaimed.add(report.estimated_bytes, {"method": "estimated"})
        # A counter cannot go down: a run during which the disk filled faster than
        # pruning freed it measures < 0; the report and the trace keep that figure.
        self.reclaimed.add(max(0, report.measured_bytes or 0), {"method": "measured"})
        self.duration.record(report.duration_seconds, {"outcome": report.outcome})
        if report.outcome == "failed":
            self.failures.add(1, {"state": report.failed_state or "internal"})
        self.last_run.set(report.finished_at)
