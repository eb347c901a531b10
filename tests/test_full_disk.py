"""A real full disk: a small tmpfs holds a Podman store; the daemon answers critical alerts."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from daemon import Daemon

from controller import agentfiles
from controller.config import Config
from controller.disk import disk_usage
from controller.diskmon import AlertRule, Severity
from controller.ledger import LedgerError, load_ledger
from controller.podman import PodmanStore, RetryPolicy
from controller.report import Report
from controller.sandbox import Sandbox
from controller.service import PruneService

DISK_SIZE = "32m"
PAYLOAD_BYTES = 1_500_000  # ~4.5% of the disk per image
APP = "registry.example.com/app/web"
SAMPLING = 0.2


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A tmpfs at a short path (Podman refuses a long runroot); skipped where mounting fails."""
    if os.geteuid() != 0:
        pytest.skip("the real-full-disk tests mount a tmpfs, which needs root")
    mount_point = Path(tempfile.mkdtemp(prefix="epfd-", dir="/tmp"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE},mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        mount_point.rmdir()
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); no real full disk")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)
        mount_point.rmdir()


@pytest.fixture
def disk_sandbox(podman_sandbox: Sandbox, small_disk: Path) -> Iterator[Sandbox]:
    with Sandbox(podman_sandbox.binary, base_dir=small_disk) as sandbox:
        yield sandbox


def payload(n: int) -> str:
    return os.urandom(PAYLOAD_BYTES // 2).hex() + f" {n}"


def usage(sandbox: Sandbox) -> int:
    measured = disk_usage(str(sandbox.storage_path))
    assert measured is not None
    return measured.used_percent


def container_apps(refs: list[str]) -> dict:
    apps = [agentfiles.container_app(f"app{i}", ref) for i, ref in enumerate(refs)]
    return agentfiles.device_spec(None, apps)


def applied_generation(state_dir: Path) -> str | None:
    try:
        current = load_ledger(state_dir).current_generation
    except LedgerError:
        return None
    return current.generation if current else None


def log_time(record: dict) -> float:
    return datetime.fromisoformat(record["time"]).timestamp()


def test_daemon_answers_a_real_full_disk(disk_sandbox: Sandbox, tmp_path: Path) -> None:
    spec_dir, state_dir = tmp_path / "flightctl", tmp_path / "edgeprune"
    agentfiles.bootstrap(spec_dir)
    config = tmp_path / "config.yaml"
    # min-age 1h: after-update runs keep every image; only an emergency may ignore it.
    config.write_text(
        "min-age: 1h\n"
        f"disk-sampling-interval: {int(SAMPLING * 1000)}ms\n"
        "watch-poll-interval: 200ms\n"
        "disk-alert-rules: [{severity: critical, percentage: 50, duration: 0s}]\n"
    )
    daemon = Daemon(
        tmp_path,
        "--config",
        str(config),
        "--spec-dir",
        str(spec_dir),
        "--state-dir",
        str(state_dir),
        "--podman-url",
        disk_sandbox.url,
    )
    try:
        daemon.wait_for("prune run finished", count=1)  # the start-up run
        crossed_at = None
        for n in range(1, 20):
            disk_sandbox.make_image(f"{APP}:{n}", payload(n))
            if crossed_at is None and usage(disk_sandbox) > 50:
                crossed_at = time.time()
            agentfiles.apply(spec_dir, str(n), container_apps([f"{APP}:{n}"]))
            daemon.wait_for(f"renderedVersion {n - 1} -> {n}")
            # Like a real agent, the next update comes after the daemon saw this one.
            wait_until(lambda n=n: applied_generation(state_dir) == str(n))
            if crossed_at is not None:
                break
        assert crossed_at is not None, "the disk never filled past the rule"
        fired = daemon.wait_for(r"critical disk alert fired on .*: usage \d+%")
        cleared = daemon.wait_for(r"critical disk alert on .* cleared by the emergency prune")
    finally:
        assert daemon.stop() == 0
    storage = str(disk_sandbox.storage_path)
    assert storage in fired["message"]
    assert int(re.search(r"usage (\d+)%", fired["message"])[1]) > 50
    # The monitor saw it within a sampling interval (plus a run it may have had to finish).
    assert log_time(fired) - crossed_at < SAMPLING + 5
    before, after = map(int, re.search(r"usage (\d+)% -> (\d+)%", cleared["message"]).groups())
    assert before > 50 >= after
    assert "(rule: critical above 50% for 0s)" in cleared["message"]
    assert daemon.count(r"prune run started \(trigger=disk-critical, emergency") >= 1
    assert usage(disk_sandbox) <= 50
    # Retention still held: the current and the previous generation are there.
    images = disk_sandbox.podman("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert {f"{APP}:{n}", f"{APP}:{n - 1}"} <= set(images)
    assert not {f"{APP}:{m}" for m in range(1, n - 1)} & set(images)


def store(config: Config) -> PodmanStore:
    return PodmanStore(config.podman_url, retry=RetryPolicy(sleep=lambda _seconds: None))


def wait_until(condition, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_critical_alert_pruning_cannot_clear_does_not_loop(
    disk_sandbox: Sandbox, tmp_path: Path, caplog
) -> None:
    spec_dir = tmp_path / "flightctl"
    refs = [f"{APP}-part{i}:1" for i in range(8)]
    for i, ref in enumerate(refs):
        disk_sandbox.make_image(ref, payload(i))
    agentfiles.apply(spec_dir, "1", container_apps(refs))  # every image is in use by the spec
    assert usage(disk_sandbox) > 30
    config = Config(
        spec_dir=spec_dir,
        state_dir=tmp_path / "edgeprune",
        podman_url=disk_sandbox.url,
        min_age_seconds=3600.0,
        retain_previous=0,
        disk_alert_rules=(AlertRule(Severity.CRITICAL, 30, 0),),
        disk_sampling_seconds=0.1,
    )
    reports: list[Report] = []
    service = PruneService(config, store_factory=store, monitor_disk=True, on_report=reports.append)
    caplog.set_level(logging.INFO, logger="edgeprune")
    service.request("startup")
    service.start()
    try:
        wait_until(lambda: "could not clear the critical disk alert" in caplog.text)
        wait_until(lambda: "nothing changed since the emergency prune" in caplog.text)
        time.sleep(20 * 0.1)  # twenty more samples while the alert keeps firing
        assert [r.trigger for r in reports] == ["startup", "disk-critical"]  # no loop
        assert caplog.text.count("nothing changed since the emergency prune") == 1
        stuck = next(r.message for r in caplog.records if "could not clear" in r.message)
        assert "removed 0 image(s)" in stuck
        assert re.search(r"referenced: 8 image\(s\), \d+\.\d MB", stuck)
        assert "other data on" in stuck

        # Something changes: generation 2 needs two of the images; min-age keeps the rest
        # from the after-update run, but the emergency prune may ignore it.
        agentfiles.apply(spec_dir, "2", container_apps(refs[:2]))
        service.after_update()
        wait_until(lambda: "cleared by the emergency prune" in caplog.text)
    finally:
        service.stop(30)
    assert [r.trigger for r in reports] == [
        "startup",
        "disk-critical",
        "after-update",
        "disk-critical",
    ]
    assert reports[2].outcome == "nothing-to-prune"
    assert len(reports[3].removed) == 6
    assert "the store changed; pruning again" in caplog.text
    assert usage(disk_sandbox) <= 30
