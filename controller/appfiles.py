"""Image references in an application's files: compose YAML and quadlet units.

Pure: the caller passes the files as a mapping of path to content, whether they
came inline in a Device spec or from inside an image package, and gets back
every reference they pull, in the order found (duplicates kept). Each one is
validated with controller.references.parse_reference.

- compose: `services.*.image` of each .yml/.yaml file (build-only services have
  none; other files, such as .env, are ignored); `${VAR:-default}` and
  `${VAR-default}` resolve to the default, any other variable is an error.
- quadlet: `Image=` in [Container], [Image], [Volume] and [Pod] sections and
  the source of `Mount=type=image` (and `type=artifact`) of every unit file and
  drop-in. `Image=x.image` names another unit, whose own `Image=` is
  collected; `Image=x.build` is a local build and skipped. An [Image] loaded
  from an archive transport is named by its `ImageTag=`. [Kube] `Yaml=` files
  are read for containers' and initContainers' images.

Fail safe: anything unreadable, malformed or unresolvable raises AppFileError,
whose message names the file and the problem.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

from controller.references import ReferenceError, parse_reference

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


class AppFileError(ValueError):
    """An app file we cannot trust; the message names the file and the problem."""


def compose_images(files: Mapping[str, bytes]) -> list[str]:
    """Every image the compose files among `files` pull."""
    return list(_compose_images(files))


def quadlet_images(files: Mapping[str, bytes]) -> list[str]:
    """Every image or artifact the quadlet units among `files` pull."""
    return list(_quadlet_images(files))


def _label(path: str) -> str:
    return f"inline file '{path}'"


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _checked(ref: str, context: str) -> str:
    try:
        parse_reference(ref)
    except ReferenceError as error:
        raise AppFileError(f"{context}: {error}") from error
    return ref


def _text(files: Mapping[str, bytes], path: str) -> str:
    try:
        return files[path].decode("utf-8")
    except UnicodeDecodeError as error:
        raise AppFileError(f"{_label(path)}: not UTF-8: {_one_line(error)}") from error


def _yaml_documents(files: Mapping[str, bytes], path: str) -> list[Any]:
    try:
        return list(yaml.safe_load_all(_text(files, path)))
    except yaml.YAMLError as error:
        raise AppFileError(f"{_label(path)}: invalid YAML: {_one_line(error)}") from error


def _compose_images(files: Mapping[str, bytes]) -> Iterator[str]:
    for path in files:
        if not path.lower().endswith(_COMPOSE_SUFFIXES):
            continue  # .env and other companions hold no image references
        label = _label(path)
        documents = _yaml_documents(files, path)
        if len(documents) > 1:
            raise AppFileError(f"{label}: invalid YAML: a compose file is a single document")
        document = documents[0] if documents else None
        if document is None:
            continue
        if not isinstance(document, dict):
            raise AppFileError(f"{label}: top level is not a mapping")
        if "services" not in document:
            continue
        services = document["services"]
        if not isinstance(services, dict):
            raise AppFileError(f"{label}: 'services' is not a mapping")
        for service_name, service in services.items():
            context = f"{label}: service '{service_name}'"
            if not isinstance(service, dict):
                raise AppFileError(f"{context} is not a mapping")
            image = service.get("image")
            if image is None:
                continue  # built locally from `build:`: nothing is pulled
            if not isinstance(image, str):
                raise AppFileError(f"{context}: 'image' is not a string")
            yield _checked(_resolve_variables(image, context), context)


def _resolve_variables(image: str, context: str) -> str:
    resolved = _DEFAULTED_VARIABLE_RE.sub(lambda match: match.group(1), image)
    if "$" in resolved:
        # the agent's environment is unknown here, so the image it pulls is too
        raise AppFileError(
            f"{context}: cannot resolve variable in image {image!r}"
            " (only ${VAR:-default} and ${VAR-default} are understood)"
        )
    return resolved


def _quadlet_images(files: Mapping[str, bytes]) -> Iterator[str]:
    units = {
        path: _unit_entries(_text(files, path)) for path in files if _QUADLET_UNIT_RE.search(path)
    }
    unit_names = {posixpath.basename(path) for path in units}
    for path, entries in units.items():
        label = _label(path)
        image_tags = [
            value for section, key, value in entries if (section, key) == ("Image", "ImageTag")
        ]
        yield from (_checked(_unquote(tag), f"{label}: ImageTag=") for tag in image_tags)
        for section, key, value in entries:
            if section in _IMAGE_SECTIONS and key == "Image":
                sources = [_unquote(value)]
            elif section in _IMAGE_SECTIONS and key == "Mount":
                sources = _image_mount_sources(value, label)
            elif section == "Kube" and key == "Yaml":
                yield from _kube_images(files, path, _unquote(value))
                continue
            else:
                continue
            for source in filter(None, sources):  # an empty Image= only resets
                ref = _unit_image(source, unit_names, bool(image_tags), f"{label}: {key}=")
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


def _image_mount_sources(value: str, label: str) -> list[str]:
    try:
        specs = shlex.split(value)
    except ValueError as error:
        raise AppFileError(f"{label}: unparsable Mount= {value!r}: {error}") from error
    sources = []
    for spec in specs:
        options = dict(part.split("=", 1) for part in spec.split(",") if "=" in part)
        if options.get("type") in _MOUNT_TYPES:
            source = options.get("source", options.get("src"))
            if not source:
                raise AppFileError(f"{label}: Mount= {spec!r} has no source")
            sources.append(source)
    return sources


def _unit_image(source: str, unit_names: set[str], has_image_tag: bool, context: str) -> str | None:
    """The reference an Image=/Mount source pulls; None when another unit says it."""
    if source.endswith(".build"):
        return None  # built on the device, nothing is pulled
    if source.endswith(".image"):
        if posixpath.basename(source) not in unit_names:
            raise AppFileError(f"{context} names '{source}', which is not among the inline files")
        return None  # that unit's own Image= is collected where it is defined
    if _ARCHIVE_TRANSPORT_RE.match(source):
        if not has_image_tag:
            raise AppFileError(f"{context} loads {source!r} with no ImageTag= naming the image")
        return None
    return _checked(_NAMED_TRANSPORT_RE.sub("", source, count=1), context)


def _kube_images(files: Mapping[str, bytes], unit: str, yaml_path: str) -> Iterator[str]:
    relative = posixpath.normpath(posixpath.join(posixpath.dirname(unit), yaml_path))
    name = posixpath.basename(yaml_path)
    candidates = [yaml_path, relative, *(p for p in files if posixpath.basename(p) == name)]
    found = next((path for path in candidates if path in files), None)
    if found is None:
        raise AppFileError(f"{_label(unit)}: Yaml= names '{yaml_path}', which is not inline")
    for document in _yaml_documents(files, found):
        for image in _pod_images(document):
            yield _checked(image, _label(found))


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
