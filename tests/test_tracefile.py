"""The trace file: OTLP-JSON lines, rotation, reading back; `edgeprune trace` on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Device, edgeprune
from observability_helpers import APP
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from controller import agentfiles
from controller.tracefile import (
    JsonLinesSpanExporter,
    RotatingJsonLines,
    read_trace_file,
    trace_files,
)


def line_doc(n: int, pad: int = 0) -> dict:
    return {"n": n, "pad": "x" * pad}


def test_rotation_keeps_whole_lines_and_the_newest_backups(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    lines = RotatingJsonLines(path, max_bytes=100, backups=2)
    for n in range(10):
        lines.append(line_doc(n, pad=30))  # ~50 bytes a line: two lines per file
    assert trace_files(path) == [
        tmp_path / "traces.jsonl.2",
        tmp_path / "traces.jsonl.1",
        path,
    ]
    kept = [json.loads(line)["n"] for f in trace_files(path) for line in f.read_text().splitlines()]
    assert kept == [4, 5, 6, 7, 8, 9]  # oldest dropped, order preserved
    assert all(f.stat().st_size <= 100 for f in trace_files(path))
    assert not (tmp_path / "traces.jsonl.3").exists()


def test_a_line_larger_than_the_cap_still_gets_written_alone(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    lines = RotatingJsonLines(path, max_bytes=50, backups=1)
    lines.append(line_doc(1))
    lines.append(line_doc(2, pad=200))
    assert [json.loads(x)["n"] for x in path.read_text().splitlines()] == [2]
    assert [json.loads(x)["n"] for x in (tmp_path / "traces.jsonl.1").read_text().splitlines()] == [
        1
    ]


def test_zero_backups_truncates_instead(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    lines = RotatingJsonLines(path, max_bytes=60, backups=0)
    for n in range(3):
        lines.append(line_doc(n, pad=30))
    assert trace_files(path) == [path]
    assert [json.loads(x)["n"] for x in path.read_text().splitlines()] == [2]


def make_spans(path: Path, *, max_bytes: int = 1 << 20) -> RotatingJsonLines:
    file = RotatingJsonLines(path, max_bytes=max_bytes, backups=3)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(file)))
    tracer = provider.get_tracer("edgeprune")
    with (
        tracer.start_as_current_span("edgeprune.run", attributes={"edgeprune.trigger": "t"}),
        tracer.start_as_current_span("edgeprune.state.Remove") as state,
    ):
        state.add_event("removal", {"names": ["a:1", "a:latest"], "bytes": 12, "ok": True})
        state.set_status(Status(StatusCode.ERROR, "boom"))
    return file


def test_spans_round_trip_through_otlp_json(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    make_spans(path)
    document = json.loads(path.read_text().splitlines()[0])
    [span_json] = document["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert len(span_json["traceId"]) == 32 and len(span_json["spanId"]) == 16
    assert span_json["kind"] == 1  # INTERNAL, numbered from 1 in OTLP
    assert isinstance(span_json["startTimeUnixNano"], str)  # 64-bit ints as strings

    contents = read_trace_file(path)
    child, root = contents.spans
    assert (child.name, root.name) == ("edgeprune.state.Remove", "edgeprune.run")
    assert child.parent_span_id == root.span_id and root.parent_span_id == ""
    assert child.trace_id == root.trace_id
    assert root.attributes == {"edgeprune.trigger": "t"}
    [event] = child.events
    assert event.attributes == {"names": ("a:1", "a:latest"), "bytes": 12, "ok": True}
    assert child.is_error and child.status_message == "boom"
    assert child.end_ns >= child.start_ns > 0
    assert root.resource["service.name"]


def test_reader_skips_torn_and_foreign_lines_and_reads_backups_in_order(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    make_spans(path, max_bytes=900)  # each span line is large enough to rotate
    make_spans(path, max_bytes=900)
    with path.open("a") as file:
        file.write('{"resourceMetrics": []}\n')  # metric lines are not spans, not errors
        file.write("not json\n")
        file.write('{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "x"}]}]}]}\n')
        file.write('{"resourceSpans": [{"scopeSp')  # torn by a crash
    contents = read_trace_file(path)
    assert len(contents.files) > 1
    assert contents.skipped_lines == 3
    assert [s.name for s in contents.spans] == ["edgeprune.state.Remove", "edgeprune.run"] * 2
    assert len({s.trace_id for s in contents.spans}) == 2


def test_a_span_seen_twice_during_rotation_is_read_once(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    make_spans(path)
    line = path.read_text()
    (tmp_path / "traces.jsonl.1").write_text(line)
    assert len(read_trace_file(path).spans) == 2


# --- a real prune through the CLI --------------------------------------------------


@pytest.fixture
def pruned_device(device: Device, tmp_path: Path) -> tuple[Device, list[str], dict]:
    """Three CLI runs with a trace file small enough to rotate; the last one prunes."""
    config = tmp_path / "config.yaml"
    config.write_text("min-age: 0s\ntrace-file-max-bytes: 12KiB\ntrace-file-backups: 3\n")
    args = device.cli_args(config)
    report: dict = {}
    for n in (1, 2, 3):
        device.sandbox.make_image(f"{APP}:{n}", f"web {n}")
        agentfiles.apply(
            device.spec_dir,
            str(n),
            agentfiles.device_spec(None, [agentfiles.container_app("web", f"{APP}:{n}")]),
        )
        result = edgeprune("run", "--json", *args)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
    assert report["outcome"] == "pruned"
    return device, args, report


def test_trace_last_renders_every_state_and_transition_of_a_real_prune_after_rotation(
    pruned_device: tuple[Device, list[str], dict],
) -> None:
    device, args, report = pruned_device
    path = device.state_dir / "traces.jsonl"
    assert (device.state_dir / "traces.jsonl.1").exists(), "the trace file did not rotate"
    assert all(f.stat().st_size <= 12 * 1024 for f in trace_files(path))

    result = edgeprune("trace", "--last", *args)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"run {report['trace_id']} ")
    assert "trigger=cli outcome=pruned generation=3" in lines[0]
    assert lines[1].strip().startswith("removed 1, kept 2, failed 0;")
    assert f"{report['reclaimed_bytes']['estimated']} B" in lines[1]
    body = "\n".join(lines[2:])
    for source, dest in zip(report["states"], report["states"][1:], strict=False):
        assert f"{source} -> {dest} [" in body
    for state in report["states"][1:-1]:  # every visited state, with its duration
        assert any(line.split()[1:2] == [state] and line.endswith("s") for line in lines[2:])
    assert "podman.remove_image" in body and f"removed image {APP}:1" in body
    offsets = [float(line.split()[0].strip("+s")) for line in lines[2:]]
    assert offsets == sorted(offsets)  # a timeline: in time order
    # the other runs were there too, and --run picks one by a trace ID prefix
    every = edgeprune("trace", *args)
    assert every.stdout.count("\nrun ") + every.stdout.startswith("run ") >= 2
    picked = edgeprune("trace", "--run", report["trace_id"][:10], *args)
    assert picked.stdout.splitlines()[0] == lines[0]


def test_trace_finds_the_run_that_removed_an_image(
    pruned_device: tuple[Device, list[str], dict],
) -> None:
    device, args, report = pruned_device
    found = edgeprune("trace", "--image", f"{APP}:1", *args)
    assert found.returncode == 0, found.stderr
    assert found.stdout.startswith(f"run {report['trace_id']} ")
    assert found.stdout.count("run ") == 1
    by_file = edgeprune(
        "trace",
        "--image",
        report["removed"][0]["id"][:12],
        "--last",
        str(device.state_dir / "traces.jsonl"),
    )
    assert by_file.stdout.splitlines()[0] == found.stdout.splitlines()[0]
    missing = edgeprune("trace", "--image", "registry.example.com/never:1", *args)
    assert missing.returncode == 1 and "no run matches" in missing.stderr


def test_trace_without_a_trace_file_says_so(tmp_path: Path) -> None:
    result = edgeprune("trace", str(tmp_path / "nothing.jsonl"))
    assert result.returncode == 1
    assert f"no trace file at {tmp_path / 'nothing.jsonl'}" in result.stderr


def test_a_fifo_in_place_of_the_trace_file_neither_blocks_writing_nor_reading(
    tmp_path: Path,
) -> None:
    import os
    import threading

    path = tmp_path / "traces.jsonl"
    os.mkfifo(path)
    outcome: dict[str, object] = {}

    def use_it() -> None:
        try:
            RotatingJsonLines(path, max_bytes=1024, backups=1).append({"x": 1})
        except OSError as error:
            outcome["write"] = str(error)
        outcome["read"] = read_trace_file(path).spans

    worker = threading.Thread(target=use_it, daemon=True)
    worker.start()
    worker.join(timeout=5)
    assert not worker.is_alive(), "the trace file blocked"
    assert "not a regular file" in str(outcome["write"])
    assert outcome["read"] == []
