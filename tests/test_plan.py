"""Unit tests of the pure planner: one or more per keep rule of design.md section 4."""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace

import pytest

from controller.ledger import ANY_STORE, Ledger
from controller.model import Action, Artifact, Container, Image, Inventory, Plan, Rule
from controller.spec import AppSpec, DeviceSpec, SpecSet
from controller.stores import StoreTarget
from states.plan import PlanInput, make_plan

REG = "registry.example.com"
NOW = 1_000_000.0
OLD = NOW - 3600  # first seen an hour ago: past any min-age


def digest(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def image(seed: str, *names: str, dangling: bool = False, **kw: object) -> Image:
    d = digest(seed)
    repos = tuple(f"{n.rsplit(':', 1)[0]}@{d}" for n in names)
    return Image(
        id=hashlib.sha256(("id" + seed).encode()).hexdigest(),
        names=names,
        digests=(d,),
        repo_digests=repos,
        size=1000,
        unique_size=600,
        dangling=dangling or not names,
        **kw,  # type: ignore[arg-type]
    )


def app(name: str, *images: str, run_as: str | None = None, **kw: tuple[str, ...]) -> AppSpec:
    return AppSpec(name=name, app_type="container", run_as=run_as, images=images, **kw)


def device(
    generation: str, *apps: AppSpec, os_image: str | None = None, file: str = "current.json"
) -> DeviceSpec:
    return DeviceSpec(
        file=f"/var/lib/flightctl/{file}",
        present=True,
        generation=generation,
        os_image=os_image,
        apps=apps,
    )


def empty(file: str) -> DeviceSpec:
    return DeviceSpec(file=f"/var/lib/flightctl/{file}", present=False)


def steady(current: DeviceSpec) -> SpecSet:
    desired = DeviceSpec(
        file="/var/lib/flightctl/desired.json",
        present=True,
        generation=current.generation,
        os_image=current.os_image,
        apps=current.apps,
    )
    return SpecSet(desired=desired, current=current, rollback=empty("rollback.json"))


def learn(*generations: DeviceSpec, images: list[Image] | None = None) -> Ledger:
    ledger = Ledger()
    for i, current in enumerate(generations):
        ledger.record_specs(steady(current), OLD + i)
    ledger.record_images((i.id for i in images or []), OLD)
    return ledger


def plan_for(images: list[Image], specs: SpecSet, ledger: Ledger, **kw: object):
    inventory = Inventory(
        images=tuple(images),
        containers=tuple(kw.pop("containers", ())),
        taken_at=NOW,
        os_images=tuple(kw.pop("os_images", ())),
    )
    return make_plan(PlanInput(inventory=inventory, specs=specs, ledger=ledger, now=NOW, **kw))  # type: ignore[arg-type]


def decisions(plan) -> dict[str, tuple[Action, set[Rule]]]:
    out = {}
    for d in plan.decisions:
        key = d.image.names[0] if d.image.names else d.image.id
        out[key] = (d.action, {r.rule for r in d.reasons})
    return out


def gen(n: int, **kw: object) -> DeviceSpec:
    return device(str(n), app("web", f"{REG}/web:{n}"), app("db", f"{REG}/db:1"), **kw)


WEB = [image(f"web{n}", f"{REG}/web:{n}") for n in (1, 2, 3)]
DB = image("db", f"{REG}/db:1")


def test_retention_keeps_current_and_previous_removes_older() -> None:
    images = [*WEB, DB]
    ledger = learn(gen(1), gen(2), gen(3), images=images)
    got = decisions(plan_for(images, steady(gen(3)), ledger))
    assert got[f"{REG}/web:3"] == (Action.KEEP, {Rule.REFERENCED})
    assert got[f"{REG}/web:2"] == (Action.KEEP, {Rule.RETENTION})
    assert got[f"{REG}/web:1"] == (Action.REMOVE, {Rule.UNREFERENCED})
    assert got[f"{REG}/db:1"][0] is Action.KEEP


def test_retention_of_two_previous_versions_keeps_v1() -> None:
    images = [*WEB, DB]
    ledger = learn(gen(1), gen(2), gen(3), images=images)
    got = decisions(plan_for(images, steady(gen(3)), ledger, retain_previous=2))
    assert got[f"{REG}/web:1"] == (Action.KEEP, {Rule.RETENTION})


def test_retention_zero_keeps_only_current() -> None:
    images = [*WEB, DB]
    ledger = learn(gen(1), gen(2), gen(3), images=images)
    got = decisions(plan_for(images, steady(gen(3)), ledger, retain_previous=0))
    assert got[f"{REG}/web:2"][0] is Action.REMOVE


def test_previously_applied_spec_keeps_a_removed_apps_images() -> None:
    cache = image("cache", f"{REG}/cache:1")
    g1 = device("1", app("web", f"{REG}/web:1"), app("cache", f"{REG}/cache:1"))
    g2 = device("2", app("web", f"{REG}/web:1"))  # cache app removed
    ledger = learn(g1, g2, images=[WEB[0], cache])
    got = decisions(plan_for([WEB[0], cache], steady(g2), ledger))
    assert got[f"{REG}/cache:1"] == (Action.KEEP, {Rule.RETENTION})
    reasons = next(
        d.reasons
        for d in plan_for([WEB[0], cache], steady(g2), ledger).decisions
        if d.image is cache
    )
    assert "generation 1" in reasons[0].detail


@pytest.mark.parametrize("file", ["desired.json", "rollback.json"])
def test_refs_of_desired_and_rollback_are_kept(file: str) -> None:
    new = image("web4", f"{REG}/web:4")
    images = [*WEB, DB, new]
    ledger = learn(gen(1), gen(2), gen(3), images=images)
    other = device("4", app("web", f"{REG}/web:1"), file=file)
    specs = steady(gen(3))
    specs = SpecSet(
        desired=other if file == "desired.json" else specs.desired,
        current=specs.current,
        rollback=other if file == "rollback.json" else specs.rollback,
    )
    got = decisions(plan_for(images, specs, ledger))
    assert got[f"{REG}/web:1"] == (Action.KEEP, {Rule.REFERENCED})


def test_os_image_of_a_spec_and_bootc_images_are_kept() -> None:
    os_spec = image("os1", f"{REG}/os/edge:1")
    os_booted = image("os0", f"{REG}/os/edge:0")
    images = [os_spec, os_booted, DB]
    current = device("1", app("db", f"{REG}/db:1"), os_image=f"{REG}/os/edge:1")
    ledger = learn(device("0", os_image=f"{REG}/os/edge:0"), current, images=images)
    got = decisions(
        plan_for(images, steady(current), ledger, retain_previous=0, os_images=[f"{REG}/os/edge:0"])
    )
    assert got[f"{REG}/os/edge:1"] == (Action.KEEP, {Rule.OS_IMAGE})
    assert got[f"{REG}/os/edge:0"] == (Action.KEEP, {Rule.OS_IMAGE})
    # without bootc's word, the old OS image is just an unreferenced image
    got = decisions(plan_for(images, steady(current), ledger, retain_previous=0))
    assert got[f"{REG}/os/edge:0"][0] is Action.REMOVE


def test_image_of_a_stopped_container_is_kept_and_the_container_named() -> None:
    images = [*WEB, DB]
    holder = Container(id="c" * 64, names=("old-web",), image_id=WEB[0].id, state="exited")
    plan = plan_for(
        images, steady(gen(3)), learn(gen(1), gen(2), gen(3), images=images), containers=[holder]
    )
    kept = next(d for d in plan.decisions if d.image is WEB[0])
    assert kept.action is Action.KEEP
    assert [r.rule for r in kept.reasons] == [Rule.IN_USE]
    assert "old-web" in kept.reasons[0].detail and "exited" in kept.reasons[0].detail


def test_pinned_pattern_and_builtin_pause_pin() -> None:
    pause = image("pause", "localhost/podman-pause:4.3.1-0")
    images = [*WEB, DB, pause]
    ledger = learn(gen(1), gen(2), gen(3), images=images)
    got = decisions(plan_for(images, steady(gen(3)), ledger, pinned=(f"{REG}/web:*",), scope="all"))
    assert got[f"{REG}/web:1"] == (Action.KEEP, {Rule.PINNED})
    assert got["localhost/podman-pause:4.3.1-0"] == (Action.KEEP, {Rule.PINNED})


def test_min_age_keeps_a_recently_seen_image() -> None:
    images = [*WEB, DB]
    ledger = learn(gen(1), gen(2), gen(3), images=images)
    ledger.first_seen[WEB[0].id] = NOW - 30
    got = decisions(plan_for(images, steady(gen(3)), ledger, min_age_seconds=120))
    assert got[f"{REG}/web:1"] == (Action.KEEP, {Rule.MIN_AGE})
    got = decisions(plan_for(images, steady(gen(3)), ledger, min_age_seconds=10))
    assert got[f"{REG}/web:1"][0] is Action.REMOVE


def test_unknown_first_seen_counts_as_seen_now() -> None:
    images = [*WEB, DB]
    ledger = learn(gen(1), gen(2), gen(3))  # no record_images
    got = decisions(plan_for(images, steady(gen(3)), ledger, min_age_seconds=1))
    assert got[f"{REG}/web:1"] == (Action.KEEP, {Rule.MIN_AGE})


def test_kept_manifest_list_keeps_its_instances_unkept_list_goes_first() -> None:
    inst_a = image("a", f"{REG}/multi:1-amd64")
    inst_b = image("b")  # untagged instance: only the list names it
    kept_list = image(
        "list1",
        f"{REG}/multi:1",
        is_manifest_list=True,
        manifest_instances=(inst_a.digests[0], inst_b.digests[0]),
    )
    inst_c = image("c")
    old_list = image(
        "list0", f"{REG}/multi:0", is_manifest_list=True, manifest_instances=(inst_c.digests[0],)
    )
    images = [inst_a, inst_b, kept_list, inst_c, old_list]
    g0 = device("0", app("m", f"{REG}/multi:0"))
    g1 = device("1", app("m", f"{REG}/multi:1"))
    plan = plan_for(
        images, steady(g1), learn(g0, g1, images=images), retain_previous=0, scope="all"
    )
    got = {d.image.id: (d.action, {r.rule for r in d.reasons}) for d in plan.decisions}
    assert got[inst_b.id] == (Action.KEEP, {Rule.MANIFEST_LIST})
    assert got[inst_a.id] == (Action.KEEP, {Rule.MANIFEST_LIST})
    assert got[old_list.id][0] is Action.REMOVE
    assert got[inst_c.id][0] is Action.REMOVE
    assert plan.removals[0].image is old_list  # lists are removed before images


def test_scope_managed_keeps_unknown_images_all_removes_them() -> None:
    stranger = image("x", "quay.io/someone/tool:1")
    images = [*WEB, DB, stranger]
    ledger = learn(gen(1), gen(2), gen(3), images=images)
    got = decisions(plan_for(images, steady(gen(3)), ledger))
    assert got["quay.io/someone/tool:1"] == (Action.KEEP, {Rule.OUT_OF_SCOPE})
    got = decisions(plan_for(images, steady(gen(3)), ledger, scope="all"))
    assert got["quay.io/someone/tool:1"] == (Action.REMOVE, {Rule.UNMANAGED})


def test_dangling_image_is_removed_in_managed_scope() -> None:
    leftover = image("leftover")
    images = [*WEB, DB, leftover]
    ledger = learn(gen(1), gen(2), gen(3), images=images)
    got = decisions(plan_for(images, steady(gen(3)), ledger))
    assert got[leftover.id] == (Action.REMOVE, {Rule.DANGLING})


def test_digest_only_reference_keeps_an_image_that_looks_dangling() -> None:
    by_digest = image("seed")
    by_digest = Image(
        id=by_digest.id,
        digests=by_digest.digests,
        repo_digests=(f"{REG}/seed@{by_digest.digests[0]}",),
        dangling=True,
    )
    current = device("1", app("db", f"{REG}/db:1", volume_refs=(f"{REG}/seed@{digest('seed')}",)))
    images = [DB, by_digest]
    got = decisions(plan_for(images, steady(current), learn(current, images=images)))
    assert got[by_digest.id] == (Action.KEEP, {Rule.REFERENCED})


def test_one_image_two_names_one_still_needed_is_kept() -> None:
    both = image("shared", f"{REG}/web:3", f"{REG}/web:old")
    images = [both, DB]
    g1 = device("1", app("web", f"{REG}/web:old"), app("db", f"{REG}/db:1"))
    ledger = learn(g1, gen(2), gen(3), images=images)
    got = decisions(plan_for(images, steady(gen(3)), ledger, retain_previous=0))
    assert got[f"{REG}/web:3"][0] is Action.KEEP


def test_short_name_reference_keeps_the_image_under_any_registry() -> None:
    local = image("local", "localhost/myapp:1")
    current = device("1", app("a", "myapp:1"))
    got = decisions(plan_for([local], steady(current), learn(current, images=[local]), scope="all"))
    assert got["localhost/myapp:1"] == (Action.KEEP, {Rule.REFERENCED})


def test_unread_image_package_protects_every_named_image_even_in_scope_all() -> None:
    inner = image("inner", f"{REG}/telemetry/collector:1")
    pkg = image("pkg", f"{REG}/pkg/bundle:1")
    leftover = image("leftover")
    current = device("1", AppSpec(name="t", app_type="compose", packages=(f"{REG}/pkg/bundle:1",)))
    images = [inner, pkg, leftover]
    got = decisions(
        plan_for(
            images, steady(current), learn(current, images=images), scope="all", retain_previous=0
        )
    )
    assert got[f"{REG}/telemetry/collector:1"] == (Action.KEEP, {Rule.UNREAD_PACKAGE})
    assert got[f"{REG}/pkg/bundle:1"] == (Action.KEEP, {Rule.REFERENCED, Rule.UNREAD_PACKAGE})
    assert got[leftover.id][0] is Action.REMOVE  # no name: no package can name it


def test_unread_package_also_protects_an_image_the_agent_named_before() -> None:
    # gen 1 ran the collector from inline compose; gen 2 ships it inside a package
    collector = image("collector", f"{REG}/telemetry/collector:1")
    g1 = device("1", app("t", f"{REG}/telemetry/collector:1"))
    g2 = device("2", AppSpec(name="t", app_type="compose", packages=(f"{REG}/pkg/bundle:1",)))
    ledger = learn(g1, g2, images=[collector])
    got = decisions(plan_for([collector], steady(g2), ledger, retain_previous=0))
    assert got[f"{REG}/telemetry/collector:1"] == (Action.KEEP, {Rule.UNREAD_PACKAGE})


def test_scope_all_keeps_unseen_images_until_enough_history_is_observed() -> None:
    stranger = image("x", f"{REG}/web:0")  # maybe the version before edgeprune came
    images = [stranger, *WEB]
    first = learn(gen(1), images=images)
    got = decisions(plan_for(images, steady(gen(1)), first, scope="all"))
    assert got[f"{REG}/web:0"] == (Action.KEEP, {Rule.HISTORY_INCOMPLETE})
    reason = next(
        d.reasons[0].detail
        for d in plan_for(images, steady(gen(1)), first, scope="all").decisions
        if d.image is stranger
    )
    assert "observed 0 of the 1 previous generation(s)" in reason
    later = learn(gen(1), gen(2), images=images)
    got = decisions(plan_for(images, steady(gen(2)), later, scope="all"))
    assert got[f"{REG}/web:0"] == (Action.REMOVE, {Rule.UNMANAGED})
    # under scope: managed the guard is not needed: unseen images are out of scope
    got = decisions(plan_for(images, steady(gen(1)), first))
    assert got[f"{REG}/web:0"] == (Action.KEEP, {Rule.OUT_OF_SCOPE})


def test_required_refs_cover_this_stores_apps_only() -> None:
    current = device(
        "1",
        app("a", f"{REG}/a:1"),
        app("b", f"{REG}/b:1", run_as="flightctl"),
        os_image=f"{REG}/os:1",
    )
    plan = plan_for([], steady(current), learn(current))
    assert plan.required_refs == (f"{REG}/a:1",)
    # b runs from flightctl's own store: nothing of it is protected in the agent's
    assert plan.protected_refs == (f"{REG}/a:1", f"{REG}/os:1")
    theirs = plan_for([], steady(current), learn(current), store=FLIGHTCTL)
    assert theirs.required_refs == (f"{REG}/b:1",)
    assert theirs.protected_refs == (f"{REG}/b:1",)  # the OS belongs to the agent's store


FLIGHTCTL = StoreTarget(
    "flightctl", "unix:///run/user/990/podman/podman.sock", users=frozenset({"flightctl"})
)


def test_a_reference_kept_in_one_store_does_not_protect_it_in_another() -> None:
    shared = image("shared", f"{REG}/shared:1")
    gen1 = device("1", app("a", f"{REG}/shared:1"), app("b", f"{REG}/shared:1", run_as="flightctl"))
    gen2 = device("2", app("a", f"{REG}/shared:1"))
    ledger = learn(gen1, gen2, images=[shared])
    ledger.first_seen[FLIGHTCTL.seen_key(shared.id)] = OLD  # min-age is per store

    root = decisions(plan_for([shared], steady(gen2), ledger, retain_previous=0))
    theirs = decisions(plan_for([shared], steady(gen2), ledger, retain_previous=0, store=FLIGHTCTL))

    assert root[f"{REG}/shared:1"] == (Action.KEEP, {Rule.REFERENCED})
    assert theirs[f"{REG}/shared:1"] == (Action.REMOVE, {Rule.UNREFERENCED})
    # with retention, generation 1 (which ran b in flightctl's store) keeps it there
    kept = decisions(plan_for([shared], steady(gen2), ledger, store=FLIGHTCTL))
    assert kept[f"{REG}/shared:1"] == (Action.KEEP, {Rule.RETENTION})


def test_a_schema_1_history_protects_every_store() -> None:
    shared = image("shared", f"{REG}/old:1")
    ledger = learn(
        device("1", app("b", f"{REG}/old:1", run_as="flightctl")), device("2"), images=[shared]
    )
    assert decisions(plan_for([shared], steady(device("2")), ledger))[f"{REG}/old:1"] == (
        Action.REMOVE,
        {Rule.UNREFERENCED},
    )  # schema 2 knows generation 1 ran it in flightctl's store, not here
    # what a schema-1 ledger loads as: no store per version or generation
    ledger.generations = [replace(g, stores={}) for g in ledger.generations]
    ledger.apps = {n: [replace(v, store=ANY_STORE) for v in h] for n, h in ledger.apps.items()}

    got = decisions(plan_for([shared], steady(device("2")), ledger))

    assert got[f"{REG}/old:1"] == (Action.KEEP, {Rule.RETENTION})


def artifact(name: str | None, seed: str, size: int = 7) -> Artifact:
    return Artifact(name, digest(seed), size)


def artifact_decisions(plan: Plan) -> dict[str, tuple[Action, set[Rule]]]:
    return {
        d.artifact.label: (d.action, {r.rule for r in d.reasons}) for d in plan.artifact_decisions
    }


def test_artifacts_follow_the_keep_rules_of_images() -> None:
    models = [artifact(f"{REG}/models:{n}", f"m{n}") for n in (1, 2, 3)]
    stray = artifact(f"{REG}/tool:1", "tool")
    unnamed = artifact(None, "old")
    pinned = artifact(f"{REG}/pins/keep:1", "pin")
    young = artifact(f"{REG}/young:1", "young")
    gens = [
        device(str(n), app("web", f"{REG}/web:1", volume_refs=(f"{REG}/models:{n}",)))
        for n in (1, 2, 3)
    ]
    ledger = learn(*gens)
    ledger.referenced[f"{REG}/tool:1"] = OLD
    ledger.referenced[f"{REG}/pins/keep:1"] = OLD
    ledger.referenced[f"{REG}/young:1"] = OLD
    everything = [*models, stray, unnamed, pinned, young]
    seen = [a for a in everything if a is not young]
    ledger.record_images((a.as_image().id for a in seen), OLD)

    plan = plan_for(
        [],
        steady(gens[2]),
        ledger,
        artifacts=tuple(everything),
        pinned=(f"{REG}/pins/*",),
        min_age_seconds=600.0,
    )
    got = artifact_decisions(plan)

    assert got[f"{REG}/models:3"] == (Action.KEEP, {Rule.REFERENCED})
    assert got[f"{REG}/models:2"] == (Action.KEEP, {Rule.RETENTION})
    assert got[f"{REG}/models:1"] == (Action.REMOVE, {Rule.UNREFERENCED})
    assert got[f"{REG}/tool:1"] == (Action.REMOVE, {Rule.UNREFERENCED})
    assert got[unnamed.label] == (Action.REMOVE, {Rule.DANGLING})
    assert got[f"{REG}/pins/keep:1"] == (Action.KEEP, {Rule.PINNED})
    assert got[f"{REG}/young:1"] == (Action.KEEP, {Rule.MIN_AGE})
    assert plan.required_volumes == (f"{REG}/models:3",)
    assert [d.artifact for d in plan.artifact_decisions[:3]] == [models[0], stray, unnamed]
    assert plan.removals == ()  # artifacts are never image removals


def test_an_artifact_is_kept_by_digest_and_out_of_scope_when_never_named() -> None:
    by_digest = artifact(f"{REG}/models:1", "m1")
    foreign = artifact("quay.io/other/thing:1", "other")
    current = device(
        "1", app("web", f"{REG}/web:1", volume_refs=(f"{REG}/models@{by_digest.digest}",))
    )
    ledger = learn(current)
    ledger.record_images((a.as_image().id for a in (by_digest, foreign)), OLD)

    got = artifact_decisions(plan_for([], steady(current), ledger, artifacts=(by_digest, foreign)))

    assert got[f"{REG}/models:1"] == (Action.KEEP, {Rule.REFERENCED})
    assert got["quay.io/other/thing:1"] == (Action.KEEP, {Rule.OUT_OF_SCOPE})


def test_an_image_reference_never_makes_an_artifact_in_use() -> None:
    vol = artifact(f"{REG}/vol:1", "vol")
    img = image("img", f"{REG}/img:1")
    holder = Container(id="c" * 64, names=("x",), image_id=img.id, state="created")
    ledger = Ledger(referenced={f"{REG}/vol:1": OLD, f"{REG}/img:1": OLD})
    ledger.record_images([img.id, vol.as_image().id], OLD)

    plan = plan_for([img], steady(device("1")), ledger, containers=[holder], artifacts=(vol,))

    assert artifact_decisions(plan)[f"{REG}/vol:1"] == (Action.REMOVE, {Rule.UNREFERENCED})
    assert decisions(plan)[f"{REG}/img:1"] == (Action.KEEP, {Rule.IN_USE})


def test_every_reason_is_listed_not_just_the_first() -> None:
    images = [*WEB, DB]
    holder = Container(id="d" * 64, names=("w",), image_id=WEB[2].id, state="running")
    got = decisions(
        plan_for(
            images,
            steady(gen(3)),
            learn(gen(1), gen(2), gen(3), images=images),
            containers=[holder],
            pinned=(f"{REG}/web:3",),
        )
    )
    assert got[f"{REG}/web:3"] == (Action.KEEP, {Rule.REFERENCED, Rule.IN_USE, Rule.PINNED})


def test_planner_is_fast_on_a_large_store() -> None:
    # Not a timing assertion on the machine: a sanity bound that catches an
    # accidental quadratic loop (2000 images x 2000 refs would take minutes).
    images = [image(f"i{n}", f"{REG}/app{n}:1") for n in range(2000)]
    current = device("1", *(app(f"a{n}", f"{REG}/app{n}:1") for n in range(0, 2000, 2)))
    ledger = learn(current, images=images)
    start = time.perf_counter()
    plan = plan_for(images, steady(current), ledger, scope="all", retain_previous=0)
    assert len(plan.removals) == 1000
    assert time.perf_counter() - start < 10
