"""The fleet operator's journey on a real Podman store: three generations, then rollback."""

from __future__ import annotations

from conftest import Device

from controller import agentfiles

REG = "registry.example.com"


def web(n: int) -> str:
    return f"{REG}/shop/web:{n}.0"


def worker(n: int) -> str:
    return f"{REG}/shop/worker:{n}.0"


def spec(n: int) -> dict:
    return agentfiles.device_spec(
        f"{REG}/os/edge:{n}",
        [
            agentfiles.compose_app("shop", {"web": web(n), "cache": "docker.io/library/redis:7.2"}),
            agentfiles.container_app("worker", worker(n)),
        ],
    )


def pull(device: Device, n: int) -> None:
    for ref in (web(n), worker(n)):
        device.sandbox.make_image(ref, f"payload of {ref}")


def test_three_generations_keep_current_and_previous_and_rollback_works_offline(
    device: Device,
) -> None:
    device.sandbox.make_image("docker.io/library/redis:7.2", "redis")
    pruner = device.pruner()

    for n in (1, 2):
        pull(device, n)
        agentfiles.apply(device.spec_dir, str(n), spec(n))
        report = pruner.run_once(trigger="after-update")
        assert report.outcome in ("pruned", "nothing-to-prune"), report.error
    assert {web(1), web(2), worker(1), worker(2)} <= device.image_names()

    pull(device, 3)
    agentfiles.apply(device.spec_dir, "3", spec(3))
    report = pruner.run_once(trigger="after-update")
    assert report.outcome == "pruned", report.error
    assert sorted(n for item in report.removed for n in item.names) == [web(1), worker(1)]
    names = device.image_names()
    assert web(1) not in names and worker(1) not in names
    assert {web(2), web(3), worker(2), worker(3), "docker.io/library/redis:7.2"} <= names
    assert report.rollback_ok and report.rollback_missing == []
    assert report.measured_bytes is not None  # measured on the store's filesystem
    assert report.estimated_bytes == sum(i.size_bytes for i in report.removed) > 0

    # The agent rolls back to generation 2 with no network: every image is local
    # and a container can be created from each without pulling.
    agentfiles.apply(device.spec_dir, "4", spec(2))
    for i, ref in enumerate((web(2), worker(2), "docker.io/library/redis:7.2")):
        created = device.sandbox.podman(
            "create", "--pull=never", "--name", f"rb{i}", ref, "true", check=False
        )
        assert created.returncode == 0, created.stderr
    # ... and the prune after the rollback keeps generation 3 as its previous version
    report = pruner.run_once(trigger="after-update")
    assert report.outcome in ("pruned", "nothing-to-prune"), report.error
    assert {web(2), web(3), worker(2), worker(3)} <= device.image_names()


def test_report_explains_every_decision(device: Device) -> None:
    device.sandbox.make_image("docker.io/library/redis:7.2", "redis")
    for n in (1, 2, 3):
        pull(device, n)
        agentfiles.apply(device.spec_dir, str(n), spec(n))
        report = device.prune()
    kept = {name: item.reasons for item in report.kept for name in item.names}
    assert any(
        r.startswith("retention: app 'shop' previous version (generation 2)") for r in kept[web(2)]
    )
    assert any(
        r.startswith("referenced: current.json (generation 3) app 'worker'")
        for r in kept[worker(3)]
    )
    removed = {name: item.reasons for item in report.removed for name in item.names}
    assert removed[web(1)] == (
        "unreferenced: referenced by the agent before; no spec or retained version needs it",
    )
    assert report.states == [
        "Idle",
        "Inventory",
        "Plan",
        "VerifyRollback",
        "Remove",
        "Validate",
        "Idle",
    ]
