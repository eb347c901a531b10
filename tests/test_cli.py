"""The `edgeprune` command as an operator runs it (a real process, real Podman)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Device, edgeprune

from controller import agentfiles
from controller.sandbox import find_podman

REPO = Path(__file__).resolve().parents[1]
APP = "registry.example.com/app/web"


def device_args(device: Device, config: Path) -> list[str]:
    return device.cli_args(config)


def prepared(device: Device, tmp_path: Path) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text("min-age: 0s\n")
    for n in (1, 2, 3):
        device.sandbox.make_image(f"{APP}:{n}", f"web {n}")
        agentfiles.apply(
            device.spec_dir,
            str(n),
            agentfiles.device_spec(None, [agentfiles.container_app("web", f"{APP}:{n}")]),
        )
        if n < 3:
            assert edgeprune("run", *device_args(device, config)).returncode == 0
    return config


def test_run_json_prints_only_the_report_on_stdout(device: Device, tmp_path: Path) -> None:
    config = prepared(device, tmp_path)
    result = edgeprune("run", "--json", *device_args(device, config))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # stdout is the document alone
    assert report["outcome"] == "pruned"
    assert [i["names"] for i in report["removed"]] == [[f"{APP}:1"]]
    for key in (
        "started_at",
        "finished_at",
        "duration_seconds",
        "states",
        "kept",
        "failures",
        "reclaimed_bytes",
        "rollback",
    ):
        assert key in report
    assert set(report["reclaimed_bytes"]) == {"measured", "estimated"}
    assert report["removed"][0]["kind"] == "image" and report["removed"][0]["size_bytes"] > 0
    assert all(item["reasons"] for item in report["kept"])
    # logs went to stderr: start, the removed image, the end line with totals
    assert "prune run started" in result.stderr
    assert f"removed image {APP}:1" in result.stderr
    assert "prune run finished: outcome=pruned removed=1" in result.stderr


def test_dry_run_and_plan_remove_nothing(device: Device, tmp_path: Path) -> None:
    config = prepared(device, tmp_path)
    result = edgeprune("run", "--dry-run", "--json", *device_args(device, config))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["outcome"] == "dry-run" and report["removed"] == []
    assert [i["names"] for i in report["would_remove"]] == [[f"{APP}:1"]]
    table = edgeprune("plan", *device_args(device, config))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["DECISION", "IMAGE", "ID", "SIZE", "REASONS"]
    assert any(line.startswith("remove") and f"{APP}:1" in line for line in lines)
    assert any(
        line.startswith("keep") and f"{APP}:2" in line and "retention" in line for line in lines
    )
    assert f"{APP}:1" in device.image_names()


def test_failed_run_exits_1_with_the_error(device: Device, tmp_path: Path) -> None:
    config = prepared(device, tmp_path)
    (device.spec_dir / "current.json").write_text("{not json")
    result = edgeprune("run", "--json", *device_args(device, config))
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["outcome"] == "failed" and "current.json" in report["error"]
    assert "WARNING" in result.stderr and "error=" in result.stderr


def test_bad_config_exits_2_naming_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("min-age: soon\n")
    result = edgeprune("run", "--config", str(config))
    assert result.returncode == 2
    assert str(config) in result.stderr and "min-age" in result.stderr


def test_bad_usage_exits_2() -> None:
    assert edgeprune("run", "--no-such-flag").returncode == 2
    assert edgeprune().returncode == 2


def test_disabled_by_config_touches_nothing(device: Device, tmp_path: Path) -> None:
    config = prepared(device, tmp_path)
    config.write_text("min-age: 0s\nenabled: false\n")
    result = edgeprune("run", "--json", *device_args(device, config))
    assert result.returncode == 0
    assert json.loads(result.stdout)["outcome"] == "disabled"
    assert f"{APP}:1" in device.image_names()


def test_cli_start_does_not_import_podman_or_opentelemetry() -> None:
    code = (
        "import sys, controller.cli as c; c.build_parser(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('podman', 'opentelemetry', 'transitions', 'tenacity', 'yaml')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.podman
def test_demo_shows_three_generations_and_an_offline_rollback() -> None:
    if find_podman() is None and not os.environ.get("CI"):
        pytest.skip("no podman binary found")
    result = edgeprune("demo")
    assert result.returncode == 0, result.stdout + result.stderr
    for n in (1, 2, 3):
        assert f"=== Generation {n} applied" in result.stdout
    assert "REMOVED   registry.example.com/shop/web:1.0" in result.stdout
    assert "rollback OK" in result.stdout


@pytest.mark.podman
def test_demo_stopped_by_sigterm_cleans_up_its_store_and_service() -> None:
    import re
    import signal
    import time

    if find_podman() is None and not os.environ.get("CI"):
        pytest.skip("no podman binary found")
    demo = subprocess.Popen(
        [sys.executable, "-m", "controller.cli", "demo"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert demo.stdout is not None
    header = [demo.stdout.readline() for _ in range(2)]  # printed once the service is up
    dirs = re.findall(r"/tmp/edgeprune-[a-z0-9_]+", "".join(header))
    assert len(dirs) == 2, header
    demo.send_signal(signal.SIGTERM)
    assert demo.wait(timeout=60) == 128 + signal.SIGTERM
    deadline = time.monotonic() + 10
    while any(Path(d).exists() for d in dirs) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(Path(d).exists() for d in dirs)
    services = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert not any(d in line for d in dirs for line in services.splitlines())
