"""Issue 5's "done when": a Podman 5 device with images, artifacts, an image
package and two stores is pruned to exactly its keep-set, generation after
generation (real Podman; skips on a Podman without artifacts)."""

from __future__ import annotations

from pathlib import Path

from conftest import Device
from test_artifact_pruning import artifact_names
from test_artifacts import add_artifact, needs_artifacts

from controller import agentfiles
from controller.sandbox import Sandbox

REG = "registry.example.com"
PKG = f"{REG}/pkg/telemetry"


def collector(n: int) -> str:
    return f"{REG}/telemetry/collector:{n}"


def kiosk(n: int) -> str:
    return f"{REG}/ui/kiosk:{n}"


def model(n: int) -> str:
    return f"localhost/ml/model:{n}"


def sensor(n: int) -> str:
    return f"{REG}/iot/sensor:{n}"


def names(sandbox: Sandbox) -> set[str]:
    out = sandbox.podman("images", "--format", "{{.Repository}}:{{.Tag}}")
    return {line for line in out.stdout.split() if line and "<none>" not in line}


def spec(n: int) -> dict:
    volume = {"name": "model", "image": {"reference": model(n)}}
    return agentfiles.device_spec(
        None,
        [
            {"name": "telemetry", "appType": "compose", "image": f"{PKG}:{n}"},
            agentfiles.container_app("kiosk", kiosk(n), volumes=[volume]),
            agentfiles.container_app("sensor", sensor(n), runAs="alice"),
        ],
    )


def test_images_artifacts_packages_and_two_stores_pruned_to_their_keep_sets(
    device: Device, other_sandbox: Sandbox, tmp_path: Path
) -> None:
    root = device.sandbox
    needs_artifacts(root)
    device.add_store("alice", other_sandbox)
    removed: set[tuple[str | None, str]] = set()
    for n in (1, 2, 3):
        context = tmp_path / f"pkg{n}"
        context.mkdir()
        (context / "compose.yaml").write_text(f"services:\n  c:\n    image: {collector(n)}\n")
        (context / "Containerfile").write_text("FROM scratch\nCOPY compose.yaml /\n")
        root.podman("build", "--pull=never", "-q", "-t", f"{PKG}:{n}", str(context))
        root.make_image(collector(n), f"collector {n}")
        root.make_image(kiosk(n), f"kiosk {n}")
        add_artifact(root, model(n), f"weights {n}")
        other_sandbox.make_image(sensor(n), f"sensor {n}")
        # the same reference in both stores: only alice's app needs it in hers
        other_sandbox.make_image(kiosk(1), "kiosk 1 (alice)") if n == 1 else None
        agentfiles.apply(device.spec_dir, str(n), spec(n))
        report = device.prune()
        assert report.outcome in ("pruned", "nothing-to-prune"), report.error
        removed |= {(i.store, name) for i in report.removed for name in i.names}
        if n == 1:  # same reference, two stores: gone from alice's, kept in root's
            assert ("alice", kiosk(1)) in removed and kiosk(1) in names(root)

    assert report.rollback_ok is True
    # root: generation 3 and 2 (previous), nothing of 1 — packages read, inner images kept
    assert names(root) == {f"{PKG}:3", f"{PKG}:2", collector(3), collector(2), kiosk(3), kiosk(2)}
    assert artifact_names(root) == {model(3), model(2)}
    # alice: her app's current and previous image; the stray kiosk:1 was never hers to keep
    assert names(other_sandbox) == {sensor(3), sensor(2)}
    assert {
        ("root", f"{PKG}:1"),
        ("root", collector(1)),
        ("root", kiosk(1)),
        ("root", model(1)),
        ("alice", sensor(1)),
    } <= removed
    kinds = {i.kind for i in report.removed}
    assert kinds == {"image", "artifact"}
    assert {s.user: s.status for s in report.stores} == {"root": "pruned", "alice": "pruned"}
