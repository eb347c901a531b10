"""Reading the agent's spec files: fixtures, every app type, and fail-safe errors."""

from __future__ import annotations

import base64
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from controller.spec import (
    APP_TYPES,
    AppSpec,
    DeviceSpec,
    SpecError,
    read_generations,
    read_spec_dir,
    read_spec_file,
)
from controller.specfile import MAX_SPEC_BYTES

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "flightctl"  # copied from shared/
SEED = "registry.example.com/iot/sensor-seed@sha256:" + "3" * 64
OS_12 = "registry.example.com/os/edge-rhel:9.6-r3"
OS_13 = "registry.example.com/os/edge-rhel:9.6-r4"
STEADY_REFS = frozenset(
    {
        OS_12,
        "registry.example.com/shop/web:2.4.1",
        "docker.io/library/redis:7.2",
        "registry.example.com/ml/ranker-model:2.4.1",
        "registry.example.com/iot/sensor-reader:5.2.0",
        "registry.example.com/iot/calibration:2024.11",
        SEED,
        "registry.example.com/ui/kiosk:3.0.2",
        "registry.example.com/ui/kiosk-assets:3.0.2",
        "registry.example.com/pkg/telemetry-bundle:1.8.0",
    }
)
MID_UPDATE_DESIRED_REFS = (
    STEADY_REFS
    - {OS_12, "registry.example.com/shop/web:2.4.1", "registry.example.com/ml/ranker-model:2.4.1"}
) | {OS_13, "registry.example.com/shop/web:2.5.0", "registry.example.com/ml/ranker-model:2.5.0"}


def b64(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return base64.b64encode(data).decode()


def device(apps: list[Any] | None = None, *, generation: str = "5", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = dict(spec)
    if apps is not None:
        body["applications"] = apps
    return {
        "apiVersion": "flightctl.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": "d", "annotations": {"device-controller/renderedVersion": generation}},
        "spec": body,
    }


def write(path: Path, document: Any) -> Path:
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def read_app(tmp_path: Path, app: dict[str, Any]) -> AppSpec:
    spec = read_spec_file(write(tmp_path / "current.json", device([app])), required=True)
    assert len(spec.apps) == 1
    return spec.apps[0]


def inline(path: str, content: str, *, encode: bool = False) -> dict[str, str]:
    if encode:
        return {"path": path, "content": b64(content), "contentEncoding": "base64"}
    return {"path": path, "content": content}


# --- fixtures -------------------------------------------------------------------------


def test_steady_state_fixture_references_exactly_the_readme_list() -> None:
    specs = read_spec_dir(FIXTURES / "steady-state")
    assert specs.current.refs == STEADY_REFS
    assert specs.desired.refs == STEADY_REFS
    assert specs.rollback.refs == frozenset()
    assert specs.refs == STEADY_REFS
    assert (specs.current.generation, specs.desired.generation) == ("12", "12")
    assert specs.rollback.present and specs.rollback.generation == ""


def test_steady_state_fixture_sorts_refs_by_kind_per_app() -> None:
    current = read_spec_dir(FIXTURES / "steady-state").current
    assert current.os_image == OS_12
    assert [app.name for app in current.apps] == ["shop", "sensor", "kiosk", "telemetry"]
    assert current.app("shop") == AppSpec(
        name="shop",
        app_type="compose",
        images=("docker.io/library/redis:7.2", "registry.example.com/shop/web:2.4.1"),
        volume_refs=("registry.example.com/ml/ranker-model:2.4.1",),
    )
    assert current.app("sensor") == AppSpec(
        name="sensor",
        app_type="quadlet",
        run_as="flightctl",
        images=(
            "registry.example.com/iot/calibration:2024.11",
            "registry.example.com/iot/sensor-reader:5.2.0",
            SEED,
        ),
    )
    assert current.app("kiosk") == AppSpec(
        name="kiosk",
        app_type="container",
        images=("registry.example.com/ui/kiosk:3.0.2",),
        volume_refs=("registry.example.com/ui/kiosk-assets:3.0.2",),
    )
    assert current.app("telemetry") == AppSpec(
        name="telemetry",
        app_type="compose",
        packages=("registry.example.com/pkg/telemetry-bundle:1.8.0",),
    )
    assert current.app("missing") is None


def test_mid_update_fixture() -> None:
    specs = read_spec_dir(FIXTURES / "mid-update")
    assert specs.current.refs == STEADY_REFS
    assert specs.desired.refs == MID_UPDATE_DESIRED_REFS
    assert specs.rollback.refs == {OS_12}
    assert specs.rollback.apps == ()
    assert (specs.current.generation, specs.desired.generation) == ("12", "13")
    assert specs.rollback.generation == "12"
    assert specs.refs == STEADY_REFS | MID_UPDATE_DESIRED_REFS


def test_bootstrap_fixture_is_three_empty_specs() -> None:
    specs = read_spec_dir(FIXTURES / "bootstrap")
    for spec in (specs.desired, specs.current, specs.rollback):
        assert (spec.present, spec.generation, spec.os_image, spec.apps) == (True, "0", None, ())
    assert specs.refs == frozenset()


@pytest.mark.parametrize(
    ("fixture", "expected"), [("steady-state", ("12", "12")), ("mid-update", ("12", "13"))]
)
def test_read_generations(fixture: str, expected: tuple[str, str]) -> None:
    assert read_generations(FIXTURES / fixture) == expected


# --- absent files ---------------------------------------------------------------------


def test_missing_desired_and_rollback_read_as_absent(tmp_path: Path) -> None:
    write(tmp_path / "current.json", device([], generation="7"))
    specs = read_spec_dir(tmp_path)
    assert specs.desired == DeviceSpec(file=str(tmp_path / "desired.json"), present=False)
    assert specs.rollback == DeviceSpec(file=str(tmp_path / "rollback.json"), present=False)
    assert specs.current.present and specs.current.generation == "7"
    assert read_generations(tmp_path) == ("7", "")


def test_missing_current_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "desired.json", device([]))
    for reader in (read_spec_dir, read_generations):
        with pytest.raises(SpecError) as caught:
            reader(tmp_path)
        assert caught.value.file == str(tmp_path / "current.json")
        assert caught.value.problem == "file is missing"
        assert caught.value.app is None


def test_missing_annotation_reads_as_empty_generation(tmp_path: Path) -> None:
    document = {"metadata": {}, "spec": {"os": {"image": OS_12}}}
    spec = read_spec_file(write(tmp_path / "rollback.json", document), required=False)
    assert (spec.generation, spec.os_image, spec.refs) == ("", OS_12, {OS_12})


# --- app types ------------------------------------------------------------------------


@pytest.mark.parametrize("encode", [False, True], ids=["plain", "base64"])
def test_compose_inline(tmp_path: Path, encode: bool) -> None:
    compose = "services:\n  web:\n    image: quay.io/shop/web:1.1\n  cache:\n    image: redis:7\n"
    app = read_app(
        tmp_path,
        {
            "name": "shop",
            "appType": "compose",
            "inline": [
                inline("docker-compose.yaml", compose, encode=encode),
                inline(".env", "not: [yaml", encode=encode),  # not a compose file: ignored
            ],
        },
    )
    assert app.images == ("quay.io/shop/web:1.1", "redis:7")  # sorted by spec, not appfiles
    assert (app.packages, app.charts, app.volume_refs, app.run_as) == ((), (), (), None)


def test_compose_and_quadlet_image_packages(tmp_path: Path) -> None:
    for app_type in ("compose", "quadlet"):
        app = read_app(
            tmp_path,
            {"name": "pkg", "appType": app_type, "image": "reg.io/pkg/bundle:1", "runAs": "u1"},
        )
        assert (app.packages, app.images, app.run_as) == (("reg.io/pkg/bundle:1",), (), "u1")
        assert app.refs == {"reg.io/pkg/bundle:1"}


def test_quadlet_image_indirection(tmp_path: Path) -> None:
    app = read_app(
        tmp_path,
        {
            "name": "sensor",
            "appType": "quadlet",
            "runAs": "flightctl",
            "inline": [
                inline("sensor.container", "[Container]\nImage=sensor.image\n"),
                inline("sensor.image", "[Image]\nImage=reg.io/iot/reader:5\n", encode=True),
            ],
        },
    )
    assert app.images == ("reg.io/iot/reader:5",)  # not "sensor.image"
    assert app.run_as == "flightctl"


def test_container_app_with_volumes(tmp_path: Path) -> None:
    app = read_app(
        tmp_path,
        {
            "name": "kiosk",
            "appType": "container",
            "image": "reg.io/ui/kiosk:3",
            "runAs": "kiosk",
            "ports": ["8443:443"],
            "volumes": [
                {"name": "a", "image": {"reference": "reg.io/a:1", "pullPolicy": "Always"}},
                {"name": "b", "mount": {"path": "/b"}},
                {"name": "c", "image": {"reference": "reg.io/c:1"}, "mount": {"path": "/c"}},
            ],
        },
    )
    assert app == AppSpec(
        name="kiosk",
        app_type="container",
        run_as="kiosk",
        images=("reg.io/ui/kiosk:3",),
        volume_refs=("reg.io/a:1", "reg.io/c:1"),
    )
    assert app.refs == {"reg.io/ui/kiosk:3", "reg.io/a:1", "reg.io/c:1"}


def test_helm_image_is_a_chart(tmp_path: Path) -> None:
    app = read_app(tmp_path, {"name": "h", "appType": "helm", "image": "reg.io/charts/h:1"})
    assert (app.charts, app.images, app.packages) == (("reg.io/charts/h:1",), (), ())


def test_vm_image_and_inline(tmp_path: Path) -> None:
    app = read_app(tmp_path, {"name": "v", "appType": "vm", "image": "reg.io/vm/disk:1"})
    assert app.images == ("reg.io/vm/disk:1",)
    inline_vm = read_app(
        tmp_path, {"name": "v", "appType": "vm", "inline": [inline("vm.xml", "<domain/>")]}
    )
    assert inline_vm.refs == frozenset()


def test_device_refs_union_every_app_and_the_os(tmp_path: Path) -> None:
    document = device(
        [
            {"name": "a", "appType": "container", "image": "reg.io/a:1"},
            {"name": "h", "appType": "helm", "image": "reg.io/chart:1"},
        ],
        os={"image": OS_12},
    )
    spec = read_spec_file(write(tmp_path / "desired.json", document), required=False)
    assert spec.refs == {"reg.io/a:1", "reg.io/chart:1", OS_12}
    assert sorted(APP_TYPES) == ["compose", "container", "helm", "quadlet", "vm"]


# --- errors ---------------------------------------------------------------------------


def compose_app(content: str, *, path: str = "docker-compose.yaml", **entry: str) -> dict[str, Any]:
    return {
        "name": "shop",
        "appType": "compose",
        "inline": [{"path": path, "content": content, **entry}],
    }


def quadlet_app(*files: dict[str, str]) -> dict[str, Any]:
    return {"name": "sensor", "appType": "quadlet", "inline": list(files)}


STEADY_TEXT = (FIXTURES / "steady-state" / "current.json").read_text()

# (document written to current.json, app named in the error, start of the problem)
# compose/quadlet file errors are tested in test_appfiles.py; two here check the wrapping
ERROR_CASES = {
    "truncated-json": (STEADY_TEXT[: len(STEADY_TEXT) // 2], None, "invalid JSON: "),
    "empty-file": ("", None, "file is empty"),
    "whitespace-file": ("  \n", None, "file is empty"),
    "not-utf8-json": ("\udcff", None, "invalid JSON"),
    "top-level-list": ([], None, "top level is a list, not an object"),
    "spec-missing": ({"metadata": {}}, None, "'spec' is null, not an object"),
    "spec-list": ({"spec": []}, None, "'spec' is a list, not an object"),
    "metadata-string": ({"metadata": "x", "spec": {}}, None, "'metadata' is a string, not"),
    "generation-number": (
        {"metadata": {"annotations": {"device-controller/renderedVersion": 12}}, "spec": {}},
        None,
        "metadata.annotations: 'device-controller/renderedVersion' is a number, not a string",
    ),
    "applications-object": ({"spec": {"applications": {}}}, None, "spec: 'applications' is an"),
    "os-image-list": ({"spec": {"os": {"image": ["x"]}}}, None, "spec.os: 'image' is a list"),
    "os-image-invalid": ({"spec": {"os": {"image": "OS:1"}}}, None, "spec.os.image: invalid"),
    "app-not-object": (device(["shop"]), None, "applications[0] is a string, not an object"),
    "app-without-name": (
        device([{"appType": "vm", "inline": []}]),
        None,
        "applications[0] has no string 'name' (nor 'image')",
    ),
    "app-name-number": (device([{"name": 3}]), None, "applications[0] has no string 'name'"),
    "duplicate-names": (
        device([{"name": "a", "appType": "vm", "image": "r.io/v:1"}] * 2),
        None,
        "duplicate application names ['a']",
    ),
    "unknown-app-type": (
        device([{"name": "shop", "appType": "docker", "image": "r.io/x:1"}]),
        "shop",
        "unknown appType 'docker'",
    ),
    "missing-app-type": (device([{"name": "shop", "image": "r.io/x:1"}]), "shop", "'appType' is"),
    "image-not-string": (
        device([{"name": "kiosk", "appType": "container", "image": 5}]),
        "kiosk",
        "'image' is a number, not a string",
    ),
    "container-without-image": (
        device([{"name": "kiosk", "appType": "container"}]),
        "kiosk",
        "container app has no 'image'",
    ),
    "compose-without-content": (
        device([{"name": "shop", "appType": "compose"}]),
        "shop",
        "compose app has neither 'image' nor 'inline'",
    ),
    "run-as-list": (
        device([{"name": "kiosk", "appType": "container", "image": "r.io/k:1", "runAs": []}]),
        "kiosk",
        "'runAs' is a list",
    ),
    "inline-object": (
        device([{"name": "shop", "appType": "compose", "inline": {}}]),
        "shop",
        "'inline' is an object, not a list",
    ),
    "inline-without-path": (
        device([{"name": "shop", "appType": "compose", "inline": [{"content": ""}]}]),
        "shop",
        "inline[0] has no string 'path'",
    ),
    "bad-base64": (
        device([compose_app("not base64!!", contentEncoding="base64")]),
        "shop",
        "inline file 'docker-compose.yaml': invalid base64: ",
    ),
    "unknown-encoding": (
        device([compose_app("x", contentEncoding="gzip")]),
        "shop",
        "inline file 'docker-compose.yaml': unknown contentEncoding 'gzip'",
    ),
    "compose-invalid-reference": (
        device([compose_app("services:\n  web:\n    image: Shop/Web:1\n")]),
        "shop",
        "inline file 'docker-compose.yaml': service 'web': invalid repository",
    ),
    "missing-image-file": (
        device([quadlet_app(inline("sensor.container", "[Container]\nImage=gone.image\n"))]),
        "sensor",
        "inline file 'sensor.container': Image= names 'gone.image', which is not among",
    ),
    "volume-reference-invalid": (
        device(
            [
                {
                    "name": "kiosk",
                    "appType": "container",
                    "image": "r.io/k:1",
                    "volumes": [{"name": "v", "image": {"reference": "r.io/v@sha256:xyz"}}],
                }
            ]
        ),
        "kiosk",
        "volume 'v': image.reference: invalid digest",
    ),
    "volume-reference-missing": (
        device(
            [
                {
                    "name": "kiosk",
                    "appType": "container",
                    "image": "r.io/k:1",
                    "volumes": [{"name": "v", "image": {"pullPolicy": "Always"}}],
                }
            ]
        ),
        "kiosk",
        "volume 'v': image.reference: empty or non-string image reference",
    ),
}


@pytest.mark.parametrize(("document", "app", "problem"), ERROR_CASES.values(), ids=ERROR_CASES)
def test_malformed_current_is_a_spec_error(
    tmp_path: Path, document: Any, app: str | None, problem: str
) -> None:
    path = tmp_path / "current.json"
    if isinstance(document, str):
        path.write_bytes(document.encode("utf-8", "surrogateescape"))
    else:
        write(path, document)
    with pytest.raises(SpecError) as caught:
        read_spec_file(path, required=True)
    error = caught.value
    assert (error.file, error.app) == (str(path), app)
    assert error.problem.startswith(problem), error.problem
    where = f"{path}: app '{app}': " if app else f"{path}: "
    assert str(error) == where + error.problem


def test_error_message_names_file_as_given_app_and_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "current.json", device([compose_app("services: [\n")]))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as caught:
        read_spec_file(Path("current.json"), required=True)
    assert str(caught.value).startswith(
        "current.json: app 'shop': inline file 'docker-compose.yaml': invalid YAML: "
    )
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", ["desired.json", "rollback.json"])
def test_present_but_malformed_optional_file_is_an_error(tmp_path: Path, name: str) -> None:
    write(tmp_path / "current.json", device([]))
    write(tmp_path / name, '{"spec": {')
    with pytest.raises(SpecError) as caught:
        read_spec_dir(tmp_path)
    assert caught.value.file == str(tmp_path / name)
    assert caught.value.problem.startswith("invalid JSON")


def test_unreadable_current_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "current.json").mkdir()
    with pytest.raises(SpecError) as caught:
        read_spec_file(tmp_path / "current.json", required=True)
    assert caught.value.problem == "cannot read file: not a regular file (a directory)"


def test_read_generations_rejects_malformed_files(tmp_path: Path) -> None:
    write(tmp_path / "current.json", device([], generation="3"))
    write(tmp_path / "desired.json", "{truncated")
    with pytest.raises(SpecError) as caught:
        read_generations(tmp_path)
    assert caught.value.file == str(tmp_path / "desired.json")


# --- spec.resources: Disk monitors (docs/triggers.md) ---------------------------------


def test_steady_state_fixture_has_a_disk_monitor() -> None:
    from controller.diskmon import AlertRule, DiskMonitorSpec, Severity

    current = read_spec_dir(FIXTURES / "steady-state").current
    assert current.disk_monitors == (
        DiskMonitorSpec(
            "/var/lib/containers",
            30.0,
            (
                AlertRule(Severity.WARNING, 80.0, 600.0, "disk filling"),
                AlertRule(Severity.CRITICAL, 90.0, 60.0, "disk nearly full"),
            ),
        ),
    )
    assert current.resource_problems == ()


def test_malformed_resources_are_reported_and_do_not_stop_the_read(tmp_path: Path) -> None:
    resources = [
        {"monitorType": "Disk", "path": "/var", "alertRules": [{"severity": "Critical"}]},
        {"monitorType": "Memory", "samplingInterval": "1m", "alertRules": []},
    ]
    app = {"name": "web", "appType": "container", "image": "registry.example.com/web:1"}
    path = write(tmp_path / "current.json", device([app], resources=resources))
    spec = read_spec_file(path, required=True)
    assert [a.images for a in spec.apps] == [("registry.example.com/web:1",)]  # still read
    assert spec.disk_monitors == ()
    assert spec.resource_problems == (
        "spec.resources[0].alertRules[0]: percentage must be a number from 0 to 100, got None",
    )


# --- compose variables: envVars and .env ---------------------------------------------

SHOP_COMPOSE = "services:\n  web:\n    image: reg.io/shop/web:${TAG:-1}\n"


def test_compose_env_vars_choose_the_image_the_app_runs(tmp_path: Path) -> None:
    app = read_app(
        tmp_path,
        {
            "name": "shop",
            "appType": "compose",
            "envVars": {"TAG": "2"},
            "inline": [inline("docker-compose.yaml", SHOP_COMPOSE)],
        },
    )
    assert app.images == ("reg.io/shop/web:2",)


def test_compose_inline_dotenv_is_read_and_env_vars_override_it(tmp_path: Path) -> None:
    compose = SHOP_COMPOSE + "  db:\n    image: reg.io/db:${DB_TAG}\n"
    files = [
        inline("docker-compose.yaml", compose),
        inline(".env", "TAG=3\nDB_TAG=15\n", encode=True),
    ]
    app = {"name": "shop", "appType": "compose", "inline": files}
    assert read_app(tmp_path, app).images == ("reg.io/db:15", "reg.io/shop/web:3")
    app["envVars"] = {"TAG": "4"}
    assert read_app(tmp_path, app).images == ("reg.io/db:15", "reg.io/shop/web:4")


ENV_VARS_ERRORS = {
    "value-number": ({"TAG": 2}, "envVars: 'TAG' is a number, not a string"),
    "value-null": ({"TAG": None}, "envVars: 'TAG' is null, not a string"),
    "not-a-map": (["TAG=2"], "'envVars' is a list, not an object"),
    "lone-surrogate": ({"TAG": "\udc80"}, "envVars: 'TAG' '\\udc80' is not valid Unicode"),
}


@pytest.mark.parametrize(("env_vars", "problem"), ENV_VARS_ERRORS.values(), ids=ENV_VARS_ERRORS)
def test_malformed_env_vars_are_a_spec_error_naming_the_app(
    tmp_path: Path, env_vars: Any, problem: str
) -> None:
    app = {"name": "shop", "appType": "compose", "envVars": env_vars, "inline": []}
    path = write(tmp_path / "current.json", device([app]))
    with pytest.raises(SpecError) as caught:
        read_spec_file(path, required=True)
    assert (caught.value.app, caught.value.problem) == ("shop", problem)


def test_unset_compose_variable_is_still_a_spec_error(tmp_path: Path) -> None:
    compose = "services:\n  web:\n    image: reg.io/web:${TAG}\n"
    app = {"name": "shop", "appType": "compose", "envVars": {"OTHER": "1"}}
    app["inline"] = [inline("docker-compose.yaml", compose)]
    path = write(tmp_path / "current.json", device([app]))
    with pytest.raises(SpecError) as caught:
        read_spec_file(path, required=True)
    assert caught.value.app == "shop"
    assert caught.value.problem == (
        "inline file 'docker-compose.yaml': service 'web': cannot resolve variable:"
        " variable TAG is not set (in .env or envVars) in 'reg.io/web:${TAG}'"
    )


def test_quadlet_type_wide_drop_in_is_kept(tmp_path: Path) -> None:
    app = quadlet_app(
        inline("sensor.container", "[Container]\nImage=reg.io/iot/reader:5\n"),
        inline("container.d/10-hotfix.conf", "[Container]\nImage=reg.io/iot/reader:5.0.1\n"),
    )
    assert read_app(tmp_path, app).images == ("reg.io/iot/reader:5", "reg.io/iot/reader:5.0.1")


# --- special and oversized files -----------------------------------------------------


def read_with_deadline(path: Path, seconds: float = 5.0) -> BaseException | None:
    """What reading `path` raises, failing (not hanging) the test if it blocks."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            read_spec_file(path, required=False)
            outcome.append(None)
        except BaseException as error:  # handed to the test thread
            outcome.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"reading {path} blocked for {seconds} s"
    return outcome[0]


def test_fifo_spec_file_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "desired.json")
    error = read_with_deadline(tmp_path / "desired.json")
    assert isinstance(error, SpecError)
    assert error.problem == "cannot read file: not a regular file (a FIFO)"


def test_symlink_to_dev_zero_is_refused_unread(tmp_path: Path) -> None:
    (tmp_path / "desired.json").symlink_to("/dev/zero")
    error = read_with_deadline(tmp_path / "desired.json")
    assert isinstance(error, SpecError)
    assert str(error) == (
        f"{tmp_path / 'desired.json'}: cannot read file: not a regular file (a character device)"
    )


def test_symlink_to_a_regular_spec_is_followed(tmp_path: Path) -> None:
    target = write(tmp_path / "real.json", device([], generation="9"))
    (tmp_path / "current.json").symlink_to(target)
    assert read_generations(tmp_path) == ("9", "")


def test_oversized_spec_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "current.json"
    with path.open("wb") as file:  # sparse: no 16 MiB written
        file.truncate(MAX_SPEC_BYTES + 1)
    with pytest.raises(SpecError) as caught:
        read_spec_file(path, required=True)
    assert caught.value.problem == (
        f"file is {MAX_SPEC_BYTES + 1} bytes, more than the {MAX_SPEC_BYTES} a spec may have"
    )


def test_deeply_nested_json_is_a_spec_error_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "current.json", "[" * 200_000 + "]" * 200_000)
    with pytest.raises(SpecError) as caught:
        read_spec_file(path, required=True)
    assert str(caught.value) == f"{path}: JSON too deep or too large to read (RecursionError)"


def test_memory_error_while_parsing_is_a_spec_error_naming_the_file(
    tmp_path: Path, mocker: Any
) -> None:
    path = write(tmp_path / "current.json", device([]))
    mocker.patch("controller.specfile.json.loads", side_effect=MemoryError())
    with pytest.raises(SpecError) as caught:
        read_spec_file(path, required=True)
    assert str(caught.value) == f"{path}: JSON too deep or too large to read (MemoryError)"


# --- current.json generation ---------------------------------------------------------

NO_GENERATION = {
    "annotation-missing": {"metadata": {"annotations": {}}, "spec": {}},
    "metadata-missing": {"spec": {}},
    "annotation-empty": device([], generation=""),
}


@pytest.mark.parametrize("document", NO_GENERATION.values(), ids=NO_GENERATION)
def test_current_without_generation_is_a_spec_error(tmp_path: Path, document: Any) -> None:
    write(tmp_path / "current.json", document)
    problem = "current.json has no renderedVersion: edgeprune cannot tell versions apart"
    for reader in (read_spec_dir, read_generations):
        with pytest.raises(SpecError) as caught:
            reader(tmp_path)
        assert (caught.value.file, caught.value.problem) == (
            str(tmp_path / "current.json"),
            problem,
        )


def test_desired_and_rollback_may_have_an_empty_generation(tmp_path: Path) -> None:
    write(tmp_path / "current.json", device([], generation="4"))
    write(tmp_path / "desired.json", device([], generation=""))
    write(tmp_path / "rollback.json", {"metadata": {"annotations": {}}, "spec": {}})
    specs = read_spec_dir(tmp_path)
    assert (specs.current.generation, specs.desired.generation) == ("4", "")
    assert (specs.rollback.present, specs.rollback.generation) == (True, "")


# --- app names -----------------------------------------------------------------------


def test_image_app_without_name_is_named_after_its_image(tmp_path: Path) -> None:
    kiosk = read_app(tmp_path, {"appType": "container", "image": "reg.io/ui/kiosk:3"})
    assert (kiosk.name, kiosk.images) == ("reg.io/ui/kiosk:3", ("reg.io/ui/kiosk:3",))
    package = read_app(tmp_path, {"name": "", "appType": "compose", "image": "reg.io/pkg:1"})
    assert (package.name, package.packages) == ("reg.io/pkg:1", ("reg.io/pkg:1",))


def test_inline_app_without_name_stays_an_error(tmp_path: Path) -> None:
    app = {"appType": "compose", "inline": [inline("docker-compose.yaml", SHOP_COMPOSE)]}
    path = write(tmp_path / "current.json", device([app]))
    with pytest.raises(SpecError) as caught:
        read_spec_file(path, required=True)
    assert caught.value.problem == "applications[0] has no string 'name' (nor 'image')"


LONE_SURROGATES = {
    "app-name": (
        {"name": "web\udc80", "appType": "container", "image": "reg.io/w:1"},
        None,
        "applications[0] 'name' 'web\\udc80' is not valid Unicode",
    ),
    "image": (
        {"name": "web", "appType": "container", "image": "reg.io/w\udc80:1"},
        "web",
        "'image' 'reg.io/w\\udc80:1' is not valid Unicode",
    ),
    "inline-path": (
        {"name": "shop", "appType": "compose", "inline": [{"path": "\ud800.yaml", "content": ""}]},
        "shop",
        "inline[0] path '\\ud800.yaml' is not valid Unicode",
    ),
    "volume-name": (
        {"name": "k", "appType": "container", "image": "r.io/k:1", "volumes": [{"name": "\udfff"}]},
        "k",
        "volumes[0] name '\\udfff' is not valid Unicode",
    ),
}


@pytest.mark.parametrize(("app", "named", "problem"), LONE_SURROGATES.values(), ids=LONE_SURROGATES)
def test_lone_surrogates_are_rejected_with_a_printable_message(
    tmp_path: Path, app: dict[str, Any], named: str | None, problem: str
) -> None:
    path = write(tmp_path / "current.json", device([app]))  # json.dumps escapes as \\udc80
    assert "\\ud" in path.read_text()
    with pytest.raises(SpecError) as caught:
        read_spec_file(path, required=True)
    assert (caught.value.app, caught.value.problem) == (named, problem)
    str(caught.value).encode("utf-8")  # printing the error cannot fail
