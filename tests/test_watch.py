"""`edgeprune watch`: a real daemon process on a real store, and its spec watcher."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Device
from daemon import Daemon

from controller import agentfiles, watch
from controller.watch import DirectoryWatch, SpecWatcher

APP = "registry.example.com/app/web"


def apply(device: Device, n: int) -> None:
    device.sandbox.make_image(f"{APP}:{n}", f"web {n}")
    agentfiles.apply(
        device.spec_dir,
        str(n),
        agentfiles.device_spec(None, [agentfiles.container_app("web", f"{APP}:{n}")]),
    )


def device_args(device: Device, config: Path) -> list[str]:
    return device.cli_args(config)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text("min-age: 0s\nwatch-poll-interval: 200ms\ndisk-alert-rules: []\n")
    return path


@pytest.fixture
def prepared(device: Device) -> Device:
    """Generations 1-3 applied, the ledger saw 1 and 2: web:1 is due at the next run."""
    for n in (1, 2, 3):
        apply(device, n)
        if n < 3:
            device.prune()
    return device


@pytest.fixture
def daemon(prepared: Device, config: Path, tmp_path: Path) -> Iterator[Daemon]:
    process = Daemon(tmp_path, *device_args(prepared, config))
    yield process
    process.stop()


def test_prunes_at_start_and_after_each_reconciliation(prepared: Device, daemon: Daemon) -> None:
    daemon.wait_for(r"prune run started \(trigger=startup\)")
    daemon.wait_for("prune run finished: outcome=pruned removed=1")
    assert f"{APP}:1" not in prepared.image_names()
    apply(prepared, 4)  # the agent reconciles generation 4
    daemon.wait_for(r"reconciliation detected: .*current.json renderedVersion 3 -> 4")
    daemon.wait_for(r"prune run started \(trigger=after-update\)")
    daemon.wait_for("prune run finished: outcome=pruned removed=1", count=2)
    assert prepared.image_names() >= {f"{APP}:3", f"{APP}:4"}
    assert f"{APP}:2" not in prepared.image_names()
    assert daemon.stop() == 0
    assert daemon.count("edgeprune watch stopped") == 1


def test_sighup_reloads_the_configuration_and_sigterm_stops(
    prepared: Device, daemon: Daemon, config: Path
) -> None:
    daemon.wait_for("prune run finished: outcome=pruned")
    config.write_text("min-age: 0s\nwatch-poll-interval: 200ms\nenabled: false\n")
    daemon.send(signal.SIGHUP)
    daemon.wait_for("configuration reloaded: pruning disabled")
    apply(prepared, 4)
    daemon.wait_for("reconciliation detected")
    daemon.wait_for("pruning is disabled by configuration; nothing done")
    assert f"{APP}:2" in prepared.image_names()  # disabled: the next runs do nothing

    config.write_text("min-age: soon\n")
    daemon.send(signal.SIGHUP)
    daemon.wait_for("SIGHUP: configuration not reloaded, keeping the running one: .*min-age")

    config.write_text("min-age: 0s\nwatch-poll-interval: 200ms\n")
    daemon.send(signal.SIGHUP)
    daemon.wait_for("configuration reloaded: pruning enabled")
    daemon.wait_for(r"prune run started \(trigger=config-reload\)")  # enabling requests a run
    daemon.wait_for("prune run finished: outcome=pruned", count=2)
    assert f"{APP}:2" not in prepared.image_names()

    daemon.send(signal.SIGTERM)
    assert daemon.proc.wait(30) == 0
    daemon.wait_for("SIGTERM: stopping after the current item")
    daemon.wait_for("edgeprune watch stopped")


def test_sigterm_mid_removal_stops_after_the_current_item(
    prepared: Device, config: Path, tmp_path: Path
) -> None:
    junk = [prepared.sandbox.make_image(None, f"junk {i}") for i in range(3)]
    gate = tmp_path / "gate"
    daemon = Daemon(tmp_path, *device_args(prepared, config), gate=gate)
    try:
        waiting = gate.with_name("gate.waiting")
        deadline = time.monotonic() + 60
        while not waiting.exists():  # the startup run is removing its first item
            assert time.monotonic() < deadline and daemon.proc.poll() is None
            time.sleep(0.02)
        daemon.send(signal.SIGTERM)
        daemon.wait_for("SIGTERM: stopping after the current item")
        gate.write_text("go")
        assert daemon.proc.wait(60) == 0
    finally:
        daemon.stop()
    daemon.wait_for("prune run finished: outcome=stopped removed=1")
    assert f"{APP}:1" not in prepared.image_names()  # the item in progress was finished
    assert set(junk) <= prepared.image_ids()  # nothing after it


def test_json_flag_prints_each_report_as_a_line(
    prepared: Device, config: Path, tmp_path: Path
) -> None:
    daemon = Daemon(tmp_path, *device_args(prepared, config), "--json")
    try:
        daemon.wait_for("prune run finished")
    finally:
        assert daemon.stop() == 0
    lines = daemon.out_path.read_text().splitlines()
    assert len(lines) == 1 and '"trigger": "startup"' in lines[0]


# --- the spec watcher (no Podman) --------------------------------------------------------


class Changes:
    def __init__(self) -> None:
        self.count = 0
        self.event = threading.Event()

    def __call__(self) -> None:
        self.count += 1
        self.event.set()

    def wait(self, timeout: float) -> bool:
        hit = self.event.wait(timeout)
        self.event.clear()
        return hit


def spec(spec_dir: Path, generation: int) -> None:
    agentfiles.apply(spec_dir, str(generation), agentfiles.device_spec(None, []))


@pytest.mark.parametrize("inotify", [True, False], ids=["inotify", "polling"])
def test_spec_watcher_requests_once_per_new_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inotify: bool
) -> None:
    if not inotify:
        monkeypatch.setattr(watch, "_open_watch", lambda _directory: None)
    spec_dir = tmp_path / "flightctl"
    agentfiles.bootstrap(spec_dir)
    changes = Changes()
    # With inotify the poll is far longer than the wait: only an event can wake it.
    watcher = SpecWatcher(spec_dir, 60.0 if inotify else 0.05, changes)
    watcher.start()
    try:
        spec(spec_dir, 1)
        assert changes.wait(10)
        agentfiles.rollback(spec_dir)  # desired.json changes, current.json does not
        current = spec_dir / "current.json"
        good = current.read_bytes()
        current.write_text("{half")  # unreadable for a moment: not a change
        assert not changes.wait(0.5)
        current.write_bytes(good)  # generation 1 again: still not a change
        assert not changes.wait(0.5)
        spec(spec_dir, 2)
        assert changes.wait(10)
    finally:
        watcher.stop()
    assert changes.count == 2


def test_directory_watch_refuses_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        DirectoryWatch(tmp_path / "missing")
    assert watch._open_watch(tmp_path / "missing") is None  # the watcher then polls
