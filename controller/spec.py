"""Read the flightctl agent's desired.json, current.json and rollback.json.

Each file is one serialized Device resource (design.md section 2). From it we
take the spec generation (the "device-controller/renderedVersion" annotation),
the OS image and, per application, every reference it may pull:

- compose and quadlet: the images named by the inline files, decoded here
  (plain or base64) and read by controller.appfiles. `image` is a package
  whose inner files live inside the image and are not read here.
- container: `image`; vm: `image` (inline VMs reference nothing); helm:
  `image` is a chart, kept apart because Podman does not run it.
- any app: `volumes[].image.reference`.

Fail safe: any unreadable, malformed or unknown input raises SpecError (and
the caller removes nothing); an AppFileError becomes a SpecError naming the
file and the app. Only a missing desired.json or rollback.json is normal; it
reads as an empty DeviceSpec with present=False. Special and oversized files
are refused unread (controller.specfile); current.json must carry a
generation, or the versions it records could not be told apart; names and
references must be valid Unicode (the agent's JSON encoder never writes a
lone surrogate).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.appfiles import AppFileError, compose_images, quadlet_images
from controller.diskmon import DiskMonitorSpec, parse_disk_monitors
from controller.references import ReferenceError, parse_reference
from controller.specfile import UnreadableFile, read_json

DESIRED_FILE = "desired.json"
CURRENT_FILE = "current.json"
ROLLBACK_FILE = "rollback.json"
GENERATION_ANNOTATION = "device-controller/renderedVersion"
APP_TYPES = frozenset({"compose", "quadlet", "container", "helm", "vm"})


class SpecError(Exception):
    """A spec file we cannot trust; names the file, the app (if any) and the problem."""

    def __init__(self, file: str, problem: str, app: str | None = None) -> None:
        self.file = file
        self.app = app
        self.problem = problem
        where = f"{file}: app '{app}': " if app is not None else f"{file}: "
        super().__init__(_printable(where + problem))


@dataclass(frozen=True)
class AppSpec:
    name: str
    app_type: str
    run_as: str | None = None
    images: tuple[str, ...] = ()  # container images the app runs
    volume_refs: tuple[str, ...] = ()  # image-backed volumes (OCI artifacts or images)
    packages: tuple[str, ...] = ()  # image packages holding compose/quadlet files, unread
    charts: tuple[str, ...] = ()  # helm charts
    # packages whose files were read (controller/packages.py); their refs are in `images`
    resolved_packages: tuple[str, ...] = ()
    # envVars (sorted pairs): compose files inside a package substitute from them too
    env: tuple[tuple[str, str], ...] = ()

    @property
    def refs(self) -> frozenset[str]:
        return frozenset(
            (*self.images, *self.volume_refs, *self.packages, *self.charts, *self.resolved_packages)
        )


@dataclass(frozen=True)
class DeviceSpec:
    file: str
    present: bool
    generation: str = ""
    os_image: str | None = None
    apps: tuple[AppSpec, ...] = ()
    # `spec.resources` Disk monitors. A malformed one is skipped and described in
    # resource_problems instead of failing the read: alert rules decide when to
    # prune, never what to keep, so they must not stop pruning.
    disk_monitors: tuple[DiskMonitorSpec, ...] = ()
    resource_problems: tuple[str, ...] = ()

    @property
    def refs(self) -> frozenset[str]:
        refs = frozenset().union(*(app.refs for app in self.apps))
        return (refs | {self.os_image}) if self.os_image else refs

    def app(self, name: str) -> AppSpec | None:
        return next((app for app in self.apps if app.name == name), None)


@dataclass(frozen=True)
class SpecSet:
    desired: DeviceSpec
    current: DeviceSpec
    rollback: DeviceSpec

    @property
    def refs(self) -> frozenset[str]:
        return self.desired.refs | self.current.refs | self.rollback.refs


def read_spec_dir(spec_dir: Path) -> SpecSet:
    return SpecSet(
        desired=read_spec_file(spec_dir / DESIRED_FILE, required=False),
        current=read_spec_file(spec_dir / CURRENT_FILE, required=True),
        rollback=read_spec_file(spec_dir / ROLLBACK_FILE, required=False),
    )


def read_generations(spec_dir: Path) -> tuple[str, str]:
    """(current, desired) generations: a cheap re-check that skips the apps."""
    current_path = spec_dir / CURRENT_FILE
    current = _load_document(current_path, required=True) or {}
    desired = _load_document(spec_dir / DESIRED_FILE, required=False)
    return (
        _tracked_generation(_generation(current, _Where(str(current_path))), current_path),
        _generation(desired, _Where(str(spec_dir / DESIRED_FILE))) if desired else "",
    )


def read_spec_file(path: Path, *, required: bool) -> DeviceSpec:
    where = _Where(str(path))
    document = _load_document(path, required=required)
    if document is None:
        return DeviceSpec(file=where.file, present=False)
    generation = _generation(document, where)
    spec = document.get("spec")
    if not isinstance(spec, dict):
        raise where.error(f"'spec' is {_kind(spec)}, not an object")
    os_section = where.get(spec, "os", dict, "spec: ") or {}
    os_image = where.get(os_section, "image", str, "spec.os: ") or None
    if os_image:
        _checked(os_image, where, "spec.os.image")
    raw_apps = where.get(spec, "applications", list, "spec: ") or []
    apps = tuple(_read_app(raw, index, where.file) for index, raw in enumerate(raw_apps))
    names = [app.name for app in apps]
    if duplicated := sorted({name for name in names if names.count(name) > 1}):
        raise where.error(f"duplicate application names {duplicated}")
    monitors, problems = parse_disk_monitors(spec.get("resources"))
    return DeviceSpec(
        file=where.file,
        present=True,
        generation=_tracked_generation(generation, path),
        os_image=os_image,
        apps=apps,
        disk_monitors=monitors,
        resource_problems=problems,
    )


@dataclass(frozen=True)
class _Where:
    """Error context: the file and, once known, the app."""

    file: str
    app: str | None = None

    def error(self, problem: str) -> SpecError:
        return SpecError(self.file, problem, self.app)

    def get(self, obj: dict[str, Any], key: str, kind: type, label: str = "") -> Any:
        """obj[key] if it has the expected type, None if absent or null."""
        value = obj.get(key)
        if isinstance(value, str):
            self.unicode(value, f"{label}'{key}'")
        if value is None or isinstance(value, kind):
            return value
        raise self.error(f"{label}'{key}' is {_kind(value)}, not {_kind(kind())}")

    def unicode(self, value: str, label: str) -> str:
        """`value` if it is valid Unicode; a lone surrogate ("\\udc80" in JSON) is not."""
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            shown = _printable(repr(value[:80]))  # escaped, so the message prints
            raise self.error(f"{label} {shown} is not valid Unicode") from None
        return value


_KIND_NAMES = ((bool, "a boolean"), (str, "a string"), (dict, "an object"), (list, "a list"))


def _kind(value: object) -> str:
    """JSON/YAML wording of a value's type, for error messages."""
    if value is None:
        return "null"
    label = next((name for kind, name in _KIND_NAMES if isinstance(value, kind)), None)
    return label or ("a number" if isinstance(value, int | float) else type(value).__name__)


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _printable(text: str) -> str:
    """`text` with lone surrogates escaped, so printing an error cannot fail."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _load_document(path: Path, *, required: bool) -> dict[str, Any] | None:
    where = _Where(str(path))
    try:
        document = read_json(path)
    except FileNotFoundError:
        if required:
            raise where.error("file is missing") from None
        return None
    except UnreadableFile as error:
        raise where.error(error.problem) from error
    if not isinstance(document, dict):
        raise where.error(f"top level is {_kind(document)}, not an object")
    return document


def _generation(document: dict[str, Any], where: _Where) -> str:
    metadata = where.get(document, "metadata", dict) or {}
    annotations = where.get(metadata, "annotations", dict, "metadata: ") or {}
    return where.get(annotations, GENERATION_ANNOTATION, str, "metadata.annotations: ") or ""


def _tracked_generation(generation: str, path: Path) -> str:
    """current.json's generation must be there: versions are learned per generation.

    desired.json and rollback.json may have none (the agent clears rollback.json
    to an empty renderedVersion); the bootstrap shape has "0".
    """
    if path.name == CURRENT_FILE and not generation:
        raise SpecError(
            str(path), "current.json has no renderedVersion: edgeprune cannot tell versions apart"
        )
    return generation


def _read_app(raw: object, index: int, file: str) -> AppSpec:
    where = _Where(file)
    if not isinstance(raw, dict):
        raise where.error(f"applications[{index}] is {_kind(raw)}, not an object")
    name = raw.get("name")
    if name is None or name == "":
        # the agent names an image-based app after its image
        name = raw.get("image") if isinstance(raw.get("image"), str) else None
    if not isinstance(name, str) or not name:
        raise where.error(f"applications[{index}] has no string 'name' (nor 'image')")
    where = _Where(file, where.unicode(name, f"applications[{index}] 'name'"))
    app_type = raw.get("appType")
    if app_type is None:
        raise where.error("'appType' is missing")
    if app_type not in APP_TYPES:
        raise where.error(f"unknown appType {app_type!r} (known: {', '.join(sorted(APP_TYPES))})")
    run_as = where.get(raw, "runAs", str) or None
    image = where.get(raw, "image", str) or None
    inline = where.get(raw, "inline", list)
    if image is None and app_type in ("container", "helm"):
        raise where.error(f"{app_type} app has no 'image'")
    if image is None and inline is None:
        raise where.error(f"{app_type} app has neither 'image' nor 'inline'")
    files = _inline_files(inline, where) if inline is not None else {}
    env_vars = _env_vars(raw, where)

    images: list[str] = []
    packages: list[str] = []
    charts: list[str] = []
    if image is not None:
        target = {"container": images, "vm": images, "helm": charts}.get(app_type, packages)
        target.append(_checked(image, where, "'image'"))
    images.extend(_app_file_images(app_type, files, env_vars, where))
    return AppSpec(
        name=name,
        app_type=app_type,
        run_as=run_as,
        images=_sorted_unique(images),
        volume_refs=_sorted_unique(_volume_refs(raw, where)),
        packages=_sorted_unique(packages),
        env=tuple(sorted(env_vars.items())),
        charts=_sorted_unique(charts),
    )


def _sorted_unique(refs: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(refs)))


def _checked(ref: str, where: _Where, context: str) -> str:
    try:
        parse_reference(ref)
    except ReferenceError as error:
        raise where.error(f"{context}: {error}") from error
    return ref


def _app_file_images(
    app_type: str, files: dict[str, bytes], env_vars: dict[str, str], where: _Where
) -> list[str]:
    try:
        if app_type == "compose":
            return compose_images(files, env_vars)
        if app_type == "quadlet":
            return quadlet_images(files)  # quadlet does not interpolate Image=
    except AppFileError as error:
        raise where.error(str(error)) from error
    return []  # container, helm and vm apps' inline files name no images


def _env_vars(raw: dict[str, Any], where: _Where) -> dict[str, str]:
    """The app's `envVars`: a string-to-string map (compose substitutes from it)."""
    env_vars = where.get(raw, "envVars", dict) or {}
    for key, value in env_vars.items():
        where.unicode(key, "envVars key")
        if not isinstance(value, str):
            raise where.error(f"envVars: '{key}' is {_kind(value)}, not a string")
        where.unicode(value, f"envVars: '{key}'")
    return env_vars


def _volume_refs(raw: dict[str, Any], where: _Where) -> Iterator[str]:
    for index, volume in enumerate(where.get(raw, "volumes", list) or []):
        label = f"volumes[{index}]"
        if not isinstance(volume, dict):
            raise where.error(f"{label} is {_kind(volume)}, not an object")
        if not isinstance(volume.get("name"), str):
            raise where.error(f"{label} has no string 'name'")
        label = f"volume '{where.unicode(volume['name'], f'{label} name')}'"
        where.get(volume, "mount", dict, f"{label}: ")
        image = where.get(volume, "image", dict, f"{label}: ")
        if image is not None:
            reference = where.get(image, "reference", str, f"{label}: image: ")
            yield _checked(reference or "", where, f"{label}: image.reference")


def _inline_files(entries: list[Any], where: _Where) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise where.error(f"inline[{index}] is {_kind(entry)}, not an object")
        path = entry.get("path")
        if not isinstance(path, str) or not path:
            raise where.error(f"inline[{index}] has no string 'path'")
        label = f"inline file '{where.unicode(path, f'inline[{index}] path')}'"
        if path in files:
            raise where.error(f"{label}: listed twice")
        content = where.get(entry, "content", str, f"{label}: ") or ""
        encoding = where.get(entry, "contentEncoding", str, f"{label}: ") or "plain"
        if encoding == "plain":
            files[path] = content.encode("utf-8", "surrogatepass")
        elif encoding == "base64":
            try:
                files[path] = base64.b64decode("".join(content.split()), validate=True)
            except ValueError as error:  # binascii.Error, or non-ASCII text
                raise where.error(f"{label}: invalid base64: {_one_line(error)}") from error
        else:
            raise where.error(f"{label}: unknown contentEncoding {encoding!r}")
    return files
