"""Rendering runs from trace-file spans as timelines (pure unit tests)."""

from __future__ import annotations

import pytest

from controller.otlpjson import SpanEvent, SpanRecord
from controller.traceview import SelectionError, group_runs, render_run, select_runs

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z in ns
MS = 1_000_000


def span(
    trace: str, span_id: str, parent: str, name: str, start_ms: int, end_ms: int, **kw
) -> SpanRecord:
    return SpanRecord(
        trace_id=trace,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        start_ns=T0 + start_ms * MS,
        end_ns=T0 + end_ms * MS,
        **kw,
    )


def transition(at_ms: int, source: str, dest: str, trigger: str, **extra: str) -> SpanEvent:
    return SpanEvent(
        "transition", T0 + at_ms * MS, {"source": source, "dest": dest, "trigger": trigger, **extra}
    )


def failed_run(trace: str = "a" * 32, offset_ms: int = 0) -> list[SpanRecord]:
    o = offset_ms
    root = span(
        trace,
        "r" * 16,
        "",
        "edgeprune.run",
        o,
        o + 40,
        attributes={
            "edgeprune.trigger": "disk-alert",
            "edgeprune.outcome": "failed",
            "edgeprune.spec_generation": "7",
            "edgeprune.images.removed": 0,
            "edgeprune.images.kept": 3,
            "edgeprune.images.failed": 0,
            "edgeprune.bytes.estimated": 0,
            "edgeprune.rollback.ok": True,
        },
        events=(
            transition(o + 1, "Idle", "Inventory", "start"),
            transition(o + 10, "Inventory", "Plan", "inventoried"),
            transition(o + 12, "Plan", "VerifyRollback", "planned"),
            transition(o + 14, "VerifyRollback", "Remove", "verified"),
            transition(o + 39, "Remove", "Failed", "fail", error="PodmanUnavailable: gone"),
        ),
        status_code=2,
        status_message="Remove: gone",
    )

    def state(n: int, name: str, start: int, end: int, **kw) -> SpanRecord:
        attributes = {"edgeprune.state": name}
        return span(
            trace,
            str(n) * 16,
            root.span_id,
            f"edgeprune.state.{name}",
            start,
            end,
            attributes=attributes,
            **kw,
        )

    exception = SpanEvent(
        "exception",
        T0 + (o + 38) * MS,
        {"exception.type": "PodmanUnavailable", "exception.message": "gone"},
    )
    retry = SpanEvent(
        "retry",
        T0 + (o + 17) * MS,
        {"operation": "remove image x", "attempt": 1, "wait_seconds": 0.5, "error": "socket gone"},
    )
    states = [
        state(1, "Inventory", o + 2, o + 9),
        state(2, "Plan", o + 11, o + 12),
        state(3, "VerifyRollback", o + 13, o + 14),
        state(
            4, "Remove", o + 15, o + 39, events=(exception,), status_code=2, status_message="gone"
        ),
        span(
            trace,
            "5" * 16,
            "4" * 16,
            "podman.remove_image",
            o + 16,
            o + 37,
            attributes={"edgeprune.image": "registry.example.com/app/web:1"},
            events=(retry,),
            status_code=2,
            status_message="gone",
        ),
    ]
    return [root, *states]


def test_a_failed_run_renders_as_an_indented_timeline() -> None:
    [run] = group_runs(failed_run())
    assert render_run(run).splitlines() == [
        f"run {'a' * 32}  2026-01-01T00:00:00.000+00:00  "
        "trigger=disk-alert outcome=failed generation=7  0.040s",
        "  removed 0, kept 3, failed 0; reclaimed unknown measured, 0 B estimated; rollback ok",
        "  error: Remove: gone",
        "    +0.001s  Idle -> Inventory [start]",
        "    +0.002s  Inventory  0.007s",
        "    +0.010s  Inventory -> Plan [inventoried]",
        "    +0.011s  Plan  0.001s",
        "    +0.012s  Plan -> VerifyRollback [planned]",
        "    +0.013s  VerifyRollback  0.001s",
        "    +0.014s  VerifyRollback -> Remove [verified]",
        "    +0.015s  Remove  0.024s  ERROR",
        "    +0.016s    podman.remove_image  0.021s  registry.example.com/app/web:1  ERROR gone",
        "    +0.017s      retry: attempt 1 of remove image x failed, next in 0.50s: socket gone",
        "    +0.038s    ERROR PodmanUnavailable: gone",
        "    +0.039s  Remove -> Failed [fail]  error: PodmanUnavailable",
    ]


def test_removal_events_show_kind_names_id_and_bytes() -> None:
    root = span("b" * 32, "r" * 16, "", "edgeprune.run", 0, 10)
    remove = span(
        "b" * 32,
        "1" * 16,
        "r" * 16,
        "edgeprune.state.Remove",
        1,
        9,
        attributes={"edgeprune.state": "Remove"},
        events=(
            SpanEvent(
                "removal",
                T0 + 2 * MS,
                {"result": "removed", "kind": "image", "names": ("a:1", "a:x"), "id": "f" * 64,
                 "bytes": 3 * 1024 * 1024, "reasons": ("unreferenced: gone",)},
            ),
            SpanEvent(
                "removal",
                T0 + 3 * MS,
                {"result": "in-use", "kind": "image", "names": (), "id": "e" * 64, "bytes": 1,
                 "containers": ("c1",)},
            ),
        ),
    )  # fmt: skip
    text = render_run(group_runs([root, remove])[0])
    assert (
        "removed image a:1, a:x (ffffffffffff) 3145728 B (3.0 MiB); why: unreferenced: gone" in text
    )
    assert "kept image <none> (eeeeeeeeeeee): in use by c1" in text


def test_a_run_without_its_run_span_is_shown_as_incomplete() -> None:
    spans = [s for s in failed_run() if s.name != "edgeprune.run"]
    [run] = group_runs(spans)
    lines = render_run(run).splitlines()
    assert "INCOMPLETE" in lines[0] and "stopped mid-run" in lines[0]
    assert lines[1] == "    +0.000s  Inventory  0.007s"
    assert any("podman.remove_image" in line for line in lines)


def runs_for_selection():
    return group_runs(
        failed_run("c" * 32, offset_ms=1000) + failed_run("a" * 32) + failed_run("ab" + "0" * 30)
    )


def test_runs_are_ordered_by_start_and_last_picks_the_latest() -> None:
    runs = runs_for_selection()
    assert [r.trace_id[:2] for r in runs] == ["aa", "ab", "cc"]
    assert [r.trace_id for r in select_runs(runs, last=True)] == ["c" * 32]
    assert [r.trace_id for r in select_runs(runs, run_id="AB")] == ["ab" + "0" * 30]


def test_selection_errors_name_the_problem() -> None:
    runs = runs_for_selection()
    with pytest.raises(SelectionError, match="matches several runs"):
        select_runs(runs, run_id="a")
    with pytest.raises(SelectionError, match="no run matches --run dd"):
        select_runs(runs, run_id="dd")
    with pytest.raises(SelectionError, match="no runs in the trace file"):
        select_runs([])


def test_image_filter_matches_attributes_and_event_values() -> None:
    runs = runs_for_selection()
    assert len(select_runs(runs, image="registry.example.com/app/web:1")) == 3
    with pytest.raises(SelectionError, match="--image other:1"):
        select_runs(runs, image="other:1")
