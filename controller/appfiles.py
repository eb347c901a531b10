"""Image references in an application's files: compose YAML and quadlet units.

Pure: the caller passes the files as a mapping of path to content, whether they
came inline in a Device spec or from inside an image package, and gets back
every reference they pull, in the order found (duplicates kept). Each one is
validated with controller.references.parse_reference.

- compose: `services.*.image` of each .yml/.yaml file (build-only services have
  none), with variables interpolated as compose does (controller.composevars)
  from the `.env` file among the files, overridden by the caller's variables
  (an app's envVars). An unset variable with no default is an error.
- quadlet: `Image=` in [Container], [Image], [Volume] and [Pod] sections and
  the source of `Mount=type=image` (and `type=artifact`) of every unit file and
  drop-in: `x.container.d/`, the prefix form `x-.container.d/` and the
  type-wide `container.d/` alike (collecting every one is the safe union).
  `Image=x.image` names another unit, whose own `Image=` is collected;
  `Image=x.build` is a local build and skipped. An [Image] loaded from an
  archive transport is named by its `ImageTag=`. [Kube] `Yaml=` files,
  relative to the unit's directory as quadlet resolves them, are read for
  containers' and initContainers' images.

Parsed YAML may share nodes through aliases (a 1 KB "billion laughs" document
stands for billions of nodes): every walk visits each mapping and list once.

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

from controller.composevars import (
    Variable,
    VariableError,
    interpolate,
    literal_variables,
    parse_dotenv,
)
from controller.references import ReferenceError, parse_reference

_COMPOSE_SUFFIXES = (".yml", ".yaml")
_QUADLET_KINDS = r"(?:container|image|volume|pod|kube|network|build)"
# a unit file, or a drop-in that may override Image=: "<unit>.d/", "<prefix>-.<kind>.d/"
# or the type-wide "<kind>.d/" directory, each holding "<name>.conf" files
_QUADLET_UNIT_RE = re.compile(rf"\.{_QUADLET_KINDS}$|(?:^|[/.]){_QUADLET_KINDS}\.d/[^/]+\.conf$")
_DOTENV_FILE = ".env"
_IMAGE_SECTIONS = frozenset({"Container", "Image", "Volume", "Pod"})
_MOUNT_TYPES = frozenset({"image", "artifact"})
_ARCHIVE_TRANSPORT_RE = re.compile(r"(?:docker-archive|oci-archive|oci|dir):")
_NAMED_TRANSPORT_RE = re.compile(r"(?:docker://|containers-storage:|docker-daemon:)")
_KUBE_CONTAINER_KEYS = frozenset({"containers", "initContainers", "ephemeralContainers"})


class AppFileError(ValueError):
    """An app file we cannot trust; the message names the file and the problem."""


def compose_images(files: Mapping[str, bytes], env: Mapping[str, str] | None = None) -> list[str]:
    """Every image the compose files among `files` pull.

    Variables come from the `.env` file among `files`, overridden by `env`
    (the app's envVars, which the agent writes into that `.env`).
    """
    return list(_compose_images(files, _compose_variables(files, env or {})))


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
    except (RecursionError, MemoryError) as error:  # absurdly deep or large
        raise AppFileError(f"{_label(path)}: YAML too deep or too large to read") from error


def _compose_variables(files: Mapping[str, bytes], env: Mapping[str, str]) -> dict[str, Variable]:
    dotenv = next((path for path in files if posixpath.normpath(path) == _DOTENV_FILE), None)
    variables: dict[str, Variable] = {}
    if dotenv is not None:
        try:
            variables = parse_dotenv(_text(files, dotenv))
        except VariableError as error:
            raise AppFileError(f"{_label(dotenv)}: {error}") from error
    return variables | literal_variables(env)


def _compose_images(files: Mapping[str, bytes], variables: Mapping[str, Variable]) -> Iterator[str]:
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
        seen: set[int] = set()  # services that are aliases of one mapping are read once
        for service_name, service in services.items():
            context = f"{label}: service '{service_name}'"
            if not isinstance(service, dict):
                raise AppFileError(f"{context} is not a mapping")
            if id(service) in seen:
                continue
            seen.add(id(service))
            image = service.get("image")
            if image is None:
                continue  # built locally from `build:`: nothing is pulled
            if not isinstance(image, str):
                raise AppFileError(f"{context}: 'image' is not a string")
            try:
                resolved = interpolate(image, variables)
            except VariableError as error:
                # without the variable, the image the app pulls is unknown
                raise AppFileError(f"{context}: cannot resolve variable: {error}") from error
            yield _checked(resolved, context)


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
    # Quadlet resolves a relative Yaml= against the unit file's directory; a drop-in
    # ("x.kube.d/10.conf") speaks for the unit in the directory above its own.
    unit_dir = posixpath.dirname(unit)
    if unit_dir.endswith(".d") and unit.endswith(".conf"):
        unit_dir = posixpath.dirname(unit_dir)
    path = posixpath.normpath(posixpath.join(unit_dir, yaml_path))
    if path not in files:  # never a same-named file elsewhere: it may hold other images
        raise AppFileError(
            f"{_label(unit)}: Yaml= names '{yaml_path}', which is not inline"
            + (f" (looked for '{path}')" if path != yaml_path else "")
        )
    for document in _yaml_documents(files, path):
        for image in _pod_images(document):
            yield _checked(image, _label(path))


def _pod_images(root: Any) -> Iterator[str]:
    """Images of every container list in a parsed kube document, each node visited once."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict | list) or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, list):
            stack.extend(reversed(node))
            continue
        for key, value in node.items():
            if key in _KUBE_CONTAINER_KEYS and isinstance(value, list):
                for container in value:
                    if isinstance(container, dict) and isinstance(container.get("image"), str):
                        yield container["image"]
        stack.extend(reversed(node.values()))
