"""The OS images bootc keeps bootable: booted, staged, rollback (and pinned).

`bootc status --json` describes the host (a `BootcHost` document). Every
deployment it lists may be booted again without a network, so each image is
kept by name and by digest. Where bootc is not installed the OS images named
by the spec files are all there is (the planner keeps those anyway).
A bootc that is installed but answers with an error or an unexpected document
is a failure: nothing is removed while the booted image is unknown.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from controller.references import ReferenceError, parse_reference

# Transports whose image name is a registry-style reference Podman can hold.
_NAMED_TRANSPORTS = frozenset({"registry", "containers-storage", "docker"})
# Transports naming a path: only the digest can match an image in a store.
_PATH_TRANSPORTS = frozenset({"oci", "oci-archive", "dir", "docker-archive"})
_DEPLOYMENTS = ("booted", "staged", "rollback")

Runner = Callable[..., subprocess.CompletedProcess[str]]


class BootcError(RuntimeError):
    """bootc exists but its status could not be read."""


@dataclass(frozen=True)
class BootcImages:
    refs: tuple[str, ...]  # names and name@digest references, deduplicated
    deployments: tuple[str, ...]  # which deployments were found, for the report


def _deployment_refs(deployment: Any, label: str) -> Iterator[str]:
    if deployment is None:
        return
    if not isinstance(deployment, dict):
        raise BootcError(f"bootc status: {label} is not an object")
    image = deployment.get("image")
    if image is None:  # an ostree-only deployment: no container image to keep
        return
    try:
        reference = image["image"]
        name, transport = reference["image"], reference.get("transport", "registry")
        digest = image.get("imageDigest")
    except (KeyError, TypeError) as error:
        raise BootcError(f"bootc status: {label} image has an unexpected shape: {error}") from None
    if not isinstance(name, str) or (digest is not None and not isinstance(digest, str)):
        raise BootcError(f"bootc status: {label} image name/digest is not a string")
    if transport not in _NAMED_TRANSPORTS | _PATH_TRANSPORTS:
        raise BootcError(f"bootc status: {label} image has an unknown transport {transport!r}")
    if transport in _PATH_TRANSPORTS and not digest:
        raise BootcError(f"bootc status: {label} image {name!r} has a path and no digest")
    if transport in _NAMED_TRANSPORTS:
        try:
            repository = parse_reference(name).name
        except ReferenceError as error:
            raise BootcError(f"bootc status: {label} image {name!r}: {error}") from None
        yield name
        if digest:
            yield f"{repository}@{digest}"
    elif digest:
        yield digest  # a path transport (oci, dir): only the digest can match a local image


def parse_status(document: Any) -> BootcImages:
    """The images of every deployment in a `bootc status --json` document."""
    if not isinstance(document, dict) or not isinstance(document.get("status"), dict):
        raise BootcError("bootc status: no 'status' object in the document")
    status = document["status"]
    refs: list[str] = []
    found: list[str] = []
    for label in _DEPLOYMENTS:
        got = list(_deployment_refs(status.get(label), label))
        if got:
            found.append(label)
        refs.extend(got)
    others = status.get("otherDeployments")
    others = [] if others is None else others
    if not isinstance(others, list):
        raise BootcError("bootc status: otherDeployments is not a list")
    for index, deployment in enumerate(others):  # pinned deployments stay bootable too
        got = list(_deployment_refs(deployment, f"otherDeployments[{index}]"))
        if got:
            found.append(f"pinned[{index}]")
        refs.extend(got)
    return BootcImages(tuple(dict.fromkeys(refs)), tuple(found))


def read_bootc_images(
    binary: str | None = None, *, runner: Runner = subprocess.run, timeout: float = 30.0
) -> BootcImages | None:
    """Ask bootc; None when bootc is not installed on this host."""
    path = binary or shutil.which("bootc")
    if path is None:
        return None
    try:
        done = runner(
            [path, "status", "--json"], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise BootcError(f"bootc status failed to run: {error}") from error
    if done.returncode != 0:
        raise BootcError(f"bootc status exited {done.returncode}: {done.stderr.strip()[:300]}")
    try:
        document = json.loads(done.stdout)
    except ValueError as error:
        raise BootcError(f"bootc status printed invalid JSON: {error}") from error
    return parse_status(document)
