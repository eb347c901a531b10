"""`edgeprune trace`: the runs in the trace file as indented timelines.

For a device with no collector: every state visit with its duration, every
transition, Podman call, retry, removal and error, at its offset from the
start of the run. Pure: spans in (see `tracefile.read_trace_file`), text out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from controller.otlpjson import SpanEvent, SpanRecord

RUN_SPAN = "edgeprune.run"
_INDENT = "  "


@dataclass
class Run:
    """The spans of one trace; `root` is None when the run span never ended."""

    trace_id: str
    root: SpanRecord | None
    spans: list[SpanRecord] = field(default_factory=list)

    @property
    def start_ns(self) -> int:
        return self.root.start_ns if self.root else min(s.start_ns for s in self.spans)

    def mentions(self, text: str) -> bool:
        """True when an attribute or event of the run names `text` (an image name or ID)."""
        values: list[Any] = []
        for span in self.spans:
            values += span.attributes.values()
            for event in span.events:
                values += event.attributes.values()
        return any(text in value for value in _strings(values))


def _strings(values: Iterable[Any]) -> Iterator[str]:
    for value in values:
        if isinstance(value, str):
            yield value
        elif isinstance(value, tuple | list):
            yield from _strings(value)


def group_runs(spans: Iterable[SpanRecord]) -> list[Run]:
    """Spans grouped by trace, oldest run first."""
    by_trace: dict[str, list[SpanRecord]] = defaultdict(list)
    for span in spans:
        by_trace[span.trace_id].append(span)
    runs = []
    for trace_id, members in by_trace.items():
        roots = [s for s in members if s.name == RUN_SPAN and not s.parent_span_id]
        runs.append(Run(trace_id, roots[0] if roots else None, members))
    return sorted(runs, key=lambda run: run.start_ns)


class SelectionError(ValueError):
    """The selection matches nothing, or more than one run for --run."""


def select_runs(
    runs: list[Run], *, run_id: str | None = None, last: bool = False, image: str | None = None
) -> list[Run]:
    selected = [run for run in runs if image is None or run.mentions(image)]
    if run_id:
        selected = [run for run in selected if run.trace_id.startswith(run_id.lower())]
        if len(selected) > 1:
            ids = ", ".join(run.trace_id for run in selected)
            raise SelectionError(f"trace ID prefix {run_id!r} matches several runs: {ids}")
    if not selected:
        wanted = " ".join(
            part
            for part in (f"--run {run_id}" if run_id else "", f"--image {image}" if image else "")
            if part
        )
        raise SelectionError(f"no run matches {wanted}" if wanted else "no runs in the trace file")
    return selected[-1:] if last else selected


# --- rendering ----------------------------------------------------------------


def _seconds(ns: int) -> str:
    return f"{ns / 1e9:.3f}s"


def _size(value: Any) -> str:
    if not isinstance(value, int):
        return "unknown"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(value) >= scale:
            return f"{value} B ({value / scale:.1f} {unit})"
    return f"{value} B"


def _names(attributes: dict[str, Any]) -> str:
    names = attributes.get("names") or ()
    return ", ".join((names,) if isinstance(names, str) else names) or "<none>"


def _event_text(event: SpanEvent) -> str:
    a = event.attributes
    if event.name == "transition":
        text = f"{a.get('source')} -> {a.get('dest')} [{a.get('trigger')}]"
        # the error's type only: its message is on the failed state's span
        return f"{text}  error: {str(a['error']).split(':')[0]}" if a.get("error") else text
    if event.name == "removal":
        what = f"{a.get('kind', 'image')} {_names(a)} ({str(a.get('id', ''))[:12]})"
        result = a.get("result")
        if result == "removed":
            why = "; ".join(a.get("reasons") or ())
            return f"removed {what} {_size(a.get('bytes'))}" + (f"; why: {why}" if why else "")
        if result == "already-gone":
            return f"already gone: {what}"
        if result == "in-use":
            holders = ", ".join(a.get("containers") or ()) or "a container"
            return f"kept {what}: in use by {holders}"
        return f"FAILED to remove {what}: {a.get('detail', '')}"
    if event.name == "retry":
        return (
            f"retry: attempt {a.get('attempt')} of {a.get('operation')} failed, "
            f"next in {float(a.get('wait_seconds') or 0):.2f}s: {a.get('error')}"
        )
    if event.name == "exception":
        return f"ERROR {a.get('exception.type')}: {a.get('exception.message')}"
    details = " ".join(f"{k}={v}" for k, v in a.items())
    return f"{event.name} {details}".rstrip()


def _span_text(span: SpanRecord) -> str:
    name = span.attributes.get("edgeprune.state") or span.name
    text = f"{name}  {_seconds(span.duration_ns)}"
    if "edgeprune.image" in span.attributes:
        text += f"  {span.attributes['edgeprune.image']}"
    if span.is_error:
        recorded = any(event.name == "exception" for event in span.events)
        text += "  ERROR" if recorded else f"  ERROR {span.status_message}"
    return text


def _summary(root: SpanRecord) -> list[str]:
    a = root.attributes
    counts = ", ".join(
        f"{what} {a.get(f'edgeprune.images.{what}', 0)}" for what in ("removed", "kept", "failed")
    )
    artifacts = [a.get(f"edgeprune.artifacts.{w}", 0) for w in ("removed", "kept", "failed")]
    if any(artifacts):
        counts += ", artifacts removed {}, kept {}, failed {}".format(*artifacts)
    reclaimed = (
        f"reclaimed {_size(a.get('edgeprune.bytes.measured'))} measured, "
        f"{_size(a.get('edgeprune.bytes.estimated'))} estimated"
    )
    missing = a.get("edgeprune.rollback.missing") or ()
    ok = a.get("edgeprune.rollback.ok")
    rollback = {True: "rollback ok", False: "rollback NOT ok"}.get(ok, "rollback not checked")
    if missing:
        rollback += f" (missing: {', '.join(missing)})"
    lines = [f"{counts}; {reclaimed}; {rollback}"]
    if root.is_error:
        lines.append(f"error: {root.status_message}")
    return lines


def _header(run: Run) -> str:
    start = datetime.fromtimestamp(run.start_ns / 1e9, UTC).isoformat(timespec="milliseconds")
    if run.root is None:
        return (
            f"run {run.trace_id}  {start}  INCOMPLETE: no {RUN_SPAN} span "
            "(the process stopped mid-run)"
        )
    a = run.root.attributes
    parts = [
        f"trigger={a.get('edgeprune.trigger', '?')}",
        f"outcome={a.get('edgeprune.outcome', '?')}",
        f"generation={a.get('edgeprune.spec_generation') or '?'}",
    ]
    if a.get("edgeprune.dry_run"):
        parts.append("dry-run")
    return f"run {run.trace_id}  {start}  {' '.join(parts)}  {_seconds(run.root.duration_ns)}"


def render_run(run: Run) -> str:
    children: dict[str, list[SpanRecord]] = defaultdict(list)
    ids = {span.span_id for span in run.spans}
    for span in run.spans:
        if span is not run.root:
            parent = span.parent_span_id if span.parent_span_id in ids else ""
            children[parent].append(span)
    lines: list[tuple[int, int, int, str]] = []  # (time, order, depth, text)

    def add(time_ns: int, depth: int, text: str) -> None:
        lines.append((time_ns, len(lines), depth, text))

    def walk(span: SpanRecord, depth: int) -> None:
        add(span.start_ns, depth, _span_text(span))
        for event in span.events:
            add(event.time_ns, depth + 1, _event_text(event))
        for child in sorted(children[span.span_id], key=lambda s: s.start_ns):
            walk(child, depth + 1)

    top = run.root.span_id if run.root else ""
    if run.root is not None:
        for event in run.root.events:
            add(event.time_ns, 0, _event_text(event))
    for span in sorted(children[top] + (children[""] if top else []), key=lambda s: s.start_ns):
        walk(span, 0)

    origin = run.start_ns
    out = [_header(run)]
    if run.root is not None:
        out += [_INDENT + line for line in _summary(run.root)]
    for time_ns, _, depth, text in sorted(lines):
        offset = f"+{(time_ns - origin) / 1e9:.3f}s"
        out.append(f"{_INDENT}{offset:>9}  {_INDENT * depth}{text}")
    return "\n".join(out)


def render_runs(runs: Iterable[Run]) -> str:
    return "\n\n".join(render_run(run) for run in runs)
