"""Image packages: compose/quadlet apps shipped as an image of files.

A `compose` or `quadlet` app given as `image` names a package whose files
(compose YAML, quadlet units) sit at the image's root. They are read without
running anything: the image is exported from the store as a docker-archive
and its layers are replayed in memory. The references found are remembered
in the ledger per package digest, so the keep-set stays complete after the
package image itself is gone. A package that cannot be read (not in the
store and never read before, too large, malformed files) stays unresolved:
the planner then keeps every named image it might name.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from controller.appfiles import AppFileError, compose_images, quadlet_images
from controller.ledger import Ledger
from controller.model import Inventory
from controller.references import ImageIndex
from controller.spec import AppSpec, DeviceSpec, SpecSet

MAX_PACKAGE_BYTES = 64 * 1024 * 1024
_WHITEOUT = ".wh."

# (image ID) -> docker-archive bytes; raises on failure
Exporter = Callable[[str], bytes]


@dataclass
class Resolution:
    specs: SpecSet
    notes: list[str] = field(default_factory=list)
    unread: dict[str, str] = field(default_factory=dict)  # package ref -> why


def package_files(archive: bytes) -> dict[str, bytes]:
    """The files at the image's root (and quadlet drop-in dirs), layers replayed."""
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(archive)) as outer:
        manifest = json.load(_member(outer, "manifest.json"))
        if not isinstance(manifest, list) or len(manifest) != 1:
            raise ValueError("docker-archive manifest.json is not one image")
        links: dict[str, str] = {}
        for layer_name in manifest[0]["Layers"]:
            with tarfile.open(fileobj=_member(outer, layer_name)) as layer:
                _replay(layer, files, links)
    for path, target in links.items():  # only links to files we kept can be followed
        if target in files:
            files[path] = files[target]
    return files


def _member(archive: tarfile.TarFile, name: str) -> io.BufferedReader:
    extracted = archive.extractfile(name)
    if extracted is None:
        raise ValueError(f"docker-archive member {name} is not a file")
    return extracted  # type: ignore[return-value]


def _replay(layer: tarfile.TarFile, files: dict[str, bytes], links: dict[str, str]) -> None:
    for member in layer.getmembers():
        # normpath drops "./" prefixes; lstrip("./") would also eat ".wh." whiteouts
        path = posixpath.normpath(member.name).lstrip("/")
        directory, base = posixpath.split(path)
        if base.startswith(_WHITEOUT):  # a later layer deleted this path
            gone = posixpath.join(directory, base[len(_WHITEOUT) :])
            for known in [p for p in files if p == gone or p.startswith(gone + "/")]:
                del files[known]
            continue
        if member.isfile() and _wanted(path):
            extracted = layer.extractfile(member)
            if extracted is not None:
                files[path] = extracted.read()
                links.pop(path, None)
        elif (member.issym() or member.islnk()) and _wanted(path):
            # a symlink's target is relative to its directory; a hardlink's to the root
            base_dir = directory if member.issym() else ""
            links[path] = posixpath.normpath(posixpath.join(base_dir, member.linkname)).lstrip("/")
            files.pop(path, None)


def _wanted(path: str) -> bool:
    # Root-level files, and one level of quadlet drop-in dirs ("x.container.d/y.conf").
    parts = path.split("/")
    return len(parts) == 1 or (len(parts) == 2 and parts[0].endswith(".d"))


def inner_refs(app_type: str, files: dict[str, bytes], env: Mapping[str, str]) -> list[str]:
    if app_type == "compose":
        return sorted(set(compose_images(files, env)))
    return sorted(set(quadlet_images(files)))


def resolve_packages(
    specs: SpecSet, inventory: Inventory, ledger: Ledger, export: Exporter, now: float
) -> Resolution:
    """Read every package the three spec files name; fold its refs into its app.

    A resolved package moves from `AppSpec.packages` to `resolved_packages`
    and its inner references join the app's `images`.
    """
    index = ImageIndex(inventory.images)
    resolution = Resolution(specs)
    cache: dict[tuple[str, str, tuple[tuple[str, str], ...]], tuple[str, ...] | None] = {}

    def resolve_app(app: AppSpec) -> AppSpec:
        found: list[str] = []
        resolved: list[str] = []
        unresolved: list[str] = []
        for ref in app.packages:
            key = (app.app_type, ref, app.env)
            if key not in cache:
                cache[key] = _read_one(app, ref, index, ledger, export, now, resolution)
            refs = cache[key]
            if refs is None:
                unresolved.append(ref)
            else:
                resolved.append(ref)
                found.extend(refs)
        if not resolved:
            return app
        return replace(
            app,
            images=tuple(sorted({*app.images, *found})),
            packages=tuple(unresolved),
            resolved_packages=tuple(sorted({*app.resolved_packages, *resolved})),
        )

    def resolve_spec(spec: DeviceSpec) -> DeviceSpec:
        if not any(app.packages for app in spec.apps):
            return spec
        return replace(spec, apps=tuple(resolve_app(app) for app in spec.apps))

    resolution.specs = SpecSet(
        desired=resolve_spec(specs.desired),
        current=resolve_spec(specs.current),
        rollback=resolve_spec(specs.rollback),
    )
    return resolution


def _variant(env: tuple[tuple[str, str], ...]) -> str:
    if not env:
        return ""
    return "+env:" + hashlib.sha256(json.dumps(env).encode()).hexdigest()[:16]


def _read_one(
    app: AppSpec,
    ref: str,
    index: ImageIndex,
    ledger: Ledger,
    export: Exporter,
    now: float,
    resolution: Resolution,
) -> tuple[str, ...] | None:
    variant = _variant(app.env)
    images = index.lookup(ref)
    if images:
        image = images[0]
        digest = image.digests[0] if image.digests else f"sha256:{image.id}"
        remembered = ledger.package_refs(digest, variant)
        if remembered is not None:
            ledger.remember_package(ref, digest, remembered, now, variant)
            return remembered
        try:
            files = package_files(export(image.id))
            refs = tuple(inner_refs(app.app_type, files, dict(app.env)))
        except (AppFileError, ValueError, KeyError, OSError, tarfile.TarError) as error:
            return _unread(resolution, ref, f"content unreadable: {error}")
        except Exception as error:  # Podman failures: the guard still protects
            return _unread(resolution, ref, f"could not export it: {error}")
        if not refs:
            # A package that runs nothing is not what the agent ships: maybe its
            # files sit where we do not look. Treat it as unread, not as empty.
            kind = "compose" if app.app_type == "compose" else "quadlet"
            return _unread(resolution, ref, f"no {kind} file at its root names an image")
        ledger.remember_package(ref, digest, refs, now, variant)
        return refs
    remembered = ledger.package_refs_by_ref(ref, variant)
    if remembered is not None:
        return remembered
    return _unread(resolution, ref, "not in the store and never read before")


def _unread(resolution: Resolution, ref: str, why: str) -> None:
    """Record why a package stays unread (the planner's guard then applies)."""
    resolution.unread[ref] = why
    note = f"image package {ref} unread ({why}): every named image stays"
    if note not in resolution.notes:
        resolution.notes.append(note)
    return None
