from __future__ import annotations

import copy
import json
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from pytest_mock import MockerFixture

from controller import ledger as ledger_module
from controller.ledger import (
    LEDGER_FILE,
    PREVIOUS_SUFFIX,
    SCHEMA_VERSION,
    AppliedGeneration,
    AppVersion,
    Ledger,
    LedgerError,
    load_ledger,
    save_ledger,
)
from controller.references import ReferenceError, parse_reference
from controller.spec import AppSpec, DeviceSpec, SpecSet

REG = "registry.example.com"
OS_1 = f"{REG}/os/edge:9.6-r1"


def app(name: str, *images: str, volumes: tuple[str, ...] = ()) -> AppSpec:
    return AppSpec(
        name=name,
        app_type="compose",
        run_as=None,
        images=images,
        volume_refs=volumes,
        packages=(),
        charts=(),
    )


def device(
    generation: str,
    *apps: AppSpec,
    os_image: str | None = OS_1,
    present: bool = True,
    file: str = "current.json",
) -> DeviceSpec:
    return DeviceSpec(
        file=file, present=present, generation=generation, os_image=os_image, apps=apps
    )


def empty(file: str) -> DeviceSpec:
    return device("", os_image=None, file=file)


def spec_set(
    current: DeviceSpec, desired: DeviceSpec | None = None, rollback: DeviceSpec | None = None
) -> SpecSet:
    return SpecSet(
        desired=desired or current,
        current=current,
        rollback=rollback or empty("rollback.json"),
    )


def populated() -> Ledger:
    return Ledger(
        referenced={f"{REG}/web:1": 10.0, "docker.io/library/redis:7.2": 11.5},
        apps={
            "web": [AppVersion("1", (f"{REG}/web:1",)), AppVersion("2", (f"{REG}/web:2",))],
            "db": [AppVersion("1", ("docker.io/library/redis:7.2",))],
        },
        generations=[
            AppliedGeneration("1", (f"{REG}/web:1",), ("web", "db"), 100.0),
            AppliedGeneration("2", (f"{REG}/web:2",), ("web", "db"), 200.25),
        ],
        first_seen={"a" * 64: 1.0, "b" * 64: 2.5},
    )


def ledger_path(state_dir: Path) -> Path:
    return state_dir / LEDGER_FILE


def prev_path(state_dir: Path) -> Path:
    return state_dir / (LEDGER_FILE + PREVIOUS_SUFFIX)


# --- persistence --------------------------------------------------------------------


def test_absent_ledger_is_empty(tmp_path: Path) -> None:
    assert load_ledger(tmp_path / "state") == Ledger()


def test_round_trip(tmp_path: Path) -> None:
    state_dir = tmp_path / "var" / "lib" / "edgeprune"
    original = populated()
    save_ledger(state_dir, original)
    assert load_ledger(state_dir) == original


def test_saved_file_is_private_compact_sorted_json(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    save_ledger(state_dir, populated())
    text = ledger_path(state_dir).read_text()
    document = json.loads(text)
    assert document["schema"] == SCHEMA_VERSION
    assert text == json.dumps(document, sort_keys=True, separators=(",", ":")) + "\n"
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(ledger_path(state_dir).stat().st_mode) == 0o600
    assert sorted(p.name for p in state_dir.iterdir()) == [LEDGER_FILE]  # no temp left


def test_save_keeps_the_previous_content_as_prev(tmp_path: Path) -> None:
    first = populated()
    save_ledger(tmp_path, first)
    first_bytes = ledger_path(tmp_path).read_bytes()

    second = copy.deepcopy(first)
    second.first_seen["c" * 64] = 3.0
    save_ledger(tmp_path, second)

    assert prev_path(tmp_path).read_bytes() == first_bytes
    assert load_ledger(tmp_path) == second
    assert sorted(p.name for p in tmp_path.iterdir()) == [LEDGER_FILE, LEDGER_FILE + ".prev"]


def test_prev_copy_without_hard_links(tmp_path: Path, mocker: MockerFixture) -> None:
    save_ledger(tmp_path, populated())
    first_bytes = ledger_path(tmp_path).read_bytes()
    mocker.patch("controller.ledger.os.link", side_effect=OSError("links not supported"))
    save_ledger(tmp_path, Ledger())
    assert prev_path(tmp_path).read_bytes() == first_bytes
    assert load_ledger(tmp_path) == Ledger()


class Killed(BaseException):
    """Stands for SIGKILL: no ``except`` clause in the code under test may swallow it."""


def fail_on_call(real: Callable[..., object], n: int) -> Callable[..., object]:
    calls = 0

    def wrapper(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == n:
            raise Killed
        return real(*args, **kwargs)

    return wrapper


# (what to break, on which call) -> whether the interrupted save already took effect
KILL_POINTS = [
    pytest.param("controller.ledger.os.fsync", 1, False, id="fsync-of-temp-file"),
    pytest.param("controller.ledger.os.link", 1, False, id="link-to-prev-staging"),
    pytest.param("controller.ledger.os.replace", 1, False, id="replace-of-prev"),
    pytest.param("controller.ledger.os.replace", 2, False, id="replace-of-ledger"),
    pytest.param("controller.ledger._fsync_directory", 1, True, id="fsync-of-directory"),
]


@pytest.mark.parametrize(("target", "call", "took_effect"), KILL_POINTS)
def test_kill_during_save_leaves_a_loadable_ledger(
    tmp_path: Path, mocker: MockerFixture, target: str, call: int, took_effect: bool
) -> None:
    old = populated()
    save_ledger(tmp_path, old)
    save_ledger(tmp_path, old)  # so a .prev exists too
    new = copy.deepcopy(old)
    new.referenced[f"{REG}/web:3"] = 300.0

    module_name, _, attribute = target.rpartition(".")
    owner = ledger_module if module_name == "controller.ledger" else os
    mocker.patch(target, side_effect=fail_on_call(getattr(owner, attribute), call))
    with pytest.raises(Killed):
        save_ledger(tmp_path, new)
    mocker.stopall()

    assert load_ledger(tmp_path) == (new if took_effect else old)
    assert json.loads(prev_path(tmp_path).read_bytes())["schema"] == SCHEMA_VERSION

    # the next run converges: leftovers do not disturb the next save
    newest = copy.deepcopy(new)
    newest.first_seen["d" * 64] = 4.0
    save_ledger(tmp_path, newest)
    assert load_ledger(tmp_path) == newest
    assert sorted(p.name for p in tmp_path.iterdir()) == [LEDGER_FILE, LEDGER_FILE + ".prev"]


def test_kill_during_the_very_first_save_leaves_an_empty_ledger(
    tmp_path: Path, mocker: MockerFixture
) -> None:
    mocker.patch("controller.ledger.os.replace", side_effect=Killed)
    with pytest.raises(Killed):
        save_ledger(tmp_path, populated())
    mocker.stopall()
    assert not ledger_path(tmp_path).exists()
    assert load_ledger(tmp_path) == Ledger()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"schema": 1, "referenced": {', "corrupt ledger, not JSON"),
        (b"\xff\xfe garbage", "corrupt ledger, not JSON"),
        (b"", "corrupt ledger, not JSON"),
        (b"[]", "the top level is not an object"),
        (b'{"referenced": {}}', "unknown schema version None"),
        (b'{"schema": 3}', "unknown schema version 3"),
        (b'{"schema": "1"}', "unknown schema version '1'"),
        (b'{"schema": true}', "unknown schema version True"),
        (b'{"schema": 1, "referenced": {}}', "missing apps, generations, first_seen"),
    ],
)
def test_unreadable_ledger_raises_naming_file_and_recovery(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    ledger_path(tmp_path).write_bytes(content)
    with pytest.raises(LedgerError) as caught:
        load_ledger(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{ledger_path(tmp_path)}: ")
    assert problem in message
    assert f"copy {prev_path(tmp_path)} over it" in message
    assert f"delete {ledger_path(tmp_path)} to start fresh" in message
    assert "forgets earlier application versions" in message


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda d: d.update(referenced=[]), "referenced is not an object"),
        (lambda d: d["referenced"].update(x="soon"), "referenced['x'] is not a time"),
        (lambda d: d["first_seen"].update(x=True), "first_seen['x'] is not a time"),
        (lambda d: d.update(apps={"web": {}}), "apps['web'] is not a list"),
        (lambda d: d["apps"]["web"][0].update(refs="x"), "apps['web'][0].refs is not a list"),
        (lambda d: d["apps"]["web"][1].update(refs=[1]), "apps['web'][1].refs[0] is not a str"),
        (lambda d: d["apps"]["db"][0].pop("generation"), "apps['db'][0].generation is not"),
        (lambda d: d.update(generations={}), "generations is not a list"),
        (lambda d: d["generations"].append(7), "generations[2] is not an object"),
        (lambda d: d["generations"][0].update(apps=None), "generations[0].apps is not a list"),
        (lambda d: d["generations"][1].update(applied_at="x"), "generations[1].applied_at"),
        (lambda d: d["generations"][0].update(generation=1), "generations[0].generation"),
    ],
)
def test_wrong_types_raise_naming_file_and_place(
    tmp_path: Path, mutate: Callable[[dict], object], problem: str
) -> None:
    save_ledger(tmp_path, populated())
    document = json.loads(ledger_path(tmp_path).read_text())
    mutate(document)
    ledger_path(tmp_path).write_text(json.dumps(document))
    with pytest.raises(LedgerError) as caught:
        load_ledger(tmp_path)
    assert str(caught.value).startswith(f"{ledger_path(tmp_path)}: unusable ledger: ")
    assert problem in str(caught.value)


def test_missing_ledger_falls_back_to_prev_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    save_ledger(tmp_path, populated())
    save_ledger(tmp_path, Ledger())
    ledger_path(tmp_path).unlink()
    with caplog.at_level(logging.WARNING, logger="controller.ledger"):
        assert load_ledger(tmp_path) == populated()
    assert str(prev_path(tmp_path)) in caplog.text


def test_corrupt_prev_used_as_fallback_raises_naming_prev(tmp_path: Path) -> None:
    prev_path(tmp_path).write_text("{nope")
    with pytest.raises(LedgerError) as caught:
        load_ledger(tmp_path)
    assert str(caught.value).startswith(f"{prev_path(tmp_path)}: corrupt ledger")
    assert f"delete {prev_path(tmp_path)} to start fresh" in str(caught.value)


def test_corrupt_ledger_does_not_silently_fall_back_to_prev(tmp_path: Path) -> None:
    """Fail safe: a corrupt ledger stops the run even when a .prev exists."""
    save_ledger(tmp_path, populated())
    save_ledger(tmp_path, populated())
    ledger_path(tmp_path).write_text("{truncated")
    with pytest.raises(LedgerError):
        load_ledger(tmp_path)


# --- learning from the specs -----------------------------------------------------------

# the same redis image written two ways: one canonical ref, so db did not change in 2
GEN_1 = device(
    "1", app("web", f"{REG}/web:1"), app("db", "docker.io/redis:7.2", f"{REG}/db-seed:1")
)
GEN_2 = device(
    "2", app("web", f"{REG}/web:2"), app("db", f"{REG}/db-seed:1", "docker.io/library/redis:7.2")
)
GEN_3 = device(
    "3",
    app("web", f"{REG}/web:3", volumes=(f"{REG}/models/ranker:3",)),
    app("cache", f"{REG}/cache:1"),
    os_image=f"{REG}/os/edge:9.6-r2",
)
REDIS = "docker.io/library/redis:7.2"


def learned(*generations: DeviceSpec) -> Ledger:
    ledger = Ledger()
    for now, current in enumerate(generations, start=1):
        ledger.record_specs(spec_set(current), float(now * 100))
    return ledger


def test_history_across_generations() -> None:
    ledger = learned(GEN_1, GEN_2, GEN_3)

    assert [g.generation for g in ledger.generations] == ["1", "2", "3"]
    assert ledger.generations[0] == AppliedGeneration(
        generation="1",
        refs=tuple(sorted((f"{REG}/web:1", REDIS, f"{REG}/db-seed:1", OS_1))),
        apps=("web", "db"),
        applied_at=100.0,
        stores={"root": tuple(sorted((f"{REG}/web:1", REDIS, f"{REG}/db-seed:1", OS_1)))},
    )
    assert ledger.generations[2].refs == tuple(
        sorted(
            (f"{REG}/web:3", f"{REG}/models/ranker:3", f"{REG}/cache:1", f"{REG}/os/edge:9.6-r2")
        )
    )

    # web changed every generation; a volume ref is part of the version
    # (its runnable images are recorded apart: a rollback must find those in the store)
    assert ledger.app_versions("web", 1) == [
        AppVersion(
            "3", tuple(sorted((f"{REG}/web:3", f"{REG}/models/ranker:3"))), images=(f"{REG}/web:3",)
        ),
        AppVersion("2", (f"{REG}/web:2",), images=(f"{REG}/web:2",)),
    ]
    assert [v.generation for v in ledger.app_versions("web", 5)] == ["3", "2", "1"]
    assert [v.generation for v in ledger.app_versions("web", 0)] == ["3"]
    # db's refs were the same in 1 and 2 (other spelling and order): one version, not two
    db_refs = tuple(sorted((REDIS, f"{REG}/db-seed:1")))
    assert ledger.apps["db"] == [AppVersion("1", db_refs, images=db_refs)]
    # db was removed in 3: its history stays; generation 2 still holds its images
    assert ledger.app_versions("db", 1) == ledger.apps["db"]
    assert "db" in ledger.previous_generations(1)[0].apps
    assert ledger.app_versions("cache", 1) == [
        AppVersion("3", (f"{REG}/cache:1",), images=(f"{REG}/cache:1",))
    ]
    assert ledger.app_versions("unknown", 1) == []

    assert [g.generation for g in ledger.previous_generations(1)] == ["2"]
    assert [g.generation for g in ledger.previous_generations(5)] == ["2", "1"]
    assert ledger.previous_generations(0) == []


def test_re_recording_the_same_generation_is_a_no_op() -> None:
    ledger = learned(GEN_1, GEN_2, GEN_3)
    before = copy.deepcopy(ledger)
    assert ledger.record_specs(spec_set(GEN_3), 999.0) is False
    assert ledger == before


def test_same_generation_with_a_new_desired_ref_only_adds_it_to_referenced() -> None:
    ledger = learned(GEN_1)
    desired = device("2", app("web", f"{REG}/web:2"), file="desired.json")
    rollback = device("", os_image=OS_1, file="rollback.json")  # mid-update: OS image only
    assert ledger.record_specs(spec_set(GEN_1, desired, rollback), 150.0) is True
    assert ledger.referenced[f"{REG}/web:2"] == 150.0
    assert [g.generation for g in ledger.generations] == ["1"]
    assert len(ledger.apps["web"]) == 1


def test_referenced_keeps_the_first_time_and_canonical_forms() -> None:
    ledger = learned(GEN_1, GEN_2)
    assert ledger.referenced[REDIS] == 100.0  # first referenced in generation 1
    assert ledger.referenced[f"{REG}/web:2"] == 200.0
    assert "docker.io/redis:7.2" not in ledger.referenced
    assert set(ledger.referenced) == {
        f"{REG}/web:1",
        f"{REG}/web:2",
        REDIS,
        f"{REG}/db-seed:1",
        OS_1,
    }


def test_refs_are_normalised_but_short_names_stay_short() -> None:
    digest = "sha256:" + "3" * 64
    ledger = Ledger()
    current = device(
        "1",
        app("a", "docker.io/redis:7.2", f"index.docker.io/library/nginx@{digest}"),
        app("b", "myapp:1.0", f"seed@{digest}"),
        os_image=None,
    )
    ledger.record_specs(spec_set(current), 1.0)
    assert ledger.apps["a"][0].refs == (f"docker.io/library/nginx@{digest}", REDIS)
    # a short name may resolve through any search registry: qualifying it would narrow it
    assert ledger.apps["b"][0].refs == ("docker.io/library/seed@" + digest, "myapp:1.0")


def test_unparseable_ref_is_kept_verbatim() -> None:
    raw = f"{REG}/Web:1"
    with pytest.raises(ReferenceError):
        parse_reference(raw)
    ledger = Ledger()
    ledger.record_specs(spec_set(device("1", app("web", raw))), 1.0)
    assert raw in ledger.referenced
    assert ledger.apps["web"][0].refs == (raw,)


def test_absent_or_generationless_current_records_no_generation() -> None:
    ledger = Ledger()
    absent = device("", app("web", f"{REG}/web:1"), present=False)
    assert ledger.record_specs(spec_set(absent), 1.0) is True  # the ref is still learned
    no_generation = device("", app("web", f"{REG}/web:1"))
    assert ledger.record_specs(spec_set(no_generation), 2.0) is False
    assert ledger.generations == []
    assert ledger.apps == {}


def test_bootstrap_generation_zero_is_recorded_empty() -> None:
    ledger = Ledger()
    bootstrap = device("0", os_image=None)
    assert ledger.record_specs(spec_set(bootstrap), 1.0) is True
    assert ledger.generations == [AppliedGeneration("0", (), (), 1.0)]
    ledger.record_specs(spec_set(GEN_1), 2.0)
    assert [g.generation for g in ledger.previous_generations(1)] == ["0"]


def test_app_returning_to_an_older_version_is_a_new_entry() -> None:
    ledger = learned(GEN_1, GEN_2, device("3", app("web", f"{REG}/web:1")))
    assert [v.refs for v in ledger.apps["web"]] == [
        (f"{REG}/web:1",),
        (f"{REG}/web:2",),
        (f"{REG}/web:1",),
    ]
    # a removed app re-added later continues its history
    ledger = learned(GEN_1, GEN_3, device("4", app("db", f"{REG}/db-seed:2")))
    assert [v.generation for v in ledger.app_versions("db", 1)] == ["4", "1"]


def test_history_survives_a_save_and_load(tmp_path: Path) -> None:
    save_ledger(tmp_path, learned(GEN_1, GEN_2))
    ledger = load_ledger(tmp_path)
    assert ledger.record_specs(spec_set(GEN_2), 500.0) is False
    ledger.record_specs(spec_set(GEN_3), 600.0)
    assert [v.generation for v in ledger.app_versions("web", 2)] == ["3", "2", "1"]


# --- trimming ----------------------------------------------------------------------------


def many_generations(count: int) -> Ledger:
    ledger = Ledger()
    for n in range(1, count + 1):
        apps = [app("web", f"{REG}/web:{n}")]
        if n <= 3:
            apps.append(app("old", f"{REG}/old:{n}"))
        ledger.record_specs(spec_set(device(str(n), *apps)), float(n))
    return ledger


def test_trim_keeps_a_generous_floor_of_the_newest_entries() -> None:
    ledger = many_generations(40)
    ledger.trim(keep=2)
    assert [g.generation for g in ledger.generations] == [str(n) for n in range(25, 41)]
    assert [v.generation for v in ledger.apps["web"]] == [str(n) for n in range(25, 41)]
    # "old" is in no retained generation: nothing can roll back to it any more
    assert "old" not in ledger.apps


def test_trim_keeps_more_when_asked() -> None:
    ledger = many_generations(40)
    ledger.trim(keep=30)
    assert len(ledger.generations) == 30
    assert len(ledger.apps["web"]) == 30
    assert ledger.previous_generations(1)[0].generation == "39"


def test_trim_keeps_apps_of_retained_generations() -> None:
    ledger = many_generations(10)
    ledger.trim(keep=2)
    assert len(ledger.generations) == 10
    assert [v.generation for v in ledger.apps["old"]] == ["1", "2", "3"]


# --- first seen -----------------------------------------------------------------------------


def test_record_images_adds_new_ids_and_forgets_gone_ones() -> None:
    a, b, c = "a" * 64, "b" * 64, "c" * 64
    ledger = Ledger()
    ledger.record_images([a, b], 10.0)
    assert ledger.first_seen == {a: 10.0, b: 10.0}

    ledger.record_images(iter([b, c]), 20.0)  # any iterable, consumed once
    assert ledger.first_seen == {b: 10.0, c: 20.0}  # b keeps its first time

    ledger.record_images([a, b, c], 30.0)  # a was removed and pulled again: the clock restarts
    assert ledger.first_seen == {a: 30.0, b: 10.0, c: 20.0}

    ledger.record_images([], 40.0)
    assert ledger.first_seen == {}


def test_same_generation_with_new_content_widens_the_record_not_the_window() -> None:
    ledger = learned(GEN_1, GEN_2)
    # generation "2" seen again with an extra image (e.g. a package now read)
    wider = device(
        "2",
        app("web", f"{REG}/web:2", f"{REG}/web-sidecar:2"),
        app("db", f"{REG}/db-seed:1", REDIS),
    )
    assert ledger.record_specs(spec_set(wider), 300.0) is True
    assert [g.generation for g in ledger.generations] == ["1", "2"]  # window unchanged
    assert f"{REG}/web-sidecar:2" in ledger.generations[-1].refs
    assert f"{REG}/web:2" in ledger.generations[-1].refs
    web = ledger.app_versions("web", 1)
    assert [v.generation for v in web] == ["2", "1"]
    assert set(web[0].images) == {f"{REG}/web:2", f"{REG}/web-sidecar:2"}
    # ... and generation 1 is still the previous one
    assert ledger.previous_generations(1)[0].generation == "1"
    assert ledger.record_specs(spec_set(wider), 400.0) is False  # nothing new the 2nd time


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_ledger_that_is_not_a_regular_file_is_refused_without_blocking(
    tmp_path: Path, kind: str
) -> None:
    import os

    path = tmp_path / LEDGER_FILE
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    with pytest.raises(LedgerError, match="not a regular file"):
        load_ledger(tmp_path)


def test_a_first_seen_time_in_the_future_is_reset_to_now() -> None:
    ledger = Ledger()
    ledger.record_images(["a", "b"], 1_000.0)
    ledger.record_images(["a", "b"], 500.0)  # the clock jumped back
    assert ledger.first_seen == {"a": 500.0, "b": 500.0}
    ledger.record_images(["a", "b"], 900.0)  # and stays where it was restarted
    assert ledger.first_seen == {"a": 500.0, "b": 500.0}


def _mid_update(current: DeviceSpec, desired: DeviceSpec) -> SpecSet:
    return SpecSet(
        desired=replace(desired, file="desired.json"),
        current=current,
        rollback=empty("rollback.json"),
    )


def test_a_generation_seen_only_as_desired_joins_the_previous_record_when_skipped() -> None:
    ledger = learned(GEN_1)
    ledger.record_specs(_mid_update(GEN_1, GEN_2), 150.0)  # update to 2 in progress
    assert ledger.pending is not None and ledger.pending.generation == "2"
    ledger.record_specs(spec_set(GEN_3), 300.0)  # 2 applied and replaced between runs
    assert [g.generation for g in ledger.generations] == ["1", "3"]
    previous = ledger.previous_generations(1)[0]
    assert f"{REG}/web:2" in previous.refs and f"{REG}/web:1" in previous.refs
    assert ledger.pending is None


def test_a_pending_generation_that_was_rolled_back_is_dropped() -> None:
    ledger = learned(GEN_1)
    ledger.record_specs(_mid_update(GEN_1, GEN_2), 150.0)
    assert ledger.record_specs(spec_set(GEN_1), 200.0) is True  # the agent rolled back
    assert ledger.pending is None
    ledger.record_specs(spec_set(GEN_3), 300.0)
    assert f"{REG}/web:2" not in ledger.previous_generations(1)[0].refs


def test_pending_survives_a_save_and_load(tmp_path: Path) -> None:
    ledger = learned(GEN_1)
    ledger.record_specs(_mid_update(GEN_1, GEN_2), 150.0)
    save_ledger(tmp_path, ledger)
    assert load_ledger(tmp_path).pending == ledger.pending
