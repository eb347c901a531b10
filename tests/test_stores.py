"""Per-user stores: resolution (unit) and pruning with one keep-set per store (real Podman).

Two sandboxes stand for two users' stores: the agent's (`sandbox`) and
alice's (`other_sandbox`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Device
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from controller import agentfiles
from controller.config import Config, ConfigError, load_config
from controller.ledger import ANY_STORE, Ledger, load_ledger, save_ledger
from controller.pruner import Pruner
from controller.sandbox import Sandbox
from controller.spec import AppSpec, DeviceSpec, SpecSet
from controller.stores import StoreTarget, resolve_stores, rootless_url, run_as_users

REG = "registry.example.com"
SHARED = f"{REG}/shared/tool:1"
UIDS = {"alice": 1000, "bob": 1001}


def uid_of(user: str) -> int:
    return UIDS[user]  # KeyError for anyone else, like the passwd database


# -- resolution (pure) ------------------------------------------------------------


def test_each_other_user_gets_its_configured_or_rootless_store() -> None:
    config = Config(podman_url="unix:///run/podman/podman.sock", stores=(("bob", "tcp://b:1"),))

    targets, skipped = resolve_stores(config, {"alice", "root"}, uid_of)

    assert targets == [
        StoreTarget("root", "unix:///run/podman/podman.sock", True, frozenset({"root"})),
        StoreTarget(
            "alice", "unix:///run/user/1000/podman/podman.sock", False, frozenset({"alice"})
        ),
        StoreTarget("bob", "tcp://b:1", False, frozenset({"bob"})),
    ]
    assert skipped == []
    assert rootless_url(1000) == targets[1].url


def test_the_agents_own_user_shares_the_agents_store() -> None:
    config = Config(podman_url="unix:///run/podman/podman.sock", agent_user="flightctl")

    targets, _ = resolve_stores(config, {"flightctl", "root"}, uid_of)

    assert [(t.user, t.agent, t.users) for t in targets] == [
        ("flightctl", True, frozenset({"root", "flightctl"}))
    ]
    assert targets[0].seen_key("abc") == "abc"
    assert StoreTarget("alice", "x").seen_key("abc") == "alice/abc"


def test_an_unknown_user_without_a_url_is_skipped_with_the_reason() -> None:
    targets, skipped = resolve_stores(Config(podman_url="unix:///p.sock"), {"mallory"}, uid_of)

    assert [t.user for t in targets] == ["root"]
    assert [(s.user, s.url) for s in skipped] == [("mallory", "")]
    assert "unknown user 'mallory': not in the passwd database" in skipped[0].reason


def test_users_come_from_the_specs_and_the_ledgers_history() -> None:
    def spec(name: str, *apps: AppSpec) -> DeviceSpec:
        return DeviceSpec(file=name, present=True, generation="2", apps=apps)

    current = spec("current.json", AppSpec("a", "container", run_as="alice", images=("x:1",)))
    desired = spec("desired.json", AppSpec("b", "container", images=("y:1",)))
    ledger = Ledger()
    ledger.record_specs(
        SpecSet(
            desired=desired,
            current=spec("current.json", AppSpec("c", "quadlet", run_as="bob", images=("z:1",))),
            rollback=DeviceSpec(file="rollback.json", present=False),
        ),
        1.0,
    )
    specs = SpecSet(desired, current, DeviceSpec(file="rollback.json", present=False))

    assert run_as_users(specs, ledger) == {"alice", "bob"}


def test_config_reads_stores_and_agent_user_and_refuses_a_second_url_for_the_agent(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "agent-user: flightctl\nstores:\n  alice: unix:///run/user/1000/podman/podman.sock\n"
    )
    config = load_config(path, environ={})
    assert config.agent_user == "flightctl"
    assert config.stores == (("alice", "unix:///run/user/1000/podman/podman.sock"),)

    path.write_text("agent-user: flightctl\nstores:\n  flightctl: unix:///x.sock\n")
    with pytest.raises(ConfigError, match="flightctl is the agent's own store: set its URL"):
        load_config(path, environ={})
    path.write_text("stores:\n  alice: podman.sock\n")
    with pytest.raises(ConfigError, match=r"key 'stores': user alice: expected a .*URL"):
        load_config(path, environ={})
    path.write_text("stores:\n  'bad user': unix:///x.sock\n")
    with pytest.raises(ConfigError, match="expected a user name"):
        load_config(path, environ={})


def test_a_schema_1_ledger_loads_as_every_store_and_is_saved_as_schema_2(tmp_path: Path) -> None:
    v1 = {
        "schema": 1,
        "referenced": {"q.io/a:1": 1.0},
        "apps": {"a": [{"generation": "1", "refs": ["q.io/a:1"], "images": ["q.io/a:1"]}]},
        "generations": [
            {"generation": "1", "refs": ["q.io/a:1"], "apps": ["a"], "applied_at": 1.0}
        ],
        "first_seen": {},
    }
    (tmp_path / "ledger.json").write_text(json.dumps(v1))

    ledger = load_ledger(tmp_path)

    assert ledger.apps["a"][0].store == ANY_STORE
    assert ledger.generations[0].stores == {}
    assert ledger.generations[0].refs_in({"alice"}) == ("q.io/a:1",)  # every store keeps it
    save_ledger(tmp_path, ledger)
    saved = json.loads((tmp_path / "ledger.json").read_text())
    assert saved["schema"] == 2
    assert saved["apps"]["a"][0]["store"] == "*" and saved["generations"][0]["stores"] == {}
    assert load_ledger(tmp_path) == ledger


# -- on real Podman -------------------------------------------------------------------


def spec(n: int, *, with_alice: bool) -> dict:
    apps = [agentfiles.container_app("root-app", SHARED)]
    if with_alice:
        apps.append(agentfiles.container_app("alice-app", SHARED, runAs="alice"))
    return agentfiles.device_spec(None, apps)


def names(sandbox: Sandbox) -> set[str]:
    out = sandbox.podman("images", "--format", "{{.Repository}}:{{.Tag}}").stdout
    return set(out.split())


def test_a_reference_removed_from_one_store_is_pruned_there_and_kept_in_the_other(
    device: Device, other_sandbox: Sandbox
) -> None:
    device.add_store("alice", other_sandbox)
    device.sandbox.make_image(SHARED, "tool")
    other_sandbox.make_image(SHARED, "tool")
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    pruner = Pruner(
        device.config(),
        store_factory=device.pruner()._store_factory,
        artifact_source=device.artifact_source,
        tracer_provider=provider,
    )

    reports = []
    for n, with_alice in ((1, True), (2, False), (3, False)):
        agentfiles.apply(device.spec_dir, str(n), spec(n, with_alice=with_alice))
        reports.append(pruner.run_once(trigger="test"))

    assert [r.outcome for r in reports] == ["nothing-to-prune", "nothing-to-prune", "pruned"]
    kept_by_retention = [i for i in reports[1].kept if i.store == "alice"]
    assert [i.reasons for i in kept_by_retention] == [
        (f"retention: previously applied spec (generation 1): {SHARED}",)
    ]
    last = reports[2]
    assert [(i.store, i.names) for i in last.removed] == [("alice", (SHARED,))]
    assert [(i.store, i.names) for i in last.kept] == [("root", (SHARED,))]
    assert SHARED in names(device.sandbox) and SHARED not in names(other_sandbox)
    assert [(s.user, s.url, s.status, s.images, s.removed, s.kept) for s in last.stores] == [
        ("root", device.sandbox.url, "pruned", 1, 0, 1),
        ("alice", other_sandbox.url, "pruned", 1, 1, 0),
    ]
    # the trace says which store each removal was in
    run_span = [s for s in spans.get_finished_spans() if s.name == "edgeprune.run"][-1]
    assert run_span.attributes["edgeprune.stores"] == ("root", "alice")
    removals = [
        event.attributes
        for span in spans.get_finished_spans()
        if span.context.trace_id == run_span.context.trace_id
        for event in span.events
        if event.name == "removal"
    ]
    assert [(e["store"], e["kind"], e["names"]) for e in removals] == [
        ("alice", "image", (SHARED,))
    ]


def test_an_unreachable_store_is_skipped_and_reported_while_the_other_is_pruned(
    device: Device, tmp_path: Path
) -> None:
    dead = f"unix://{tmp_path}/nobody-serves.sock"
    device.add_store("bob", dead)
    old = f"{REG}/shop/old:1"
    device.sandbox.make_image(old, "old")
    device.sandbox.make_image(SHARED, "tool")
    agentfiles.apply(
        device.spec_dir, "1", agentfiles.device_spec(None, [agentfiles.container_app("o", old)])
    )
    assert device.prune().outcome == "nothing-to-prune"
    bob_app = agentfiles.container_app("bob-app", f"{REG}/bob/app:1", runAs="bob")
    agentfiles.apply(
        device.spec_dir,
        "2",
        agentfiles.device_spec(None, [agentfiles.container_app("t", SHARED), bob_app]),
    )

    report = device.prune(retain_previous=0)

    assert report.outcome == "pruned", report.error
    assert [(i.store, i.names) for i in report.removed] == [("root", (old,))]
    assert old not in device.image_names()
    skipped = report.stores[1]
    assert (skipped.user, skipped.url, skipped.status) == ("bob", dead, "skipped")
    assert skipped.reason.startswith(f"not reached at {dead}: ")
    assert "could not reach Podman" in skipped.reason
    assert f"store bob: skipped: {skipped.reason}" in report.notes
    assert report.to_dict()["stores"][1] == {
        "user": "bob",
        "url": dead,
        "status": "skipped",
        "reason": skipped.reason,
    }


def test_an_unknown_runas_user_is_skipped_and_the_agents_store_still_runs(
    device: Device,
) -> None:
    device.sandbox.make_image(SHARED, "tool")
    ghost = agentfiles.container_app("ghost", f"{REG}/g:1", runAs="no-such-user-edgeprune")
    agentfiles.apply(
        device.spec_dir,
        "1",
        agentfiles.device_spec(None, [agentfiles.container_app("t", SHARED), ghost]),
    )

    report = device.prune()

    assert report.outcome == "nothing-to-prune", report.error
    assert [(s.user, s.status) for s in report.stores] == [
        ("root", "pruned"),
        ("no-such-user-edgeprune", "skipped"),
    ]
    assert "unknown user 'no-such-user-edgeprune'" in report.stores[1].reason


def test_one_store_reached_under_two_names_fails_the_run_and_removes_nothing(
    device: Device, tmp_path: Path
) -> None:
    alias = tmp_path / "same-store.sock"
    alias.symlink_to(device.sandbox.url.removeprefix("unix://"))
    device.add_store("alice", f"unix://{alias}")
    device.sandbox.make_image("registry.example.com/app/web:1", "web 1")
    device.sandbox.make_image("registry.example.com/app/job:1", "job 1")
    leftover = device.sandbox.make_image(None, "leftover")
    agentfiles.apply(
        device.spec_dir,
        "1",
        agentfiles.device_spec(
            None,
            [
                agentfiles.container_app("web", "registry.example.com/app/web:1"),
                agentfiles.container_app("job", "registry.example.com/app/job:1", runAs="alice"),
            ],
        ),
    )
    report = device.prune()
    assert report.outcome == "failed" and report.failed_state == "Inventory"
    assert "are one store" in (report.error or "")
    assert leftover in device.image_ids()
    assert {"registry.example.com/app/web:1", "registry.example.com/app/job:1"} <= (
        device.image_names()
    )


@pytest.mark.parametrize("twice", ["podman-url", "two users"])
def test_config_refuses_one_url_for_two_stores(tmp_path: Path, twice: str) -> None:
    config_file = tmp_path / "config.yaml"
    if twice == "podman-url":
        config_file.write_text(
            "podman-url: unix:///run/podman/podman.sock\n"
            "stores: {alice: unix:///run/podman/podman.sock}\n"
        )
    else:
        config_file.write_text("stores: {alice: unix:///run/x.sock, bob: unix:///run/x.sock}\n")
    with pytest.raises(ConfigError, match="one store cannot be pruned as two"):
        load_config(config_file, environ={})
