"""Safety rules (design.md section 4) end to end on a real Podman store."""

from __future__ import annotations

import base64
import json

import pytest
from conftest import Device

from controller import agentfiles
from controller.ledger import LEDGER_FILE

REG = "registry.example.com"
APP = f"{REG}/app/web"


def apply(device: Device, n: int, *apps: dict) -> None:
    agentfiles.apply(device.spec_dir, str(n), agentfiles.device_spec(None, list(apps)))


def two_generations(device: Device) -> None:
    """web:1 then web:2 applied, a prune after each (as the agent's hook does)."""
    for n in (1, 2):
        device.sandbox.make_image(f"{APP}:{n}", f"web {n}")
        apply(device, n, agentfiles.container_app("web", f"{APP}:{n}"))
        report = device.prune()
        assert report.outcome in ("pruned", "nothing-to-prune"), report.error


def test_stopped_container_keeps_an_unused_image_and_is_named(device: Device) -> None:
    two_generations(device)
    device.sandbox.make_image(f"{APP}:3", "web 3")
    apply(device, 3, agentfiles.container_app("web", f"{APP}:3"))
    device.sandbox.create_container(f"{APP}:1", "forgotten-debug")  # created, never started
    report = device.prune()
    assert report.outcome in ("nothing-to-prune", "pruned"), report.error
    assert f"{APP}:1" in device.image_names()
    kept = next(i for i in report.kept if f"{APP}:1" in i.names)
    assert any("forgotten-debug" in r and r.startswith("in-use") for r in kept.reasons)


def test_pinned_image_is_kept(device: Device) -> None:
    two_generations(device)
    device.sandbox.make_image(f"{APP}:3", "web 3")
    apply(device, 3, agentfiles.container_app("web", f"{APP}:3"))
    report = device.prune(pinned=(f"{APP}:1",))
    assert f"{APP}:1" in device.image_names()
    kept = next(i for i in report.kept if f"{APP}:1" in i.names)
    assert kept.reasons == (f"pinned: pinned pattern '{APP}:1'",)


def test_scope_managed_keeps_a_stranger_scope_all_removes_it(device: Device) -> None:
    two_generations(device)
    device.sandbox.make_image("quay.io/someone/tool:1", "stranger")
    report = device.prune()
    assert "quay.io/someone/tool:1" in device.image_names()
    assert any(
        "out-of-scope" in r
        for i in report.kept
        if "quay.io/someone/tool:1" in i.names
        for r in i.reasons
    )
    report = device.prune(scope="all")
    assert report.outcome == "pruned", report.error
    assert "quay.io/someone/tool:1" not in device.image_names()
    assert {f"{APP}:1", f"{APP}:2"} <= device.image_names()


def test_one_image_two_names_one_still_needed_stays(device: Device) -> None:
    two_generations(device)
    device.sandbox.make_image(f"{APP}:3", "web 3")
    device.sandbox.tag(f"{APP}:3", f"{APP}:old-alias")
    apply(device, 3, agentfiles.container_app("web", f"{APP}:3"))
    report = device.prune(scope="all")
    assert report.outcome == "pruned", report.error
    assert {f"{APP}:3", f"{APP}:old-alias"} <= device.image_names()
    assert f"{APP}:1" not in device.image_names()


def test_image_with_two_unneeded_names_is_removed_without_force(device: Device) -> None:
    two_generations(device)
    device.sandbox.tag(f"{APP}:1", f"{APP}:legacy")  # two tags: remove-by-ID would need force
    device.sandbox.make_image(f"{APP}:3", "web 3")
    apply(device, 3, agentfiles.container_app("web", f"{APP}:3"))
    report = device.prune(scope="all")
    assert report.outcome == "pruned", report.error
    assert not {f"{APP}:1", f"{APP}:legacy"} & device.image_names()
    assert report.failures == []


def test_digest_only_reference_keeps_its_image(device: Device) -> None:
    two_generations(device)
    image_id = device.sandbox.make_image(f"{REG}/seed/data:tmp", "seed data")
    inspect = json.loads(device.sandbox.podman("image", "inspect", image_id).stdout)[0]
    digest = inspect["Digest"]
    device.sandbox.podman("untag", image_id)  # now it looks dangling
    apply(
        device,
        3,
        {
            **agentfiles.container_app("web", f"{APP}:2"),
            "volumes": [{"name": "seed", "image": {"reference": f"{REG}/seed/data@{digest}"}}],
        },
    )
    report = device.prune(scope="all")
    assert report.outcome in ("pruned", "nothing-to-prune"), report.error
    assert image_id in device.image_ids()
    kept = next(i for i in report.kept if i.id == image_id)
    assert kept.names == () and any(digest in r for r in kept.reasons)


def test_dangling_image_is_removed(device: Device) -> None:
    two_generations(device)
    leftover = device.sandbox.make_image(None, "leftover layer")
    report = device.prune()
    assert report.outcome == "pruned", report.error
    assert leftover not in device.image_ids()
    assert [i.id for i in report.removed] == [leftover]
    assert report.removed[0].reasons[0].startswith("dangling")


def _compose(content: str, encoding: str | None = None) -> dict:
    entry = {"path": "docker-compose.yaml", "content": content}
    if encoding:
        entry["contentEncoding"] = encoding
    return {"name": "shop", "appType": "compose", "inline": [entry]}


MALFORMED = {
    "truncated json": ("current.json", None, "shop"[:0]),
    "wrong types": ("current.json", {"applications": {"name": "shop"}}, ""),
    "unknown appType": (
        "current.json",
        {"applications": [{"name": "shop", "appType": "wasm", "image": f"{APP}:9"}]},
        "shop",
    ),
    "bad base64": (
        "current.json",
        {"applications": [_compose("!!not base64!!", "base64")]},
        "shop",
    ),
    "bad compose yaml": ("current.json", {"applications": [_compose("services: [web: {")]}, "shop"),
    "bad desired.json": (
        "desired.json",
        {"applications": [_compose("services: {web: 7}")]},
        "shop",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_spec_removes_nothing_and_names_file_and_app(device: Device, case: str) -> None:
    two_generations(device)
    leftover = device.sandbox.make_image(None, "would be removed")
    file, spec, app = MALFORMED[case]
    path = device.spec_dir / file
    if spec is None:
        path.write_text(path.read_text()[:40])  # truncated mid-document
    else:
        doc = json.loads(path.read_text())
        doc["spec"] = spec
        path.write_text(json.dumps(doc))
    before = device.image_ids()
    report = device.prune()
    assert report.outcome == "failed"
    assert device.image_ids() == before and leftover in before
    assert report.failed_state == "Inventory"
    assert file in (report.error or "")
    if app:
        assert f"app '{app}'" in (report.error or "")


def test_missing_current_json_removes_nothing(device: Device) -> None:
    two_generations(device)
    leftover = device.sandbox.make_image(None, "would be removed")
    (device.spec_dir / "current.json").unlink()
    report = device.prune()
    assert report.outcome == "failed" and "current.json" in (report.error or "")
    assert leftover in device.image_ids()


def test_corrupt_ledger_removes_nothing_and_says_so(device: Device) -> None:
    two_generations(device)
    device.prune()
    leftover = device.sandbox.make_image(None, "would be removed")
    (device.state_dir / LEDGER_FILE).write_text('{"schema": 1, "refer')
    report = device.prune()
    assert report.outcome == "failed"
    assert "ledger" in (report.error or "") and LEDGER_FILE in (report.error or "")
    assert leftover in device.image_ids()


def test_missing_current_image_fails_the_precheck_and_removes_nothing(device: Device) -> None:
    two_generations(device)
    leftover = device.sandbox.make_image(None, "would be removed")
    device.sandbox.podman("rmi", f"{APP}:2")  # the running version vanished
    report = device.prune()
    assert report.outcome == "failed" and report.failed_state == "VerifyRollback"
    assert f"{APP}:2" in (report.error or "")
    assert leftover in device.image_ids()
    assert report.rollback_ok is False


def test_missing_previous_version_is_reported_as_degraded_rollback(device: Device) -> None:
    two_generations(device)
    device.sandbox.podman("rmi", f"{APP}:1")
    leftover = device.sandbox.make_image(None, "would be removed")
    report = device.prune()
    assert report.outcome == "pruned", report.error
    assert report.rollback_missing == [f"{APP}:1"] and report.rollback_ok is False
    assert leftover not in device.image_ids()


def test_quadlet_base64_image_indirection_is_kept(device: Device) -> None:
    unit = base64.b64encode(f"[Image]\nImage={REG}/iot/sensor:5\n".encode()).decode()
    device.sandbox.make_image(f"{REG}/iot/sensor:5", "sensor")
    quadlet = {
        "name": "sensor",
        "appType": "quadlet",
        "inline": [
            {"path": "sensor.container", "content": "[Container]\nImage=sensor.image\n"},
            {"path": "sensor.image", "content": unit, "contentEncoding": "base64"},
        ],
    }
    apply(device, 1, quadlet)
    report = device.prune(scope="all")
    assert report.outcome == "nothing-to-prune", report.error
    assert f"{REG}/iot/sensor:5" in device.image_names()


def test_removal_never_asks_podman_for_force(device: Device, mocker) -> None:
    from podman.domain.images_manager import ImagesManager

    spy = mocker.spy(ImagesManager, "remove")
    two_generations(device)
    device.sandbox.tag(f"{APP}:1", f"{APP}:legacy")
    device.sandbox.make_image(None, "leftover")
    device.sandbox.make_image(f"{APP}:3", "web 3")
    apply(device, 3, agentfiles.container_app("web", f"{APP}:3"))
    device.prune(scope="all")
    assert spy.call_count >= 3
    for call in spy.call_args_list:
        assert call.kwargs.get("force") is False, call
