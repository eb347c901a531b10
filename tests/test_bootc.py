"""bootc's deployments become OS images the planner keeps (recorded status documents)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from controller.bootc import BootcError, parse_status, read_bootc_images
from controller.ledger import Ledger
from controller.model import Action, Image, Inventory, Rule
from controller.spec import DeviceSpec, SpecSet
from states.plan import PlanInput, make_plan

RECORDED = Path(__file__).parent / "fixtures" / "bootc"
OS = "registry.example.com/os/edge-rhel"


def digest(c: str) -> str:
    return "sha256:" + c * 64


def recorded(name: str) -> dict:
    return json.loads((RECORDED / name).read_text())


@pytest.mark.parametrize(
    ("shape", "refs", "deployments"),
    [
        ("booted-only.json", [f"{OS}:9.6-r3", f"{OS}@{digest('3')}"], ["booted"]),
        (
            "booted-staged.json",
            [f"{OS}:9.6-r3", f"{OS}@{digest('3')}", f"{OS}:9.6-r4", f"{OS}@{digest('4')}"],
            ["booted", "staged"],
        ),
        (
            "booted-rollback.json",
            [f"{OS}:9.6-r4", f"{OS}@{digest('4')}", f"{OS}:9.6-r3", f"{OS}@{digest('3')}"],
            ["booted", "rollback"],
        ),
        (
            "booted-staged-rollback.json",
            [
                f"{OS}:9.6-r3",
                f"{OS}@{digest('3')}",
                f"{OS}:9.6-r4",
                f"{OS}@{digest('4')}",
                f"{OS}:9.6-r2",
                f"{OS}@{digest('2')}",
            ],
            ["booted", "staged", "rollback"],
        ),
        (
            "pinned.json",
            [
                f"{OS}:9.6-r4",
                f"{OS}@{digest('4')}",
                f"{OS}:9.6-r3",
                f"{OS}@{digest('3')}",
                f"{OS}:9.6-r2",
                f"{OS}@{digest('2')}",
            ],
            ["booted", "rollback", "pinned[0]"],
        ),
        (
            "containers-storage.json",
            ["localhost/edge-os:dev", f"localhost/edge-os@{digest('5')}"],
            ["booted"],
        ),
        ("oci-dir.json", [digest("6")], ["booted"]),
        ("ostree-only.json", [], []),
        ("not-bootc.json", [], []),
    ],
)
def test_each_recorded_shape_yields_its_deployments_images(shape, refs, deployments) -> None:
    images = parse_status(recorded(shape))
    assert list(images.refs) == refs
    assert list(images.deployments) == deployments


@pytest.mark.parametrize(
    "document",
    [
        [],
        {"status": None},
        {"status": {"booted": "yes"}},
        {"status": {"booted": {"image": {"image": {"transport": "registry"}}}}},
        {"status": {"otherDeployments": {}}},
        {"status": {"booted": {"image": {"image": {"image": "r.io/os:1", "transport": None}}}}},
        {
            "status": {
                "booted": {"image": {"image": {"image": "r.io/os:1", "transport": "Registry"}}}
            }
        },
        {
            "status": {
                "booted": {"image": {"image": {"image": "/mnt/os", "transport": "oci-archive"}}}
            }
        },
    ],
)
def test_unexpected_documents_are_errors_not_silence(document) -> None:
    with pytest.raises(BootcError):
        parse_status(document)


def test_bootc_absent_means_none(monkeypatch) -> None:
    monkeypatch.setattr("shutil.which", lambda _name: None)
    assert read_bootc_images() is None


def _runner(stdout: str = "", returncode: int = 0):
    def run(argv, **_kw):
        assert argv[1:] == ["status", "--json"]
        return subprocess.CompletedProcess(argv, returncode, stdout, "boom")

    return run


def test_bootc_present_is_asked_and_its_failure_is_an_error() -> None:
    text = (RECORDED / "booted-rollback.json").read_text()
    got = read_bootc_images("/usr/bin/bootc", runner=_runner(text))
    assert got is not None and got.deployments == ("booted", "rollback")
    with pytest.raises(BootcError, match="exited 1"):
        read_bootc_images("/usr/bin/bootc", runner=_runner(returncode=1))
    with pytest.raises(BootcError, match="invalid JSON"):
        read_bootc_images("/usr/bin/bootc", runner=_runner("not json"))


@pytest.mark.parametrize(
    "shape", ["booted-rollback.json", "booted-staged-rollback.json", "pinned.json"]
)
def test_planner_keeps_every_bootc_deployment_image_even_unnamed_by_any_spec(shape) -> None:
    r2 = Image(id="2" * 64, names=(f"{OS}:9.6-r2",), digests=(digest("2"),))
    r3_by_digest = Image(id="3" * 64, digests=(digest("3"),), dangling=True)  # tag moved on
    r4 = Image(id="4" * 64, names=(f"{OS}:9.6-r4",), digests=(digest("4"),))
    empty = DeviceSpec(file="current.json", present=True, generation="1")
    specs = SpecSet(empty, empty, DeviceSpec(file="rollback.json", present=False))
    bootc = parse_status(recorded(shape))
    inventory = Inventory(
        images=(r2, r3_by_digest, r4), containers=(), taken_at=0.0, os_images=bootc.refs
    )
    plan = make_plan(
        PlanInput(
            inventory=inventory,
            specs=specs,
            ledger=Ledger(),
            now=0.0,
            scope="all",
            min_age_seconds=0.0,
            retain_previous=0,
        )
    )
    decided = {d.image.id: d for d in plan.decisions}
    for image in (r3_by_digest, r4):
        assert decided[image.id].action is Action.KEEP
        assert decided[image.id].reasons[0].rule is Rule.OS_IMAGE
    r2_kept = decided[r2.id].action is Action.KEEP
    assert r2_kept == (shape != "booted-rollback.json")


def _fake_bootc(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "bootc"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return script


def test_a_run_keeps_the_image_bootc_booted_from_the_local_store(device, tmp_path) -> None:
    from controller import agentfiles

    os_id = device.sandbox.make_image("localhost/edge-os:dev", "the OS")
    leftover = device.sandbox.make_image(None, "leftover")
    agentfiles.apply(device.spec_dir, "1", agentfiles.device_spec(None, []))
    bootc = _fake_bootc(tmp_path, f"cat {RECORDED / 'containers-storage.json'}")
    report = device.prune(scope="all", retain_previous=0, bootc_command=bootc)
    assert report.outcome == "pruned", report.error
    assert os_id in device.image_ids() and leftover not in device.image_ids()
    kept = next(i for i in report.kept if i.id == os_id)
    assert kept.reasons == ("os-image: booted/staged/rollback OS image: localhost/edge-os:dev",)


def test_a_failing_bootc_fails_the_run_and_removes_nothing(device, tmp_path) -> None:
    from controller import agentfiles

    leftover = device.sandbox.make_image(None, "leftover")
    agentfiles.apply(device.spec_dir, "1", agentfiles.device_spec(None, []))
    bootc = _fake_bootc(tmp_path, "echo 'error: not booted via bootc' >&2; exit 1")
    report = device.prune(scope="all", retain_previous=0, bootc_command=bootc)
    assert report.outcome == "failed" and report.failed_state == "Inventory"
    assert "bootc status exited 1" in (report.error or "")
    assert leftover in device.image_ids()
