"""OpenTelemetry SDK set-up for the CLI and the daemon; library code uses the API only.

    telemetry = setup_telemetry(config)
    pruner = Pruner(config, **telemetry.pruner_options())
    ...                                  # run_once() as often as needed
    telemetry.shutdown()                 # flushes spans and metrics

Exporters, from the configuration and the standard variables:

- the trace file (`trace-file`, default `<state-dir>/traces.jsonl`): spans as
  OTLP-JSON lines, plus one metrics line after each run;
- OTLP over HTTP when `otlp-endpoint` is set, or `OTEL_EXPORTER_OTLP_ENDPOINT`,
  `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT` or `OTEL_{TRACES,METRICS}_EXPORTER=otlp`
  ask for it (the exporter itself reads headers, timeout, compression);
- the console (stderr) with `console-exporter: true` or `OTEL_*_EXPORTER=console`;
- the Prometheus text file (`metrics-textfile`), rewritten after each run.

`OTEL_SDK_DISABLED=true` makes all of it a no-op: no-op providers, no files.
Set-up never raises: a broken exporter is logged and left out, because
telemetry must never stop a prune.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)

from controller.config import Config
from controller.otlpjson import encode_metrics
from controller.promfile import render_prometheus, write_textfile
from controller.report import Report
from controller.tracefile import JsonLinesSpanExporter, RotatingJsonLines

log = logging.getLogger("edgeprune")

MetricsSink = Callable[[MetricsData], None]


def sdk_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def trace_file_path(config: Config) -> Path | None:
    """The configured trace file; a relative `trace-file` is under the state dir."""
    return None if config.trace_file is None else config.state_dir / config.trace_file


class RunEndMetricReader(MetricReader):
    """Collected after each run (`Telemetry.on_report`), not on a timer."""

    def __init__(self, sinks: Sequence[tuple[str, MetricsSink]]) -> None:
        super().__init__()
        self._sinks = list(sinks)
        self._warned: set[str] = set()

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        for name, sink in self._sinks:
            try:
                sink(metrics_data)
            except Exception as error:  # a full disk must not break the run or flood the log
                if name not in self._warned:
                    log.warning("cannot write %s: %s", name, error)
                    self._warned.add(name)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True  # written after each run already; a flush must not add a line

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


class Telemetry:
    """The providers a host passes to `Pruner`, and their flush/shutdown."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider,
        meter_provider: metrics.MeterProvider,
        *,
        run_reader: RunEndMetricReader | None = None,
        exporters: Sequence[str] = (),
    ) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.exporters = tuple(exporters)  # what is configured, e.g. "otlp http://..."
        self._run_reader = run_reader
        self._closed = False

    def pruner_options(self) -> dict[str, Any]:
        return {
            "tracer_provider": self.tracer_provider,
            "meter_provider": self.meter_provider,
            "on_report": self.on_report,
        }

    def on_report(self, report: Report) -> None:
        """After each run: the metrics line in the trace file, the Prometheus file."""
        if self._run_reader is not None and not self._closed:
            try:
                self._run_reader.collect()
            except Exception as error:
                log.warning("cannot collect metrics after the run: %s", error)

    def flush(self, timeout_millis: int = 10_000) -> None:
        for provider in (self.tracer_provider, self.meter_provider):
            flush = getattr(provider, "force_flush", None)
            if flush is not None and not self._closed:
                try:
                    flush(timeout_millis)
                except Exception as error:
                    log.warning("telemetry flush failed: %s", error)

    def shutdown(self) -> None:
        """Flush and stop every exporter; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for provider in (self.tracer_provider, self.meter_provider):
            shutdown = getattr(provider, "shutdown", None)
            if shutdown is not None:
                try:
                    shutdown()
                except Exception as error:
                    log.warning("telemetry shutdown failed: %s", error)


def noop_telemetry() -> Telemetry:
    return Telemetry(trace.NoOpTracerProvider(), metrics.NoOpMeterProvider())


def setup_telemetry(config: Config) -> Telemetry:
    """The SDK configured from `config` and the OTEL_* variables; never raises."""
    if sdk_disabled():
        return noop_telemetry()
    try:
        return _setup_sdk(config)
    except Exception as error:
        log.warning("telemetry is off: set-up failed: %s", error)
        return noop_telemetry()


def _resource() -> Resource:
    ours: dict[str, str] = {"service.name": "edgeprune", "host.name": socket.gethostname()}
    with contextlib.suppress(PackageNotFoundError):  # running from a source tree
        ours["service.version"] = version("edgeprune")
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over our defaults.
    return Resource.create(ours).merge(OTELResourceDetector().detect())


def _env_exporters(signal: str) -> set[str]:
    value = os.environ.get(f"OTEL_{signal}_EXPORTER", "")
    return {name.strip().lower() for name in value.split(",") if name.strip()}


def _otlp_endpoint(config: Config, signal: str) -> str | None:
    """The endpoint to pass, None to let the exporter read the variables, or "" for off."""
    if config.otlp_endpoint:
        return f"{config.otlp_endpoint.rstrip('/')}/v1/{signal.lower()}"
    names = _env_exporters(signal)
    asked = "otlp" in names or (
        names != {"none"}
        and any(
            os.environ.get(variable)
            for variable in ("OTEL_EXPORTER_OTLP_ENDPOINT", f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
        )
    )
    if not asked:
        return ""
    for variable in ("OTEL_EXPORTER_OTLP_PROTOCOL", f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"):
        if os.environ.get(variable, "http/protobuf") != "http/protobuf":
            log.warning("%s: only http/protobuf is supported; using it", variable)
    return None


def _setup_sdk(config: Config) -> Telemetry:
    resource = _resource()
    tracer_provider = TracerProvider(resource=resource)
    readers: list[MetricReader] = []
    run_sinks: list[tuple[str, MetricsSink]] = []
    exporters: list[str] = []

    trace_file = trace_file_path(config)
    if trace_file is not None:
        lines = RotatingJsonLines(
            trace_file, config.trace_file_max_bytes, config.trace_file_backups
        )
        # Synchronous, one line per finished span: a run cut short by a kill or a
        # power loss still leaves the states it finished (shown as INCOMPLETE).
        tracer_provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(lines)))
        run_sinks.append(
            (f"the trace file {trace_file}", lambda d: lines.append(encode_metrics(d)))
        )
        exporters.append(f"trace-file {trace_file}")
    if config.metrics_textfile is not None:
        textfile = config.state_dir / config.metrics_textfile
        run_sinks.append(
            (
                f"the metrics file {textfile}",
                lambda d: write_textfile(textfile, render_prometheus(d)),
            )
        )
        exporters.append(f"metrics-textfile {textfile}")

    endpoint = _otlp_endpoint(config, "TRACES")
    if endpoint != "":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        exporters.append(f"otlp-traces {endpoint or 'from OTEL_* variables'}")
    endpoint = _otlp_endpoint(config, "METRICS")
    if endpoint != "":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=endpoint)))
        exporters.append(f"otlp-metrics {endpoint or 'from OTEL_* variables'}")

    # stderr: stdout carries the --json report and must stay a clean document
    if config.console_exporter or "console" in _env_exporters("TRACES"):
        tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
        exporters.append("console-traces")
    if config.console_exporter or "console" in _env_exporters("METRICS"):
        readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter(out=sys.stderr)))
        exporters.append("console-metrics")

    run_reader = RunEndMetricReader(run_sinks) if run_sinks else None
    meter_provider = MeterProvider(
        resource=resource, metric_readers=[*readers, *([run_reader] if run_reader else [])]
    )
    log.debug("telemetry exporters: %s", ", ".join(exporters) or "none")
    return Telemetry(tracer_provider, meter_provider, run_reader=run_reader, exporters=exporters)
