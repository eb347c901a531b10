"""Reclaimed space: estimated from unique sizes, measured on the filesystem."""

from __future__ import annotations

from pathlib import Path

from conftest import Device

from controller import agentfiles

BASE = "localhost/base:1"
CHILD = "registry.example.com/app/child"


def build_child(device: Device, tmp_path: Path, n: int) -> None:
    context = tmp_path / f"ctx{n}"
    context.mkdir()
    (context / "f").write_text(f"layer of child {n}")
    (context / "Containerfile").write_text(f"FROM {BASE}\nCOPY f /f\n")
    device.sandbox.podman("build", "--pull=never", "-q", "-t", f"{CHILD}:{n}", str(context))


def test_shared_layers_are_not_reported_as_freed(device: Device, tmp_path: Path) -> None:
    device.sandbox.make_image(BASE, "b" * 300_000)  # a big layer every child shares
    for n in (1, 2, 3):
        build_child(device, tmp_path, n)
        agentfiles.apply(
            device.spec_dir,
            str(n),
            agentfiles.device_spec(None, [agentfiles.container_app("app", f"{CHILD}:{n}")]),
        )
        report = device.prune()
    assert report.outcome == "pruned", report.error
    assert [i.names for i in report.removed] == [(f"{CHILD}:1",)]
    removed = report.removed[0]
    # the estimate is child 1's own layer, never the 300 kB base it shared
    assert 0 < report.estimated_bytes == removed.size_bytes < 100_000
    assert BASE in device.image_names()
    # vfs copies every lower layer into each image, so the filesystem really
    # gets more back than the unique size says; that is why both are reported.
    assert report.measured_bytes is not None
