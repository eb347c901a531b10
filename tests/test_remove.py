"""The Remove state on real Podman, with races injected where Podman can't make them."""

from __future__ import annotations

from conftest import Device

from controller import agentfiles
from controller.podman import PodmanStore, PodmanUnavailable

REG = "registry.example.com"
APP = f"{REG}/app/web"


def three_generations(device: Device, *extra_gen1_apps: dict) -> None:
    for n in (1, 2, 3):
        device.sandbox.make_image(f"{APP}:{n}", f"web {n}")
        apps = [agentfiles.container_app("web", f"{APP}:{n}")]
        agentfiles.apply(
            device.spec_dir,
            str(n),
            agentfiles.device_spec(None, apps + list(extra_gen1_apps if n == 1 else ())),
        )
        if n < 3:
            assert device.prune().outcome in ("pruned", "nothing-to-prune")


def test_generation_change_between_plan_and_remove_stops_removal_and_replans(
    device: Device, mocker
) -> None:
    device.sandbox.make_image(f"{REG}/app/aaa-tool:1", "tool")  # removed first (name order)
    three_generations(device, agentfiles.container_app("tool", f"{REG}/app/aaa-tool:1"))
    real_remove = PodmanStore.remove_image
    calls: list[str] = []

    def remove_then_update(self: PodmanStore, name: str):
        result = real_remove(self, name)
        if not calls:
            # The agent applies generation 4 (which needs web:1 again) mid-removal.
            agentfiles.apply(
                device.spec_dir,
                "4",
                agentfiles.device_spec(None, [agentfiles.container_app("web", f"{APP}:1")]),
            )
        calls.append(name)
        return result

    mocker.patch.object(PodmanStore, "remove_image", remove_then_update)
    report = device.prune()
    assert report.outcome == "pruned", report.error
    assert report.states.count("Inventory") == 2  # replanned once
    assert report.states[-3:] == ["Remove", "Validate", "Idle"]
    assert f"{APP}:1" in device.image_names()  # the replan saw generation 4 need it
    assert calls[0] == f"{REG}/app/aaa-tool:1" and f"{APP}:1" not in calls
    assert report.spec_generation == "4"


def test_image_taken_into_use_after_plan_is_skipped_and_container_named(
    device: Device, mocker
) -> None:
    three_generations(device)
    real_remove = PodmanStore.remove_image

    def race(self: PodmanStore, name: str):
        if name == f"{APP}:1":
            device.sandbox.create_container(f"{APP}:1", "late-starter")
        return real_remove(self, name)

    mocker.patch.object(PodmanStore, "remove_image", race)
    report = device.prune()
    assert report.outcome in ("pruned", "nothing-to-prune"), report.error
    assert f"{APP}:1" in device.image_names()
    item = next(i for i in report.kept if f"{APP}:1" in i.names)
    assert item.detail == "removal refused: in use"
    assert report.failures == []
    assert any(r.startswith("in-use") for r in item.reasons)


def test_image_already_gone_counts_as_removed_and_the_rest_goes_on(device: Device, mocker) -> None:
    three_generations(device)
    leftover = device.sandbox.make_image(None, "leftover")
    real_remove = PodmanStore.remove_image

    def someone_else_removed_it(self: PodmanStore, name: str):
        if name == f"{APP}:1":
            device.sandbox.podman("rmi", f"{APP}:1")
        return real_remove(self, name)

    mocker.patch.object(PodmanStore, "remove_image", someone_else_removed_it)
    report = device.prune()
    assert report.outcome == "pruned", report.error
    gone = next(i for i in report.removed if f"{APP}:1" in i.names)
    assert gone.detail == "already gone"
    assert leftover not in device.image_ids()  # the missing image did not abort the cleanup
    # only what this run removed counts in the estimate
    assert report.estimated_bytes == sum(i.size_bytes for i in report.removed if not i.detail)


def test_podman_dying_mid_removal_fails_the_run_without_raising(device: Device, mocker) -> None:
    three_generations(device)
    mocker.patch.object(
        PodmanStore,
        "remove_image",
        side_effect=PodmanUnavailable("connection refused", device.sandbox.url),
    )
    report = device.prune()
    assert report.outcome == "failed" and report.failed_state == "Remove"
    assert "connection refused" in (report.error or "")
    assert f"{APP}:1" in device.image_names()


def test_dead_socket_fails_in_inventory_and_next_run_recovers(device: Device, tmp_path) -> None:
    three_generations(device)
    pruner = device.pruner(podman_url=f"unix://{tmp_path}/nothing-here.sock")
    report = pruner.run_once()
    assert report.outcome == "failed" and report.failed_state == "Inventory"
    assert "nothing-here.sock" in (report.error or "")
    assert pruner.state == "Failed"
    pruner.config = device.config()
    report = pruner.run_once()
    assert report.outcome == "pruned", report.error
    assert report.states[0] == "Idle"


def test_image_that_gains_a_name_after_plan_is_untagged_not_removed(device: Device, mocker) -> None:
    three_generations(device)
    real_remove = PodmanStore.remove_image

    def agent_tags_it_meanwhile(self: PodmanStore, name: str):
        if name == f"{APP}:1":
            device.sandbox.tag(f"{APP}:1", f"{APP}:pinned-by-hand")
        return real_remove(self, name)

    mocker.patch.object(PodmanStore, "remove_image", agent_tags_it_meanwhile)
    report = device.prune()
    assert report.outcome == "pruned", report.error  # something else may still go
    names = device.image_names()
    assert f"{APP}:1" not in names and f"{APP}:pinned-by-hand" in names
    item = next(i for i in report.kept if f"{APP}:1" in i.names)
    assert item.detail == "planned names removed"
    assert item.reasons[0].startswith("new-name: gained a name after Plan")
    assert all(f"{APP}:1" not in i.names for i in report.removed)
    assert report.estimated_bytes == sum(i.size_bytes for i in report.removed)


def test_rollback_is_not_reported_ok_when_the_precheck_never_ran(device: Device) -> None:
    three_generations(device)
    (device.spec_dir / "current.json").write_text("{")
    report = device.prune()
    assert report.outcome == "failed" and report.failed_state == "Inventory"
    assert report.rollback_ok is None
    assert report.to_dict()["rollback"] == {"ok": None, "missing": []}


def test_replan_that_leaves_nothing_to_remove_still_validates_what_was_removed(
    device: Device, mocker
) -> None:
    device.sandbox.make_image(f"{REG}/app/aaa-tool:1", "tool")
    three_generations(device, agentfiles.container_app("tool", f"{REG}/app/aaa-tool:1"))
    real_remove = PodmanStore.remove_image

    def remove_then_update(self: PodmanStore, name: str):
        result = real_remove(self, name)
        # generation 4 needs every web version still here: nothing else may go
        agentfiles.apply(
            device.spec_dir,
            "4",
            agentfiles.device_spec(
                None,
                [
                    agentfiles.container_app("web", f"{APP}:3"),
                    agentfiles.container_app("old", f"{APP}:1"),
                    agentfiles.container_app("older", f"{APP}:2"),
                ],
            ),
        )
        return result

    mocker.patch.object(PodmanStore, "remove_image", remove_then_update)
    report = device.prune()
    assert report.outcome == "pruned", report.error
    assert report.states[-3:] == ["Remove", "Validate", "Idle"]
    assert report.states.count("Inventory") == 2
    assert [i.names for i in report.removed] == [(f"{REG}/app/aaa-tool:1",)]
    assert report.measured_bytes is not None
    assert {f"{APP}:1", f"{APP}:2", f"{APP}:3"} <= device.image_names()


def test_a_generation_seen_by_a_run_that_failed_on_podman_is_still_learned(
    device: Device, tmp_path
) -> None:
    # gen 1 and 2 pruned normally; gen 3 applied while Podman is unreachable
    for n in (1, 2):
        device.sandbox.make_image(f"{APP}:{n}", f"web {n}")
        agentfiles.apply(
            device.spec_dir,
            str(n),
            agentfiles.device_spec(None, [agentfiles.container_app("web", f"{APP}:{n}")]),
        )
        assert device.prune().outcome in ("pruned", "nothing-to-prune")
    device.sandbox.make_image(f"{APP}:3", "web 3")
    agentfiles.apply(
        device.spec_dir,
        "3",
        agentfiles.device_spec(None, [agentfiles.container_app("web", f"{APP}:3")]),
    )
    down = device.prune(podman_url=f"unix://{tmp_path}/podman-restarting.sock")
    assert down.outcome == "failed" and down.failed_state == "Inventory"
    # gen 4 arrives; the run sees Podman again: gen 3 is the previous spec now
    device.sandbox.make_image(f"{APP}:4", "web 4")
    agentfiles.apply(
        device.spec_dir,
        "4",
        agentfiles.device_spec(None, [agentfiles.container_app("web", f"{APP}:4")]),
    )
    report = device.prune()
    assert report.outcome == "pruned", report.error
    names = device.image_names()
    assert {f"{APP}:3", f"{APP}:4"} <= names
    assert f"{APP}:2" not in names and f"{APP}:1" not in names


def test_nameless_image_that_gets_a_name_after_plan_is_not_removed_by_id(
    device: Device, mocker
) -> None:
    three_generations(device)
    # content already in the store as a dangling image; the agent's pull of the
    # desired image lands on it between Plan and Remove
    nameless = device.sandbox.make_image(None, "payload of the next release")
    real_remove = PodmanStore.remove_image
    pulled: list[str] = []

    def pull_lands_on_it(self: PodmanStore, name: str):
        if not pulled:
            device.sandbox.tag(nameless, f"{APP}:4")
            pulled.append(name)
        return real_remove(self, name)

    mocker.patch.object(PodmanStore, "remove_image", pull_lands_on_it)
    report = device.prune()
    assert report.outcome in ("pruned", "nothing-to-prune"), report.error
    assert nameless in device.image_ids() and f"{APP}:4" in device.image_names()
    item = next(i for i in report.kept if i.id == nameless)
    assert item.detail == "not removed"
    assert item.reasons == ("new-name: gained a name after Plan; not removed",)


def test_a_generation_seen_only_mid_update_stays_protected_when_replaced_unseen(
    device: Device,
) -> None:
    def web_spec(n: int) -> dict:
        return agentfiles.device_spec(None, [agentfiles.container_app("web", f"{APP}:{n}")])

    device.sandbox.make_image(f"{APP}:1", "web 1")
    agentfiles.apply(device.spec_dir, "1", web_spec(1))
    assert device.prune().outcome in ("pruned", "nothing-to-prune")
    device.sandbox.make_image(f"{APP}:2", "web 2")
    agentfiles.begin_update(device.spec_dir, "2", web_spec(2))
    assert device.prune().outcome in ("pruned", "nothing-to-prune")  # saw 2 as desired only
    agentfiles.finish_update(device.spec_dir)  # 2 applied ... and replaced, no run between
    device.sandbox.make_image(f"{APP}:3", "web 3")
    agentfiles.apply(device.spec_dir, "3", web_spec(3))
    report = device.prune()
    assert report.outcome in ("pruned", "nothing-to-prune"), report.error
    assert {f"{APP}:2", f"{APP}:3"} <= device.image_names()  # 2 was the previous spec
