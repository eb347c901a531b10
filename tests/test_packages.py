"""Image packages: their compose/quadlet files are read and their images kept."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from conftest import Device

from controller import agentfiles
from controller.packages import package_files

REG = "registry.example.com"
PKG = f"{REG}/pkg/telemetry-bundle"
COLLECTOR = f"{REG}/telemetry/collector"
EXPORTER = f"{REG}/telemetry/exporter"


def _tar(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_layers_are_replayed_with_whiteouts_and_only_root_files_kept() -> None:
    layer1 = _tar(
        {
            "docker-compose.yaml": b"old",
            "gone.yaml": b"x",
            "etc/other.yaml": b"y",
            "app.container.d/10.conf": b"[Container]\n",
        }
    )
    layer2 = _tar({"./docker-compose.yaml": b"new", ".wh.gone.yaml": b""})
    archive = _tar(
        {
            "manifest.json": json.dumps([{"Layers": ["l1.tar", "l2.tar"]}]).encode(),
            "l1.tar": layer1,
            "l2.tar": layer2,
        }
    )
    assert package_files(archive) == {
        "docker-compose.yaml": b"new",
        "app.container.d/10.conf": b"[Container]\n",
    }


def build_package(device: Device, tmp_path: Path, tag: str, compose: str) -> None:
    context = tmp_path / f"pkg-{tag}"
    context.mkdir()
    (context / "docker-compose.yaml").write_text(compose)
    (context / "Containerfile").write_text("FROM scratch\nCOPY docker-compose.yaml /\n")
    device.sandbox.podman("build", "--pull=never", "-q", "-t", f"{PKG}:{tag}", str(context))


def package_app(tag: str) -> dict:
    return {"name": "telemetry", "appType": "compose", "image": f"{PKG}:{tag}"}


COMPOSE = f"services:\n  c:\n    image: {COLLECTOR}:1\n  e:\n    image: {EXPORTER}:1\n"


def test_package_inner_images_are_kept_and_remembered_after_the_package_is_gone(
    device: Device, tmp_path: Path
) -> None:
    build_package(device, tmp_path, "1.0", COMPOSE)
    for ref in (f"{COLLECTOR}:1", f"{EXPORTER}:1"):
        device.sandbox.make_image(ref, ref)
    leftover = device.sandbox.make_image(None, "leftover")
    agentfiles.apply(device.spec_dir, "1", agentfiles.device_spec(None, [package_app("1.0")]))
    report = device.prune(scope="all")
    assert report.outcome == "pruned", report.error
    assert [i.id for i in report.removed] == [leftover]  # the package was read: no guard
    kept = {n: i.reasons for i in report.kept for n in i.names}
    assert any("app 'telemetry'" in r for r in kept[f"{COLLECTOR}:1"])
    assert any("app 'telemetry'" in r for r in kept[f"{EXPORTER}:1"])

    device.sandbox.podman("rmi", f"{PKG}:1.0")  # the package image removed by hand
    report = device.prune(scope="all")
    assert report.outcome in ("pruned", "nothing-to-prune"), report.error
    assert {f"{COLLECTOR}:1", f"{EXPORTER}:1"} <= device.image_names()
    assert not any("unread" in n for n in report.notes)


def test_package_update_keeps_the_previous_versions_inner_images(
    device: Device, tmp_path: Path
) -> None:
    for n in (1, 2, 3):
        build_package(device, tmp_path, f"{n}.0", f"services:\n  c:\n    image: {COLLECTOR}:{n}\n")
        device.sandbox.make_image(f"{COLLECTOR}:{n}", f"collector {n}")
        agentfiles.apply(
            device.spec_dir, str(n), agentfiles.device_spec(None, [package_app(f"{n}.0")])
        )
        report = device.prune()
        assert report.outcome in ("pruned", "nothing-to-prune"), report.error
    names = device.image_names()
    assert f"{COLLECTOR}:1" not in names and f"{PKG}:1.0" not in names
    assert {f"{COLLECTOR}:2", f"{COLLECTOR}:3", f"{PKG}:2.0", f"{PKG}:3.0"} <= names


def test_unreadable_package_protects_every_named_image_and_says_why(
    device: Device, tmp_path: Path
) -> None:
    build_package(device, tmp_path, "bad", "services: [this is: not: valid\n")
    stranger = device.sandbox.make_image("quay.io/someone/tool:1", "tool")
    leftover = device.sandbox.make_image(None, "leftover")
    agentfiles.apply(device.spec_dir, "1", agentfiles.device_spec(None, [package_app("bad")]))
    report = device.prune(scope="all", retain_previous=0)
    assert report.outcome == "pruned", report.error
    assert [i.id for i in report.removed] == [leftover]
    assert stranger in device.image_ids()
    kept = next(i for i in report.kept if i.id == stranger)
    assert any(r.startswith("unread-package") for r in kept.reasons)
    assert any(f"{PKG}:bad unread (content unreadable" in n for n in report.notes)


def test_symlinked_and_hardlinked_files_are_followed() -> None:
    def member(name: str, *, data: bytes = b"", sym: str = "", hard: str = "") -> tuple:
        info = tarfile.TarInfo(name)
        if sym:
            info.type, info.linkname = tarfile.SYMTYPE, sym
        elif hard:
            info.type, info.linkname = tarfile.LNKTYPE, hard
        else:
            info.size = len(data)
        return info, io.BytesIO(data) if data else None

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in (
            member("real.yaml", data=b"services: {}"),
            member("compose.yaml", sym="real.yaml"),
            member("other.container", hard="real.yaml"),
        ):
            tar.addfile(info, data)
    archive = _tar(
        {"manifest.json": json.dumps([{"Layers": ["l.tar"]}]).encode(), "l.tar": buffer.getvalue()}
    )
    files = package_files(archive)
    assert files["compose.yaml"] == files["other.container"] == b"services: {}"


def test_a_package_that_names_no_image_counts_as_unread(device: Device, tmp_path: Path) -> None:
    context = tmp_path / "nothing"
    (context / "sub").mkdir(parents=True)
    (context / "sub" / "docker-compose.yaml").write_text(COMPOSE)  # not at the root
    (context / "README").write_text("not a compose file")
    (context / "Containerfile").write_text("FROM scratch\nCOPY sub /sub\nCOPY README /\n")
    device.sandbox.podman("build", "--pull=never", "-q", "-t", f"{PKG}:odd", str(context))
    needed = device.sandbox.make_image(f"{COLLECTOR}:1", "collector")
    agentfiles.apply(device.spec_dir, "1", agentfiles.device_spec(None, [package_app("odd")]))
    report = device.prune(scope="all", retain_previous=0)
    assert report.outcome in ("pruned", "nothing-to-prune"), report.error
    assert needed in device.image_ids()
    assert any("no compose file at its root names an image" in n for n in report.notes)


def test_env_vars_choose_the_image_a_package_runs(device: Device, tmp_path: Path) -> None:
    context = tmp_path / "envpkg"
    context.mkdir()
    (context / "docker-compose.yaml").write_text(
        f"services:\n  c:\n    image: {COLLECTOR}:${{TAG}}\n"
    )
    (context / ".env").write_text("TAG=default\n")
    (context / "Containerfile").write_text("FROM scratch\nCOPY docker-compose.yaml .env /\n")
    device.sandbox.podman("build", "--pull=never", "-q", "-t", f"{PKG}:env", str(context))
    for tag in ("default", "a", "b"):
        device.sandbox.make_image(f"{COLLECTOR}:{tag}", f"collector {tag}")
    for n, tag in ((1, "a"), (2, "b")):
        app = {**package_app("env"), "envVars": {"TAG": tag}}
        agentfiles.apply(device.spec_dir, str(n), agentfiles.device_spec(None, [app]))
        report = device.prune(scope="all")
        assert report.outcome in ("pruned", "nothing-to-prune"), report.error
    names = device.image_names()
    assert {f"{COLLECTOR}:a", f"{COLLECTOR}:b"} <= names  # previous and current
    assert f"{COLLECTOR}:default" not in names
