"""A local manifest list and its images on real Podman (rule 7)."""

from __future__ import annotations

from conftest import Device

from controller import agentfiles

REG = "registry.example.com"
LIST = f"{REG}/multi/app"


def test_kept_manifest_list_keeps_its_images_and_goes_first_when_unneeded(device: Device) -> None:
    amd = device.sandbox.make_image(f"{REG}/multi/app-amd64:1", "amd64 build")
    arm = device.sandbox.make_image(f"{REG}/multi/app-arm64:1", "arm64 build")
    device.sandbox.make_manifest_list(
        f"{LIST}:1", f"{REG}/multi/app-amd64:1", f"{REG}/multi/app-arm64:1"
    )
    agentfiles.apply(
        device.spec_dir,
        "1",
        agentfiles.device_spec(None, [agentfiles.container_app("app", f"{LIST}:1")]),
    )
    report = device.prune(scope="all", retain_previous=0)
    assert report.outcome in ("pruned", "nothing-to-prune"), report.error
    for image_id in (amd, arm):
        kept = next(i for i in report.kept if i.id == image_id)
        assert any(
            r.startswith(f"manifest-list: instance of kept manifest list {LIST}:1")
            for r in kept.reasons
        )
    listed = next(i for i in report.kept if f"{LIST}:1" in i.names)
    assert listed.kind == "manifest-list"

    # generation 2 runs the amd64 image directly: the list and arm64 may go, amd64 not.
    # (Podman deletes the image a list resolves to when the list's NAME is given to
    # image removal: the list must be removed as a manifest list.)
    agentfiles.apply(
        device.spec_dir,
        "2",
        agentfiles.device_spec(None, [agentfiles.container_app("app", f"{REG}/multi/app-amd64:1")]),
    )
    report = device.prune(scope="all", retain_previous=0)
    assert report.outcome == "pruned", report.error
    assert report.removed[0].kind == "manifest-list"  # the list goes before its images
    assert [i.id for i in report.removed[1:]] == [arm]
    assert amd in device.image_ids() and arm not in device.image_ids()
    assert f"{LIST}:1" not in device.image_names()
