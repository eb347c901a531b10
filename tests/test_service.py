"""The embedding API on real Podman: background runs, coalescing, holds, stop, alerts."""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Device

from controller import agentfiles
from controller.config import Config
from controller.hold import HoldGate
from controller.podman import PodmanStore, RemoveResult, RetryPolicy
from controller.pruner import Pruner
from controller.report import Report
from controller.service import PruneService
from controller.spec import read_spec_dir

REPO = Path(__file__).resolve().parents[1]
REG = "registry.example.com"
APP = f"{REG}/app/web"
TOOL = f"{REG}/app/aaa-tool:1"  # sorts first: the first image a run removes


def store(config: Config) -> PodmanStore:
    return PodmanStore(config.podman_url, retry=RetryPolicy(sleep=lambda _seconds: None))


def apply(device: Device, n: int, *refs: str) -> None:
    apps = [agentfiles.container_app(f"app{i}", ref) for i, ref in enumerate(refs)]
    agentfiles.apply(device.spec_dir, str(n), agentfiles.device_spec(None, apps))


def three_generations(device: Device) -> None:
    """After this, TOOL and web:1 are unused; web:2 and web:3 are kept."""
    device.sandbox.make_image(TOOL, "tool")
    for n in (1, 2, 3):
        device.sandbox.make_image(f"{APP}:{n}", f"web {n}")
        apply(device, n, f"{APP}:{n}", *([TOOL] if n == 1 else []))
        if n < 3:
            device.prune()


@pytest.fixture
def service(device: Device) -> Iterator[PruneService]:
    reports: list[Report] = []
    service = PruneService(device.config(), store_factory=store, on_report=reports.append)
    service.reports = reports  # type: ignore[attr-defined]
    yield service
    service.stop(timeout=30)


class SlowRemoval:
    """Removals wait at a gate, then happen for real (a slow store, injected)."""

    def __init__(self, mocker, stop_at: int = 1) -> None:  # type: ignore[no-untyped-def]
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls: list[str] = []
        self._stop_at = stop_at
        real = PodmanStore.remove_image

        def remove(store: PodmanStore, name: str) -> RemoveResult:
            self.calls.append(name)
            if len(self.calls) == self._stop_at:
                self.entered.set()
                assert self.release.wait(30)
            return real(store, name)

        mocker.patch.object(PodmanStore, "remove_image", remove)


def test_after_update_does_not_wait_for_a_running_run_and_coalesces(
    device: Device, service: PruneService, mocker
) -> None:
    three_generations(device)
    slow = SlowRemoval(mocker)
    service.start()
    service.after_update()
    assert slow.entered.wait(30)  # a run is going, blocked in its first removal
    for _ in range(50):
        service.after_update()  # each call returns while that run is still blocked
    assert not slow.release.is_set() and service.reports == []  # type: ignore[attr-defined]
    slow.release.set()
    assert service.wait_idle(60)
    reports = service.reports  # type: ignore[attr-defined]
    assert [r.trigger for r in reports] == ["after-update", "after-update"]  # exactly one more
    assert reports[0].outcome == "pruned" and reports[1].outcome == "nothing-to-prune"
    assert {f"{APP}:2", f"{APP}:3"} <= device.image_names()
    assert f"{APP}:1" not in device.image_names() and TOOL not in device.image_names()


def test_hold_waits_for_the_item_in_progress_then_removal_stops_and_replans(
    device: Device, service: PruneService, mocker
) -> None:
    three_generations(device)
    slow = SlowRemoval(mocker)
    service.start()
    service.after_update()
    assert slow.entered.wait(30)
    held, leave = threading.Event(), threading.Event()

    def host_update() -> None:
        with service.hold():
            held.set()
            assert leave.wait(30)

    host = threading.Thread(target=host_update)
    host.start()
    assert not held.wait(0.3)  # hold() waits for the removal in progress
    slow.release.set()
    assert held.wait(30)
    time.sleep(0.5)  # the run had more to remove; it must not while the hold is open
    assert slow.calls == [TOOL]
    assert service.last_report is None  # still running: replanned, waiting in Inventory
    # The update being held brings web:1 back; the replan must see it.
    apply(device, 4, f"{APP}:1")
    leave.set()
    host.join()
    assert service.wait_idle(60)
    report = service.last_report
    assert report is not None and report.outcome == "pruned", report
    assert "removal paused by a hold; replanned" in report.notes
    assert report.states.count("Inventory") == 2
    assert f"{APP}:1" in device.image_names() and TOOL not in device.image_names()


def test_hold_replans_do_not_use_up_the_replan_limit(device: Device, mocker) -> None:
    three_generations(device)
    junk = [device.sandbox.make_image(None, f"junk {i}") for i in range(5)]
    gate = HoldGate()
    real = PodmanStore.remove_image
    hosts: list[threading.Thread] = []

    def short_hold() -> None:
        with gate.hold():
            pass

    def remove_with_short_hold(store: PodmanStore, name: str) -> RemoveResult:
        result = real(store, name)
        opened = gate.opened
        host = threading.Thread(target=short_hold)
        hosts.append(host)
        host.start()
        while gate.opened == opened:  # the host asked for its hold; it waits for this item
            time.sleep(0.005)
        return result

    mocker.patch.object(PodmanStore, "remove_image", remove_with_short_hold)
    pruner = Pruner(device.config(), store_factory=store)
    report = pruner.run_once(trigger="test", control=gate)
    for host in hosts:
        host.join(10)
    planned = 2 + len(junk)  # TOOL, web:1 and the junk
    assert report.outcome == "pruned", report.error
    assert len(report.removed) == planned
    assert report.states.count("Inventory") == planned  # one replan per hold, more than 3
    assert not set(junk) & device.image_ids()


def test_a_run_waits_in_inventory_while_a_hold_is_open(
    device: Device, service: PruneService
) -> None:
    three_generations(device)
    service.start()
    with service.hold():
        service.after_update()
        time.sleep(0.5)
        assert service.last_report is None  # planning waits for the hold to close
        assert f"{APP}:1" in device.image_names()
    assert service.wait_idle(60)
    assert service.last_report is not None and service.last_report.outcome == "pruned"
    assert f"{APP}:1" not in device.image_names()


def test_stop_ends_removal_after_the_current_item(
    device: Device, service: PruneService, mocker
) -> None:
    three_generations(device)
    slow = SlowRemoval(mocker)
    service.start()
    service.after_update()
    assert slow.entered.wait(30)
    stopper = threading.Thread(target=service.stop, args=(30,))
    stopper.start()
    time.sleep(0.2)  # stop() has flagged the gate; the item in progress still finishes
    slow.release.set()
    stopper.join(30)
    assert not stopper.is_alive()
    report = service.last_report
    assert report is not None and report.outcome == "stopped"
    assert [item.names for item in report.removed] == [(TOOL,)]
    assert "stopped by shutdown; 1 planned removal(s) left for the next run" in report.notes
    assert report.states[-2:] == ["Validate", "Idle"]  # the post-check still ran
    assert f"{APP}:1" in device.image_names()
    service.after_update()  # after stop: accepted, never raises, nothing runs
    time.sleep(0.2)
    assert len(service.reports) == 1  # type: ignore[attr-defined]


def test_critical_alert_from_the_host_prunes_at_once_ignoring_min_age(
    device: Device, caplog
) -> None:
    three_generations(device)
    reports: list[Report] = []
    service = PruneService(
        device.config(min_age_seconds=3600.0), store_factory=store, on_report=reports.append
    )
    first = service.run_once(trigger="test")
    assert first.outcome == "nothing-to-prune"  # web:1 and TOOL are young: min-age keeps them
    assert any("min-age" in r for i in first.kept if f"{APP}:1" in i.names for r in i.reasons)
    service.start()
    try:
        with caplog.at_level(logging.INFO, logger="edgeprune"):
            service.on_disk_alert("Warning", 85.0)  # not critical: no run
            service.on_disk_alert(None, "lots")  # type: ignore[arg-type]  # bad input: no raise
            assert service.wait_idle(30)
            assert [r.trigger for r in reports] == ["test"]  # only the run above
            service.on_disk_alert("Critical", 97.0)
            assert service.wait_idle(60)
    finally:
        service.stop(30)
    assert [r.trigger for r in reports] == ["test", "disk-critical"]
    assert {item.names for item in reports[1].removed} == {(TOOL,), (f"{APP}:1",)}
    assert "emergency run (critical disk alert): min-age not applied" in reports[1].notes
    assert {f"{APP}:2", f"{APP}:3"} <= device.image_names()  # retention still holds
    assert "the host reported a critical disk alert: usage 97%" in caplog.text
    assert "ignored a disk alert of severity 'none'" in caplog.text
    assert "cleared by the emergency prune" in caplog.text  # this disk is far below 90%


def test_reconfigure_disables_the_next_runs_and_enabling_requests_one(
    device: Device, service: PruneService
) -> None:
    three_generations(device)
    service.start()
    service.reconfigure(device.config(enabled=False))
    service.after_update()
    assert service.wait_idle(30)
    assert [r.outcome for r in service.reports] == ["disabled"]  # type: ignore[attr-defined]
    assert f"{APP}:1" in device.image_names()
    service.reconfigure(device.config())
    assert service.wait_idle(60)
    last = service.reports[-1]  # type: ignore[attr-defined]
    assert (last.trigger, last.outcome) == ("config-reload", "pruned")


def load_example():  # type: ignore[no-untyped-def]
    path = REPO / "examples" / "reconcile_loop.py"
    spec = importlib.util.spec_from_file_location("reconcile_loop", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_reconcile_loop_never_loses_an_image_it_is_about_to_use(
    device: Device, service: PruneService, mocker
) -> None:
    example = load_example()
    real = PodmanStore.remove_image
    removed_while_needed: list[str] = []

    def checked_remove(store: PodmanStore, name: str) -> RemoveResult:
        # At the moment of removal no spec file may name the image (a pull in
        # progress is named by desired.json, which the loop writes first).
        if name in read_spec_dir(device.spec_dir).refs:
            removed_while_needed.append(name)
        return real(store, name)

    mocker.patch.object(PodmanStore, "remove_image", checked_remove)
    pulls: list[str] = []

    def pull(ref: str) -> None:
        pulls.append(ref)
        device.sandbox.make_image(ref, ref)
        device.sandbox.make_image(None, f"layer left over by {ref} {len(pulls)}")

    service.start()
    for n in (1, 2, 3):
        spec = example.generation_spec(n)
        started = time.monotonic()
        example.reconcile(service, device.spec_dir, str(n), spec, pull)
        assert set(example.spec_images(spec)) <= device.image_names()
        assert time.monotonic() - started < 10  # sanity only; the benchmark measures latency
        time.sleep(0.3)  # the loop's own work until the next spec; the worker prunes meanwhile
    assert service.wait_idle(120)
    assert removed_while_needed == []
    names = device.image_names()
    assert {f"{REG}/shop/web:3.0", f"{REG}/shop/web:2.0", "docker.io/library/redis:7.2"} <= names
    reports = service.reports  # type: ignore[attr-defined]
    assert reports and all(r.outcome in ("pruned", "nothing-to-prune") for r in reports)
    assert sum(len(r.removed) for r in reports) >= 3  # the leftovers went while the loop ran
    dangling = device.sandbox.podman("images", "-q", "--filter", "dangling=true").stdout
    assert dangling.split() == []


def test_spec_disk_monitor_drives_the_rules_and_a_bad_one_is_reported(
    device: Device, service: PruneService, caplog
) -> None:
    good = {
        "monitorType": "Disk",
        "path": "/",
        "samplingInterval": "45s",
        "alertRules": [{"severity": "Critical", "percentage": 88, "duration": "2m"}],
    }
    device.sandbox.make_image(f"{APP}:1", "web 1")
    spec = agentfiles.device_spec(
        None, [agentfiles.container_app("web", f"{APP}:1")], resources=[good]
    )
    agentfiles.apply(device.spec_dir, "1", spec)
    assert service.run_once().outcome == "nothing-to-prune"
    service.start()
    service.request("test")  # the worker reads the applied spec's monitor after a run
    assert service.wait_idle(60)
    settings = service.disk_settings
    assert settings.source == "the device spec's Disk monitor of /"
    assert (settings.sampling_seconds, settings.rules[0].percentage) == (45.0, 88.0)

    bad = dict(good, samplingInterval="sometimes")
    spec = agentfiles.device_spec(
        None, [agentfiles.container_app("web", f"{APP}:1")], resources=[bad]
    )
    agentfiles.apply(device.spec_dir, "2", spec)
    with caplog.at_level(logging.WARNING, logger="edgeprune"):
        service.after_update()
        assert service.wait_idle(60)
    report = service.last_report
    assert report is not None and report.outcome == "nothing-to-prune"  # pruning goes on
    assert any(
        "malformed disk monitor ignored" in note and "sometimes" in note for note in report.notes
    )
    assert "ignored a malformed disk monitor in" in caplog.text
    assert service.disk_settings.source == "the agent's defaults"
