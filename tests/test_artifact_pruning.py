"""OCI artifacts in the pruning run, on real Podman (5.4: the CLI; 5.6+: REST).

The volume lifecycle test runs once per binary; on a Podman without
artifacts (4.3) it skips, as tests/test_artifacts.py does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Device
from test_artifacts import TinyRegistry, add_artifact, expected_access, needs_artifacts, pull

from controller import agentfiles
from controller.artifacts import Access, ArtifactSource, ArtifactStore
from controller.podman import PodmanStore, RetryPolicy
from controller.sandbox import Sandbox

REG = "registry.example.com"
WEB = f"{REG}/shop/web:1"


def model(n: int) -> str:
    return f"localhost/vol/models:{n}"


def volume_app(reference: str, **extra: Any) -> dict[str, Any]:
    volume = {"name": "models", "image": {"reference": reference, "pullPolicy": "IfNotPresent"}}
    return agentfiles.container_app("web", WEB, volumes=[volume], **extra)


def artifact_names(sandbox: Sandbox) -> set[str]:
    out = sandbox.podman("artifact", "ls", "--noheading", "--format", "{{.Repository}}:{{.Tag}}")
    return {line.strip() for line in out.stdout.splitlines() if line.strip()}


def test_a_volume_artifact_is_kept_while_referenced_then_as_previous_then_removed(
    device: Device,
) -> None:
    sandbox = device.sandbox
    needs_artifacts(sandbox)
    sandbox.make_image(WEB, "web")
    sizes = {}
    reports = []
    for n in (1, 2, 3):
        add_artifact(sandbox, model(n), "weights " * n)
        sizes[n] = len("weights " * n)
        agentfiles.apply(
            device.spec_dir, str(n), agentfiles.device_spec(None, [volume_app(model(n))])
        )
        reports.append(device.prune())

    first, second, third = reports
    assert [r.outcome for r in reports] == ["nothing-to-prune", "nothing-to-prune", "pruned"], [
        r.error for r in reports
    ]
    kept_first = {i.names[0]: i for i in first.kept if i.kind == "artifact"}
    assert kept_first[model(1)].reasons[0].startswith("referenced: current.json (generation 1)")
    kept_second = {i.names[0]: i.reasons for i in second.kept if i.kind == "artifact"}
    assert any(r.startswith("retention: app 'web' previous version") for r in kept_second[model(1)])

    removed = [i for i in third.removed if i.kind == "artifact"]
    assert [(i.names, i.store, i.size_bytes) for i in removed] == [((model(1),), "root", sizes[1])]
    assert removed[0].id.startswith("sha256:")
    assert removed[0].reasons[0].startswith("unreferenced:")
    assert third.estimated_bytes == sizes[1]  # the only removal
    assert artifact_names(sandbox) == {model(2), model(3)}
    assert [(s.user, s.status, s.artifacts, s.artifact_count, s.removed) for s in third.stores] == [
        ("root", "pruned", expected_access(sandbox).value, 3, 1)
    ]
    assert third.rollback_ok is True


def test_a_missing_current_volume_artifact_stops_the_run(device: Device) -> None:
    sandbox = device.sandbox
    needs_artifacts(sandbox)
    sandbox.make_image(WEB, "web")
    old = sandbox.make_image(f"{REG}/shop/old:1", "old")
    agentfiles.apply(
        device.spec_dir,
        "1",
        agentfiles.device_spec(None, [agentfiles.container_app("old", f"{REG}/shop/old:1")]),
    )
    assert device.prune().outcome == "nothing-to-prune"
    agentfiles.apply(device.spec_dir, "2", agentfiles.device_spec(None, [volume_app(model(9))]))

    report = device.prune(retain_previous=0)

    assert report.outcome == "failed" and report.failed_state == "VerifyRollback"
    assert f"are not in the store: {model(9)}" in (report.error or "")
    assert old in device.image_ids()  # nothing removed


@pytest.fixture
def registry() -> Iterator[TinyRegistry]:
    reg = TinyRegistry()
    yield reg
    reg.close()


@pytest.fixture
def private_device(podman_sandbox: Sandbox, tmp_path: Path) -> Iterator[Device]:
    """A device on a fresh store: one holding an unnamed artifact cannot be reset."""
    with Sandbox(podman_sandbox.binary) as own:
        yield Device(own, tmp_path)


def test_an_unnamed_artifact_is_reported_and_the_run_completes(
    private_device: Device, registry: TinyRegistry
) -> None:
    device, sandbox = private_device, private_device.sandbox
    needs_artifacts(sandbox)
    sandbox.make_image(WEB, "web")
    ref = f"{registry.host}/vol/model:1"
    previous = registry.publish("vol/model", "1", "weights v1")
    pull(sandbox, ref)
    registry.publish("vol/model", "1", "weights v2!")  # the tag moves
    pull(sandbox, ref)  # the previous manifest stays, unnamed
    agentfiles.apply(device.spec_dir, "1", agentfiles.device_spec(None, [volume_app(ref)]))

    report = device.prune()

    assert report.outcome == "pruned", report.error
    artifacts = {i.names: i for i in report.kept if i.kind == "artifact"}
    unnamed = artifacts[()]
    assert (unnamed.id, unnamed.size_bytes, unnamed.detail) == (previous, 10, "not removable")
    assert unnamed.reasons[0].startswith("not-removable: Podman answered:")
    assert artifacts[(ref,)].reasons[0].startswith("referenced: current.json")
    assert report.removed == [] and report.failures == []
    assert any("store root: artifacts: 1 unnamed artifact(s)" in n for n in report.notes)
    again = device.prune()  # and the next run is no different: reported, not fatal
    assert again.outcome == "pruned" and again.failures == []


def test_a_cli_that_reaches_another_store_is_not_used(sandbox: Sandbox) -> None:
    if expected_access(sandbox) is not Access.CLI:
        pytest.skip(f"{sandbox.binary.label} is not a Podman 5.4-5.5")
    other = Path(sandbox.root) / "elsewhere"
    argv, env = sandbox.cli()
    wrong = (sandbox.binary.path, "--root", str(other), "--runroot", str(other / "run"))
    store = PodmanStore(sandbox.url, retry=RetryPolicy(sleep=lambda _s: None))
    right = ArtifactStore(
        store, ArtifactSource(cli=argv, env=env), expect_graph_root=str(sandbox.storage_path)
    )
    astray = ArtifactStore(
        store, ArtifactSource(cli=wrong, env=env), expect_graph_root=str(sandbox.storage_path)
    )

    assert right.access is Access.CLI
    listing = astray.list()
    assert (listing.access, listing.artifacts) == (Access.NONE, ())
    assert (
        f"the podman CLI reaches another store ({other}, not {sandbox.storage_path})"
        in (listing.notes[0])
    )


def test_a_podman_without_artifacts_is_noted_once_per_store_and_prunes_images(
    device: Device,
) -> None:
    if expected_access(device.sandbox) is not Access.NONE:
        pytest.skip(f"{device.sandbox.binary.label} has artifacts")
    device.sandbox.make_image(WEB, "web")
    agentfiles.apply(device.spec_dir, "1", agentfiles.device_spec(None, [volume_app(model(1))]))
    pruner = device.pruner()

    report = pruner.run_once(trigger="test")

    assert report.outcome == "nothing-to-prune", report.error  # the volume is not required
    unsupported = [n for n in report.notes if "not supported" in n]
    assert len(unsupported) == 1 and unsupported[0].startswith("store root: artifacts: ")
    assert [(s.artifacts, s.artifact_count) for s in report.stores] == [("none", 0)]
