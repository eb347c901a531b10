"""OTLP/JSON encoding of spans and metrics, and decoding of spans (the trace file).

The shape is the OTLP/JSON protocol mapping, the one an OpenTelemetry
collector's file exporter writes too: lowerCamelCase keys, trace and span IDs
as lowercase hex, 64-bit integers as decimal strings, enums as numbers. Pure
functions over the SDK's read-only span and metric objects; no I/O.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.metrics.export import Gauge, Histogram, MetricsData, Sum
from opentelemetry.sdk.trace import ReadableSpan

JsonDict = dict[str, Any]

# --- attributes -----------------------------------------------------------------


def _any_value(value: Any) -> JsonDict:
    if isinstance(value, bool):  # before int: bool is an int subclass
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, bytes):
        return {"bytesValue": base64.b64encode(value).decode("ascii")}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return {"arrayValue": {"values": [_any_value(item) for item in value]}}
    return {"stringValue": str(value)}


def encode_attributes(attributes: Mapping[str, Any] | None) -> list[JsonDict]:
    return [{"key": key, "value": _any_value(value)} for key, value in (attributes or {}).items()]


def _decode_value(value: Mapping[str, Any]) -> Any:
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "arrayValue" in value:
        return tuple(_decode_value(v) for v in value["arrayValue"].get("values") or ())
    if "bytesValue" in value:
        return base64.b64decode(value["bytesValue"])
    return None


def decode_attributes(attributes: Iterable[Mapping[str, Any]] | None) -> dict[str, Any]:
    return {a["key"]: _decode_value(a.get("value") or {}) for a in attributes or ()}


# --- spans ----------------------------------------------------------------------


def _hex(number: int, width: int) -> str:
    return format(number, f"0{width}x")


def _span(span: ReadableSpan) -> JsonDict:
    context = span.get_span_context()
    assert context is not None  # an SDK span always has one
    out: JsonDict = {
        "traceId": _hex(context.trace_id, 32),
        "spanId": _hex(context.span_id, 16),
        "parentSpanId": _hex(span.parent.span_id, 16) if span.parent else "",
        "name": span.name,
        "kind": span.kind.value + 1,  # OTLP numbers kinds from 1 (INTERNAL)
        "startTimeUnixNano": str(span.start_time or 0),
        "endTimeUnixNano": str(span.end_time or 0),
        "attributes": encode_attributes(span.attributes),
        "events": [
            {
                "timeUnixNano": str(event.timestamp),
                "name": event.name,
                "attributes": encode_attributes(event.attributes),
            }
            for event in span.events
        ],
        "status": {"code": span.status.status_code.value},
    }
    if span.status.description:
        out["status"]["message"] = span.status.description
    return out


def encode_spans(spans: Sequence[ReadableSpan]) -> JsonDict:
    """One ExportTraceServiceRequest document, spans grouped by resource and scope."""
    grouped: dict[int, tuple[Any, dict[tuple[str, str], list[JsonDict]]]] = {}
    for span in spans:
        resource_spans = grouped.setdefault(id(span.resource), (span.resource, {}))[1]
        scope = span.instrumentation_scope
        key = (scope.name, scope.version or "") if scope else ("", "")
        resource_spans.setdefault(key, []).append(_span(span))
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": encode_attributes(resource.attributes)},
                "scopeSpans": [
                    {"scope": {"name": name, "version": version}, "spans": encoded}
                    for (name, version), encoded in scopes.items()
                ],
            }
            for resource, scopes in grouped.values()
        ]
    }


@dataclass(frozen=True)
class SpanEvent:
    name: str
    time_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SpanRecord:
    """One span as read back from the trace file."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    events: tuple[SpanEvent, ...] = ()
    status_code: int = 0  # 0 unset, 1 ok, 2 error
    status_message: str = ""
    resource: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)

    @property
    def is_error(self) -> bool:
        return self.status_code == 2


def decode_spans(document: Mapping[str, Any]) -> list[SpanRecord]:
    """The spans of one ExportTraceServiceRequest document; raises on a bad shape."""
    records: list[SpanRecord] = []
    for resource_spans in document.get("resourceSpans") or ():
        resource = decode_attributes((resource_spans.get("resource") or {}).get("attributes"))
        for scope_spans in resource_spans.get("scopeSpans") or ():
            for span in scope_spans.get("spans") or ():
                status = span.get("status") or {}
                records.append(
                    SpanRecord(
                        trace_id=str(span["traceId"]).lower(),
                        span_id=str(span["spanId"]).lower(),
                        parent_span_id=str(span.get("parentSpanId") or "").lower(),
                        name=str(span["name"]),
                        start_ns=int(span["startTimeUnixNano"]),
                        end_ns=int(span.get("endTimeUnixNano") or span["startTimeUnixNano"]),
                        attributes=decode_attributes(span.get("attributes")),
                        events=tuple(
                            SpanEvent(
                                str(e["name"]),
                                int(e["timeUnixNano"]),
                                decode_attributes(e.get("attributes")),
                            )
                            for e in span.get("events") or ()
                        ),
                        status_code=int(status.get("code") or 0),
                        status_message=str(status.get("message") or ""),
                        resource=resource,
                    )
                )
    return records


# --- metrics --------------------------------------------------------------------


def _number_point(point: Any) -> JsonDict:
    out: JsonDict = {
        "attributes": encode_attributes(point.attributes),
        "startTimeUnixNano": str(point.start_time_unix_nano or 0),
        "timeUnixNano": str(point.time_unix_nano),
    }
    if isinstance(point.value, int):
        out["asInt"] = str(point.value)
    else:
        out["asDouble"] = float(point.value)
    return out


def _histogram_point(point: Any) -> JsonDict:
    return {
        "attributes": encode_attributes(point.attributes),
        "startTimeUnixNano": str(point.start_time_unix_nano),
        "timeUnixNano": str(point.time_unix_nano),
        "count": str(point.count),
        "sum": float(point.sum),
        "bucketCounts": [str(count) for count in point.bucket_counts],
        "explicitBounds": [float(bound) for bound in point.explicit_bounds],
        "min": float(point.min),
        "max": float(point.max),
    }


def _metric(metric: Any) -> JsonDict | None:
    out: JsonDict = {"name": metric.name, "description": metric.description or ""}
    out["unit"] = metric.unit or ""
    data = metric.data
    if isinstance(data, Sum):
        out["sum"] = {
            "dataPoints": [_number_point(p) for p in data.data_points],
            "aggregationTemporality": data.aggregation_temporality.value,
            "isMonotonic": data.is_monotonic,
        }
    elif isinstance(data, Gauge):
        out["gauge"] = {"dataPoints": [_number_point(p) for p in data.data_points]}
    elif isinstance(data, Histogram):
        out["histogram"] = {
            "dataPoints": [_histogram_point(p) for p in data.data_points],
            "aggregationTemporality": data.aggregation_temporality.value,
        }
    else:  # exponential histograms: edgeprune defines none
        return None
    return out


def encode_metrics(metrics_data: MetricsData) -> JsonDict:
    """One ExportMetricsServiceRequest document."""
    return {
        "resourceMetrics": [
            {
                "resource": {"attributes": encode_attributes(rm.resource.attributes)},
                "scopeMetrics": [
                    {
                        "scope": {"name": sm.scope.name, "version": sm.scope.version or ""},
                        "metrics": [m for m in map(_metric, sm.metrics) if m is not None],
                    }
                    for sm in rm.scope_metrics
                ],
            }
            for rm in metrics_data.resource_metrics
        ]
    }
