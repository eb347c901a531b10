"""The run lock: one run per state dir, across threads and processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Device
from observability_helpers import ready_to_prune

from controller.lock import LOCK_FILE, LockBusy, RunLock, read_holder

REPO = Path(__file__).resolve().parents[1]
APP = "registry.example.com/app/web"


def test_second_lock_is_refused_and_names_the_holder(tmp_path: Path) -> None:
    first, second = RunLock(tmp_path / "state"), RunLock(tmp_path / "state")
    first.acquire("after-update", 1_700_000_000.0)
    try:
        with pytest.raises(LockBusy) as caught:
            second.acquire("cli", 1_700_000_001.0)
        holder = caught.value.holder
        assert holder is not None
        assert (holder.pid, holder.trigger, holder.since) == (os.getpid(), "after-update", 1.7e9)
        assert f"pid {os.getpid()}" in str(caught.value)
        assert "2023-11-14T22:13:20+00:00" in str(caught.value)
    finally:
        first.release()
    second.acquire("cli", 2.0)  # free again once released
    second.release()
    assert read_holder(tmp_path / "state" / LOCK_FILE) is None  # record cleared


@pytest.mark.parametrize("content", [b"", b"{half", b'{"pid": "x"}', b"[]"])
def test_unreadable_record_means_unknown_holder(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / LOCK_FILE
    path.write_bytes(content)
    assert read_holder(path) is None


def test_run_while_locked_is_skipped_and_touches_nothing(device: Device) -> None:
    ready_to_prune(device)
    ledger = device.state_dir / "ledger.json"
    before = ledger.read_bytes()
    other = RunLock(device.state_dir)
    other.acquire("disk-critical", time.time())
    try:
        report = device.prune()
    finally:
        other.release()
    assert report.outcome == "locked"
    assert report.removed == [] and report.states == ["Idle"]
    assert f"pid {os.getpid()}" in report.notes[0] and "disk-critical" in report.notes[0]
    assert f"{APP}:1" in device.image_names()
    assert ledger.read_bytes() == before
    assert device.prune().outcome == "pruned"  # the next run goes ahead


def test_unusable_lock_file_fails_safe(device: Device) -> None:
    ready_to_prune(device)
    lock_file = device.state_dir / LOCK_FILE
    lock_file.unlink()  # the earlier runs left it (empty) behind
    lock_file.mkdir()  # cannot be opened as a file
    report = device.prune()
    assert report.outcome == "failed"
    assert "cannot take the run lock" in (report.error or "")
    assert f"{APP}:1" in device.image_names()


def cli_args(device: Device, config: Path) -> list[str]:
    return ["run", "--json", *device.cli_args(config)]


def wait_for(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def test_two_cli_runs_at_once_one_runs_the_other_names_the_holder(
    device: Device, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("min-age: 0s\n")
    ready_to_prune(device)
    gate = tmp_path / "gate"
    first = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "slow_cli.py"), str(gate), *cli_args(device, config)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(gate.with_name("gate.waiting"))  # the first run holds the lock, mid-removal
        ledger_before = (device.state_dir / "ledger.json").read_bytes()
        second = subprocess.run(
            [sys.executable, "-m", "controller.cli", *cli_args(device, config)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 0, second.stderr  # skipped is not a failure
        report = json.loads(second.stdout)
        assert report["outcome"] == "locked" and report["removed"] == []
        assert f"pid {first.pid}" in second.stderr and "slow_cli.py" in second.stderr
        assert f"edgeprune: skipped: another run holds {device.state_dir / LOCK_FILE}" in (
            second.stderr
        )
        assert (device.state_dir / "ledger.json").read_bytes() == ledger_before
        assert f"{APP}:1" in device.image_names()  # the first run is still waiting
    finally:
        gate.write_text("go")
        out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert json.loads(out)["outcome"] == "pruned"
    assert f"{APP}:1" not in device.image_names()
