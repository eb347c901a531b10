"""Read the flightctl agent's desired.json, current.json and rollback.json.

Each file is one serialized Device resource (design.md section 2). From it we
take the spec generation (the "device-controller/renderedVersion" annotation),
the OS image and, per application, every reference it may pull:

- compose: `services.*.image` of each inline .yml/.yaml file (build-only
  services have none); `${VAR:-default}` and `${VAR-default}` resolve to the
  default, any other variable is an error. `image` is a package whose inner
  compose files live inside the image and are not read here.
- quadlet: `Image=` in [Container], [Image], [Volume] and [Pod] sections and
  the source of `Mount=type=image` (and `type=artifact`) of every inline unit
  file and drop-in. `Image=x.image` names another inline unit, whose own
  `Image=` is collected; `Image=x.build` is a local build and skipped. An
  [Image] loaded from an archive transport is named by its `ImageTag=`.
  [Kube] `Yaml=` files are read for containers' and initContainers' images.
- container: `image`; vm: `image` (inline VMs reference nothing); helm:
  `image` is a chart, kept apart because Podman does not run it.
- any app: `volumes[].image.reference`.

Fail safe: any unreadable, malformed or unknown input raises SpecError (and
the caller removes nothing). Only a missing desired.json or rollback.json is
normal; it reads as an empty DeviceSpec with present=False.
"""

from __future__ import annotations

import base64
import json
import posixpath
import re
import shlex
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from controller.references import ReferenceError, parse_reference

DESIRED_FILE = "desired.json"
CURRENT_FILE = "current.json"
ROLLBACK_FILE = "rollback.json"
GENERATION_ANNOTATION = "device-controller/renderedVersion"
APP_TYPES = frozenset({"compose", "quadlet", "container", "helm", "vm"})

_COMPOSE_SUFFIXES = (".yml", ".yaml")
_QUADLET_KINDS = r"(?:container|image|volume|pod|kube|network|build)"
# a unit file, or a drop-in "<unit>.d/<name>.conf" that may override its Image=
_QUADLET_UNIT_RE = re.compile(rf"\.{_QUADLET_KINDS}$|\.{_QUADLET_KINDS}\.d/[^/]+\.conf$")
_IMAGE_SECTIONS = frozenset({"Container", "Image", "Volume", "Pod"})
_MOUNT_TYPES = frozenset({"image", "artifact"})
_DEFAULTED_VARIABLE_RE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^${}]*)\}")
_ARCHIVE_TRANSPORT_RE = re.compile(r"(?:docker-archive|oci-archive|oci|dir):")
_NAMED_TRANSPORT_RE = re.compile(r"(?:docker://|containers-storage:|docker-daemon:)")
_KUBE_CONTAINER_KEYS = frozenset({"containers", "initContainers", "ephemeralContainers"})


class SpecError(Exception):
    """A spec file we cannot trust; names the file, the app (if any) and the problem."""

    def __init__(self, file: str, problem: str, app: str | None = None) -> None:
        self.file = file
        self.app = app
        self.problem = problem
        where = f"{file}: app '{app}': " if app is not None else f"{file}: "
        super().__init__(where + problem)


@dataclass(frozen=True)
class AppSpec:
    name: str
    app_type: str
    run_as: str | None = None
    images: tuple[str, ...] = ()  # container images the app runs
    volume_refs: tuple[str, ...] = ()  # image-backed volumes (OCI artifacts or images)
    packages: tuple[str, ...] = ()  # image packages holding compose/quadlet files, unread
    charts: tuple[str, ...] = ()  # helm charts

    @property
    def refs(self) -> frozenset[str]:
        return frozenset((*self.images, *self.volume_refs, *self.packages, *self.charts))


@dataclass(frozen=True)
class DeviceSpec:
    file: str
    present: bool
    generation: str = ""
    os_image: str | None = None
    apps: tuple[AppSpec, ...] = ()

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
    current = _load_document(spec_dir / CURRENT_FILE, required=True) or {}
    desired = _load_document(spec_dir / DESIRED_FILE, required=False)
    return (
        _generation(current, _Where(str(spec_dir / CURRENT_FILE))),
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
    return DeviceSpec(
        file=where.file, present=True, generation=generation, os_image=os_image, apps=apps
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
        if value is None or isinstance(value, kind):
            return value
        raise self.error(f"{label}'{key}' is {_kind(value)}, not {_kind(kind())}")


_KIND_NAMES = ((bool, "a boolean"), (str, "a string"), (dict, "an object"), (list, "a list"))


def _kind(value: object) -> str:
    """JSON/YAML wording of a value's type, for error messages."""
    if value is None:
        return "null"
    label = next((name for kind, name in _KIND_NAMES if isinstance(value, kind)), None)
    return label or ("a number" if isinstance(value, int | float) else type(value).__name__)


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _load_document(path: Path, *, required: bool) -> dict[str, Any] | None:
    where = _Where(str(path))
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if required:
            raise where.error("file is missing") from None
        return None
    except OSError as error:
        raise where.error(f"cannot read file: {error.strerror or error}") from error
    if not data.strip():
        raise where.error("file is empty")
    try:
        document = json.loads(data)
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        raise where.error(f"invalid JSON: {_one_line(error)}") from error
    if not isinstance(document, dict):
        raise where.error(f"top level is {_kind(document)}, not an object")
    return document


def _generation(document: dict[str, Any], where: _Where) -> str:
    metadata = where.get(document, "metadata", dict) or {}
    annotations = where.get(metadata, "annotations", dict, "metadata: ") or {}
    return where.get(annotations, GENERATION_ANNOTATION, str, "metadata.annotations: ") or ""


def _read_app(raw: object, index: int, file: str) -> AppSpec:
    where = _Where(file)
    if not isinstance(raw, dict):
        raise where.error(f"applications[{index}] is {_kind(raw)}, not an object")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise where.error(f"applications[{index}] has no string 'name'")
    where = _Where(file, name)
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

    images: list[str] = []
    packages: list[str] = []
    charts: list[str] = []
    if image is not None:
        target = {"container": images, "vm": images, "helm": charts}.get(app_type, packages)
        target.append(_checked(image, where, "'image'"))
    if app_type == "compose":
        images.extend(_compose_images(files, where))
    elif app_type == "quadlet":
        images.extend(_quadlet_images(files, where))
    return AppSpec(
        name=name,
        app_type=app_type,
        run_as=run_as,
        images=_sorted_unique(images),
        volume_refs=_sorted_unique(_volume_refs(raw, where)),
        packages=_sorted_unique(packages),
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


def _volume_refs(raw: dict[str, Any], where: _Where) -> Iterator[str]:
    for index, volume in enumerate(where.get(raw, "volumes", list) or []):
        label = f"volumes[{index}]"
        if not isinstance(volume, dict):
            raise where.error(f"{label} is {_kind(volume)}, not an object")
        if not isinstance(volume.get("name"), str):
            raise where.error(f"{label} has no string 'name'")
        label = f"volume '{volume['name']}'"
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
        label = f"inline file '{path}'"
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


def _text(files: dict[str, bytes], path: str, where: _Where) -> str:
    try:
        return files[path].decode("utf-8")
    except UnicodeDecodeError as error:
        raise where.error(f"inline file '{path}': not UTF-8: {_one_line(error)}") from error


def _yaml_documents(files: dict[str, bytes], path: str, where: _Where) -> list[Any]:
    try:
        return list(yaml.safe_load_all(_text(files, path, where)))
    except yaml.YAMLError as error:
        raise where.error(f"inline file '{path}': invalid YAML: {_one_line(error)}") from error


def _compose_images(files: dict[str, bytes], where: _Where) -> Iterator[str]:
    for path in files:
        if not path.lower().endswith(_COMPOSE_SUFFIXES):
            continue  # .env and other companions hold no image references
        label = f"inline file '{path}'"
        documents = _yaml_documents(files, path, where)
        if len(documents) > 1:
            raise where.error(f"{label}: invalid YAML: a compose file is a single document")
        document = documents[0] if documents else None
        if document is None:
            continue
        if not isinstance(document, dict):
            raise where.error(f"{label}: top level is not a mapping")
        if "services" not in document:
            continue
        services = document["services"]
        if not isinstance(services, dict):
            raise where.error(f"{label}: 'services' is not a mapping")
        for service_name, service in services.items():
            context = f"{label}: service '{service_name}'"
            if not isinstance(service, dict):
                raise where.error(f"{context} is not a mapping")
            image = service.get("image")
            if image is None:
                continue  # built locally from `build:`: nothing is pulled
            if not isinstance(image, str):
                raise where.error(f"{context}: 'image' is not a string")
            yield _checked(_resolve_variables(image, where, context), where, context)


def _resolve_variables(image: str, where: _Where, context: str) -> str:
    resolved = _DEFAULTED_VARIABLE_RE.sub(lambda match: match.group(1), image)
    if "$" in resolved:
        # the agent's environment is unknown here, so the image it pulls is too
        raise where.error(
            f"{context}: cannot resolve variable in image {image!r}"
            " (only ${VAR:-default} and ${VAR-default} are understood)"
        )
    return resolved


def _quadlet_images(files: dict[str, bytes], where: _Where) -> Iterator[str]:
    units = {
        path: _unit_entries(_text(files, path, where))
        for path in files
        if _QUADLET_UNIT_RE.search(path)
    }
    unit_names = {posixpath.basename(path) for path in units}
    for path, entries in units.items():
        label = f"inline file '{path}'"
        image_tags = [
            value for section, key, value in entries if (section, key) == ("Image", "ImageTag")
        ]
        yield from (_checked(_unquote(tag), where, f"{label}: ImageTag=") for tag in image_tags)
        for section, key, value in entries:
            if section in _IMAGE_SECTIONS and key == "Image":
                sources = [_unquote(value)]
            elif section in _IMAGE_SECTIONS and key == "Mount":
                sources = _image_mount_sources(value, where, label)
            elif section == "Kube" and key == "Yaml":
                yield from _kube_images(files, path, _unquote(value), where)
                continue
            else:
                continue
            for source in filter(None, sources):  # an empty Image= only resets
                ref = _unit_image(source, unit_names, bool(image_tags), where, f"{label}: {key}=")
                if ref is not None:
                    yield ref


def _unit_entries(text: str) -> list[tuple[str, str, str]]:
    """(section, key, raw value) of a systemd-style unit file."""
    logical: list[str] = []
    pending = ""
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if line.startswith(("#", ";")):
            continue  # systemd also skips comments between continuation lines
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    logical.append(pending)
    entries: list[tuple[str, str, str]] = []
    section = ""
    for line in filter(None, (line.strip() for line in logical)):
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif "=" in line:
            key, _, value = line.partition("=")
            entries.append((section, key.strip(), value.strip()))
    return entries


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _image_mount_sources(value: str, where: _Where, label: str) -> list[str]:
    try:
        specs = shlex.split(value)
    except ValueError as error:
        raise where.error(f"{label}: unparsable Mount= {value!r}: {error}") from error
    sources = []
    for spec in specs:
        options = dict(part.split("=", 1) for part in spec.split(",") if "=" in part)
        if options.get("type") in _MOUNT_TYPES:
            source = options.get("source", options.get("src"))
            if not source:
                raise where.error(f"{label}: Mount= {spec!r} has no source")
            sources.append(source)
    return sources


def _unit_image(
    source: str, unit_names: set[str], has_image_tag: bool, where: _Where, context: str
) -> str | None:
    """The reference an Image=/Mount source pulls; None when another unit says it."""
    if source.endswith(".build"):
        return None  # built on the device, nothing is pulled
    if source.endswith(".image"):
        if posixpath.basename(source) not in unit_names:
            raise where.error(f"{context} names '{source}', which is not among the inline files")
        return None  # that unit's own Image= is collected where it is defined
    if _ARCHIVE_TRANSPORT_RE.match(source):
        if not has_image_tag:
            raise where.error(f"{context} loads {source!r} with no ImageTag= naming the image")
        return None
    return _checked(_NAMED_TRANSPORT_RE.sub("", source, count=1), where, context)


def _kube_images(
    files: dict[str, bytes], unit: str, yaml_path: str, where: _Where
) -> Iterator[str]:
    relative = posixpath.normpath(posixpath.join(posixpath.dirname(unit), yaml_path))
    name = posixpath.basename(yaml_path)
    candidates = [yaml_path, relative, *(p for p in files if posixpath.basename(p) == name)]
    found = next((path for path in candidates if path in files), None)
    if found is None:
        raise where.error(f"inline file '{unit}': Yaml= names '{yaml_path}', which is not inline")
    for document in _yaml_documents(files, found, where):
        for image in _pod_images(document):
            yield _checked(image, where, f"inline file '{found}'")


def _pod_images(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _KUBE_CONTAINER_KEYS and isinstance(value, list):
                for container in value:
                    if isinstance(container, dict) and isinstance(container.get("image"), str):
                        yield container["image"]
            yield from _pod_images(value)
    elif isinstance(node, list):
        for item in node:
            yield from _pod_images(item)
