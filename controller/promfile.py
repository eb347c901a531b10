"""The metrics as a Prometheus text file, for node_exporter's textfile collector.

`render_prometheus` turns the SDK's collected metrics into the text exposition
format: dots become underscores, the unit becomes a suffix (`By` -> `_bytes`,
`s` -> `_seconds`), monotonic sums get `_total`, histograms expand to
`_bucket`/`_sum`/`_count`. No timestamps (the textfile collector rejects
them). `write_textfile` replaces the file atomically, so the collector never
reads half a file.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics.export import Gauge, Histogram, MetricsData, Sum

_UNIT_SUFFIX = {"By": "bytes", "s": "seconds", "ms": "milliseconds", "1": "ratio"}
_INVALID = re.compile(r"[^a-zA-Z0-9_:]")


def metric_name(name: str, unit: str | None, *, counter: bool = False) -> str:
    """`edgeprune.reclaimed` + `By` (counter) -> `edgeprune_reclaimed_bytes_total`."""
    base = _INVALID.sub("_", name)
    suffix = _UNIT_SUFFIX.get(unit or "", "")  # annotations like {run} carry no unit
    if suffix and not base.endswith(f"_{suffix}"):
        base = f"{base}_{suffix}"
    return f"{base}_total" if counter else base


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return "NaN" if math.isnan(value) else repr(value)


def _escape(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _labels(attributes: Mapping[str, Any] | None, extra: Mapping[str, str] | None = None) -> str:
    pairs = {_INVALID.sub("_", str(k)): str(v) for k, v in (attributes or {}).items()}
    pairs.update(extra or {})
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(pairs.items())) + "}"


def _family(metric: Any) -> tuple[str, list[str]] | None:
    data = metric.data
    help_text = (metric.description or metric.name).replace("\\", r"\\").replace("\n", r"\n")
    if isinstance(data, Sum | Gauge):
        counter = isinstance(data, Sum) and data.is_monotonic
        name = metric_name(metric.name, metric.unit, counter=counter)
        lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {'counter' if counter else 'gauge'}"]
        points = sorted((_labels(p.attributes), _number(p.value)) for p in data.data_points)
        lines += [f"{name}{labels} {value}" for labels, value in points]
        return name, lines
    if isinstance(data, Histogram):
        name = metric_name(metric.name, metric.unit)
        lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        for point in sorted(data.data_points, key=lambda p: _labels(p.attributes)):
            cumulative = 0
            bounds = [*point.explicit_bounds, math.inf]
            for bound, count in zip(bounds, point.bucket_counts, strict=True):
                cumulative += count
                le = _labels(point.attributes, {"le": _number(float(bound))})
                lines.append(f"{name}_bucket{le} {cumulative}")
            labels = _labels(point.attributes)
            lines.append(f"{name}_sum{labels} {_number(point.sum)}")
            lines.append(f"{name}_count{labels} {point.count}")
        return name, lines
    return None  # exponential histograms: edgeprune defines none


def render_prometheus(metrics_data: MetricsData) -> str:
    families: dict[str, list[str]] = {}
    for resource_metrics in metrics_data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                family = _family(metric)
                if family is not None:
                    families[family[0]] = family[1]
    return "".join(line + "\n" for name in sorted(families) for line in families[name])


def write_textfile(path: Path, text: str) -> None:
    """Replace `path` atomically (temp file in the same dir, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not *.prom: the collector must never pick up the temp file.
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temp.open("w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
