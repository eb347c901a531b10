"""Shared by the observability tests: a device with one image to prune, private
OpenTelemetry providers (a second global provider would be ignored), and an
OTLP/HTTP receiver on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import Device
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from controller import agentfiles
from controller.config import Config
from controller.podman import PodmanStore, RetryPolicy
from controller.pruner import Pruner

APP = "registry.example.com/app/web"
OTEL_VARIABLES = (
    "OTEL_SDK_DISABLED",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
)


def clear_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that set up the SDK must not see the caller's OTEL_* variables."""
    for variable in OTEL_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


def ready_to_prune(device: Device) -> None:
    """Three generations applied, pruned after the first two: web:1 is due for removal."""
    for n in (1, 2, 3):
        device.sandbox.make_image(f"{APP}:{n}", f"web {n}")
        agentfiles.apply(
            device.spec_dir,
            str(n),
            agentfiles.device_spec(None, [agentfiles.container_app("web", f"{APP}:{n}")]),
        )
        if n < 3:
            device.prune()


def no_sleep_store(config: Config) -> PodmanStore:
    return PodmanStore(config.podman_url, retry=RetryPolicy(sleep=lambda _seconds: None))


@dataclass
class Observed:
    """A Pruner on private providers, with what they recorded."""

    pruner: Pruner
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader


def observed_pruner(config: Config, store_factory=no_sleep_store) -> Observed:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    pruner = Pruner(
        config,
        store_factory=store_factory,
        tracer_provider=tracer_provider,
        meter_provider=MeterProvider(metric_readers=[reader]),
    )
    return Observed(pruner, spans, reader)


@dataclass
class Receiver:
    """What an OTLP/HTTP collector on 127.0.0.1 received: (path, body) per request."""

    url: str
    requests: list[tuple[str, bytes]] = field(default_factory=list)

    def bodies(self, path: str) -> list[bytes]:
        return [body for p, body in self.requests if p == path]


@contextmanager
def otlp_receiver() -> Iterator[Receiver]:
    received: list[tuple[str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            received.append((self.path, self.rfile.read(length)))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Receiver(f"http://127.0.0.1:{server.server_address[1]}", received)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
