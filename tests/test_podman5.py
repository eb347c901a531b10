"""Podman 5 in the test suite: the provisioning script's contract, and a guard
that a run which must cover Podman 5 (CI, or EDGEPRUNE_PODMAN5=1) really does,
instead of passing by skipping every Podman 5 test.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from controller.sandbox import available_binaries, parse_binaries_env

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "provision-podman5.sh"


def podman5_required() -> bool:
    ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return ci or os.environ.get("EDGEPRUNE_PODMAN5") == "1"


def version_of(path: str) -> tuple[int, int]:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"version (\d+)\.(\d+)", out)
    assert match, f"{path} --version said {out!r}"
    return int(match[1]), int(match[2])


def provision(cache: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), "--cache-dir", str(cache), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
        check=False,
    )


def test_a_required_run_covers_the_cli_and_the_rest_artifact_podman() -> None:
    if not podman5_required():
        pytest.skip("Podman 5 is required only in CI or with EDGEPRUNE_PODMAN5=1")
    versions = {b.label: version_of(b.path) for b in available_binaries()}
    assert any((5, 4) <= v < (5, 6) for v in versions.values()), (
        f"no Podman 5.4/5.5 (artifacts through the CLI) among {versions}"
    )
    assert any(v >= (5, 6) for v in versions.values()), (
        f"no Podman 5.6+ (artifacts through REST) among {versions}"
    )


def fake_build(cache: Path, flavour: str, version_line: str) -> Path:
    """A completed cache entry whose 'podman' only answers --version."""
    build = cache / flavour / "5.9.1+ds1-1"
    build.mkdir(parents=True)
    podman = build / "podman"
    podman.write_text(f"#!/bin/sh\necho '{version_line}'\n")
    podman.chmod(0o755)
    (build / ".complete").write_text("5.9.1+ds1-1\n")
    (cache / flavour / "current").symlink_to(build.name)
    return podman


def test_a_cached_build_is_printed_as_label_path_without_any_download(tmp_path: Path) -> None:
    podman = fake_build(tmp_path, "sid", "podman version 5.9.1")
    # An unreachable archive: a download attempt would fail the run.
    result = provision(tmp_path, "sid", EDGEPRUNE_DEBIAN_MIRROR="http://127.0.0.1:9/debian")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"podman-5.9={podman}\n"
    assert [(b.label, b.path) for b in parse_binaries_env(result.stdout.strip())] == [
        ("podman-5.9", str(podman))
    ]


def test_cached_mode_never_downloads_and_says_what_is_missing(tmp_path: Path) -> None:
    result = provision(tmp_path, "--cached", "sid")
    assert (result.returncode, result.stdout) == (3, "")
    assert "sid: not provisioned yet" in result.stderr
    assert not (tmp_path / "sid").exists()


def test_a_failed_download_is_loud_and_exits_1(tmp_path: Path) -> None:
    result = provision(tmp_path, "sid", EDGEPRUNE_DEBIAN_MIRROR="http://127.0.0.1:9/debian")
    assert (result.returncode, result.stdout) == (1, "")
    assert "provision-podman5: FAILED: sid: apt-get update against" in result.stderr
    assert "#" * 72 in result.stderr
    assert not (tmp_path / "sid" / "current").exists()


def test_a_binary_that_is_not_podman_is_refused(tmp_path: Path) -> None:
    fake_build(tmp_path, "sid", "something else 1.0")
    result = provision(tmp_path, "sid")
    assert (result.returncode, result.stdout) == (1, "")
    assert "--version does not say 'podman version X.Y'" in result.stderr
