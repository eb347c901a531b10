"""OCI artifacts in one Podman store: how to reach them, list them, remove them.

Podman 5.6+ serves them over REST (/libpod/artifacts); 5.4-5.5 only through
the `podman artifact` CLI, which has no remote mode for them and so must run
on the same store as the service (same --root/--runroot/--storage-driver);
older Podman has neither, which is reported once and is no error. Which of
the three applies is found out once per store.

Podman says which artifacts exist and under which names. Two things it gets
wrong are read from the store's own OCI image layout index (read-only):
the digests (Podman recomputes them from its re-encoded manifest, so they
differ from the registry's for many pulled artifacts) and unnamed artifacts
(a re-pulled tag's previous manifest): they make `podman artifact ls` fail
outright, and REST lists them without any digest. Podman finds artifacts by
name only, so an unnamed one cannot be removed through it; removal says so
instead of mistaking Podman's "does not exist" for "already gone".
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import quote

from controller.model import Artifact
from controller.podman import PodmanError, PodmanStore

log = logging.getLogger(__name__)
_SAID: set[str] = set()  # "not supported" messages already logged by this process

Runner = Callable[..., subprocess.CompletedProcess[str]]

_REF_NAME = "org.opencontainers.image.ref.name"
# What the CLI says for a name it does not know (5.4, then 5.5+).
_CLI_NOT_FOUND = ("no artifact found with name or digest", "artifact does not exist")
_CLI_UNNAMED = "artifact is unnamed"


class Access(StrEnum):
    REST = "rest"  # Podman 5.6+
    CLI = "cli"  # Podman 5.4-5.5
    NONE = "none"  # no artifact support


class ArtifactError(PodmanError):
    """Artifacts could not be listed or removed; the message says which call and why."""


@dataclass(frozen=True)
class ArtifactSource:
    """How a store's artifacts are reached besides its REST service.

    `cli` is the argv prefix that runs the Podman CLI on the very store the
    service serves: ("podman",) for the default store of the user running
    it, plus --root/--runroot/--storage-driver for any other. None: no CLI.
    `env` replaces the environment of CLI calls (None: inherit it).
    """

    cli: tuple[str, ...] | None = ("podman",)
    env: Mapping[str, str] | None = field(default=None, compare=False, hash=False)
    timeout: float = 60.0


@dataclass(frozen=True)
class ArtifactListing:
    access: Access
    artifacts: tuple[Artifact, ...]
    notes: tuple[str, ...] = ()  # for the report: unsupported, unnamed, degraded digests


@dataclass(frozen=True)
class ArtifactRemoval:
    artifact: Artifact
    status: str  # "removed" | "already-gone" | "not-removable"
    detail: str = ""


@dataclass(frozen=True)
class _Listed:
    """One row of Podman's own listing; what it does not say is None."""

    name: str | None
    size: int | None = None
    digest: str | None = None


class ArtifactStore:
    """The artifacts of one store, behind its PodmanStore (REST) and source (CLI)."""

    def __init__(
        self,
        store: PodmanStore,
        source: ArtifactSource = ArtifactSource(),  # frozen: safe as a default
        *,
        run: Runner = subprocess.run,
        expect_graph_root: str | None = None,
    ) -> None:
        """`expect_graph_root`: the service's graphRoot; when given, the CLI is used
        only if it reaches that very store (a plain `podman` may reach another one)."""
        self._store = store
        self._source = source
        self._run = run
        self._expect_graph_root = expect_graph_root
        self._access: Access | None = None
        self._unsupported = ""

    @property
    def access(self) -> Access:
        """REST, CLI or NONE, found out on first use and then remembered."""
        if self._access is None:
            self._access, self._unsupported = self._detect()
            if self._access is Access.NONE:
                # Said once per process (a daemon runs often); every report notes it.
                level = logging.DEBUG if self._unsupported in _SAID else logging.INFO
                _SAID.add(self._unsupported)
                log.log(level, "artifacts: %s", self._unsupported)
        return self._access

    def list(self) -> ArtifactListing:
        if self.access is Access.NONE:
            return ArtifactListing(Access.NONE, (), (self._unsupported,))
        listed = self._listed_rest() if self.access is Access.REST else self._listed_cli()
        notes: list[str] = []
        layout: list[Artifact] | None = None
        if listed is None or listed:
            try:
                layout = read_layout(self._graph_root())
            except ArtifactError as error:
                if listed is None:
                    raise ArtifactError(
                        f"podman artifact ls fails on an unnamed artifact, and {error}"
                    ) from error
                notes.append(f"digests as Podman recomputes them, not as stored: {error}")
        if listed is None:
            assert layout is not None
            notes.append("podman artifact ls fails on unnamed artifacts: listed from the index")
            artifacts = layout
        else:
            artifacts = self._merge(listed, layout)
        unnamed = sum(1 for a in artifacts if a.name is None)
        if unnamed:
            notes.append(
                f"{unnamed} unnamed artifact(s) (a re-pulled tag's previous content):"
                " Podman cannot remove them"
            )
        return ArtifactListing(self.access, tuple(artifacts), tuple(notes))

    def remove(self, artifact: Artifact) -> ArtifactRemoval:
        """Remove one artifact by name (by digest if unnamed); never with force."""
        if self.access is Access.NONE:
            return ArtifactRemoval(artifact, "not-removable", self._unsupported)
        target = artifact.name or artifact.digest
        if not target:
            return ArtifactRemoval(artifact, "not-removable", "unnamed and its digest is unknown")
        if self.access is Access.REST:
            status, body = self._store.request(
                "remove artifact", "delete", f"/artifacts/{quote(target, safe='')}", target=target
            )
            if status == 200:
                return ArtifactRemoval(artifact, "removed")
            if status != 404:
                raise ArtifactError(f"remove artifact {target}: HTTP {status}: {_message(body)}")
            answer = _message(body)
        else:
            proc = self._cli("artifact", "rm", target, check=False)
            if proc.returncode == 0:
                return ArtifactRemoval(artifact, "removed")
            answer = _stderr(proc)
            if not any(text in answer for text in _CLI_NOT_FOUND):
                raise ArtifactError(f"remove artifact {target}: {answer}")
        if artifact.name is None and any(
            a.digest == artifact.digest for a in self.list().artifacts
        ):
            # Podman looked for a *name* and found none; the artifact is still there.
            return ArtifactRemoval(artifact, "not-removable", f"Podman answered: {answer}")
        return ArtifactRemoval(artifact, "already-gone", answer)

    # -- detection ------------------------------------------------------------

    def _detect(self) -> tuple[Access, str]:
        status, _ = self._store.request("probe artifacts API", "get", "/artifacts/json")
        if status == 200:
            return Access.REST, ""
        why = "no /libpod/artifacts API (Podman 5.6+)"
        if self._source.cli is None:
            return Access.NONE, f"not supported by this Podman service: {why}, no CLI configured"
        # By version: `podman artifact --help` succeeds even on 4.3.
        try:
            version = self._cli("version", "--format", "{{.Client.Version}}").stdout.strip()
        except ArtifactError as error:
            return Access.NONE, f"not supported: {why}, and {error}"
        if _version_tuple(version) >= (5, 4):
            return self._cli_on_this_store()
        return (
            Access.NONE,
            f"not supported by this Podman ({version}): {why} and no `podman artifact`"
            " command (Podman 5.4+)",
        )

    def _cli_on_this_store(self) -> tuple[Access, str]:
        # Listing, let alone removing, another store's artifacts would be wrong.
        if self._expect_graph_root is None:
            return Access.CLI, ""
        try:
            root = self._cli("info", "--format", "{{.Store.GraphRoot}}").stdout.strip()
        except ArtifactError as error:
            return Access.NONE, f"not supported: no /libpod/artifacts API, and {error}"
        if Path(root) != Path(self._expect_graph_root):
            return (
                Access.NONE,
                "not supported by this Podman service: no /libpod/artifacts API (Podman 5.6+),"
                f" and the podman CLI reaches another store ({root},"
                f" not {self._expect_graph_root})",
            )
        return Access.CLI, ""

    # -- Podman's listing -------------------------------------------------------

    def _listed_rest(self) -> list[_Listed]:
        status, body = self._store.request("list artifacts", "get", "/artifacts/json")
        if status != 200 or not isinstance(body, list):
            raise ArtifactError(f"list artifacts: HTTP {status}: {_message(body)}")
        # No digests here; unnamed entries come as Name "".
        return [_Listed(_field(e, "Name", str) or None, _layers_size(e)) for e in body]

    def _listed_cli(self) -> list[_Listed] | None:
        """Podman's rows, or None when an unnamed artifact made the listing fail."""
        proc = self._cli(
            "artifact", "ls", "--no-trunc", "--noheading", "--format", "{{json .}}", check=False
        )
        if proc.returncode != 0:
            if _CLI_UNNAMED in _stderr(proc):
                return None
            raise ArtifactError(f"podman artifact ls: {_stderr(proc)}")
        rows = [_json(line, "podman artifact ls") for line in proc.stdout.splitlines() if line]
        return [
            _Listed(
                _cli_name(row),
                # Exact bytes from 5.5 on; 5.4 only has "3B"-style sizes.
                int(row["VirtualSize"]) if str(row.get("VirtualSize", "")).isdigit() else None,
                _prefixed(_field(row, "Digest", str)),
            )
            for row in rows
        ]

    def _merge(self, listed: list[_Listed], layout: list[Artifact] | None) -> list[Artifact]:
        """Podman's names, with digests and sizes from the index where it has them."""
        stored = {a.name: a for a in layout or () if a.name}
        artifacts = []
        for row in listed:
            if row.name is None:
                continue
            if row.name in stored:
                artifacts.append(stored[row.name])
            elif row.digest is not None and row.size is not None:
                artifacts.append(Artifact(row.name, row.digest, row.size))
            elif (inspected := self._inspect(row.name)) is not None:
                artifacts.append(inspected)
        if layout is not None:
            artifacts.extend(a for a in layout if a.name is None)
        else:
            artifacts.extend(Artifact(None, "", row.size or 0) for row in listed if not row.name)
        return artifacts

    def _inspect(self, name: str) -> Artifact | None:
        """Podman's own digest and size of one name; None when it is gone since."""
        if self.access is Access.REST:
            path = f"/artifacts/{quote(name, safe='')}/json"
            status, info = self._store.request("inspect artifact", "get", path, target=name)
            if status == 404:
                return None
            if status != 200:
                raise ArtifactError(f"inspect artifact {name}: HTTP {status}: {_message(info)}")
        else:
            info = _json(self._cli("artifact", "inspect", name).stdout, f"inspect {name}")
        return Artifact(name, _field(info, "Digest", str), _layers_size(info))

    def _graph_root(self) -> Path:
        if self.access is Access.CLI:
            return Path(self._cli("info", "--format", "{{.Store.GraphRoot}}").stdout.strip())
        status, info = self._store.request("info", "get", "/info")
        root = (info.get("store") or {}).get("graphRoot") if isinstance(info, dict) else None
        if status != 200 or not root:
            raise ArtifactError(f"info: no graphRoot (HTTP {status})")
        return Path(root)

    def _cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert self._source.cli is not None
        argv = [*self._source.cli, *args]
        try:
            proc = self._run(
                argv,
                env=dict(self._source.env) if self._source.env is not None else None,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=self._source.timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise ArtifactError(f"cannot run {argv[0]} {' '.join(args[:2])}: {error}") from error
        if check and proc.returncode != 0:
            raise ArtifactError(f"podman {' '.join(args)}: {_stderr(proc)}")
        return proc


# -- the store's OCI image layout (read-only) -------------------------------------


def read_layout(graph_root: Path) -> list[Artifact]:
    """Every artifact in `<graphRoot>/artifacts`, Podman 5's artifact store."""
    layout = graph_root / "artifacts"
    index = _read_json(layout / "index.json")
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(manifests, list):
        raise ArtifactError(f"{layout / 'index.json'}: no manifests list")
    artifacts = []
    for entry in manifests:
        digest = _field(entry, "digest", str)
        algorithm, _, encoded = digest.partition(":")
        if not (algorithm.isalnum() and encoded.isalnum()):
            raise ArtifactError(f"{layout / 'index.json'}: bad digest {digest!r}")
        manifest = _read_json(layout / "blobs" / algorithm / encoded)
        name = (entry.get("annotations") or {}).get(_REF_NAME) or None
        artifacts.append(Artifact(name, digest, _layers_size({"Manifest": manifest})))
    return artifacts


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ArtifactError(f"{path}: unreadable: {error}") from error


# -- parsing helpers (pure) ---------------------------------------------------------


def _layers_size(entry: Mapping[str, Any]) -> int:
    """Podman's artifact size: the sum of its layers (of a {"Manifest": ...} entry)."""
    manifest = entry.get("Manifest")
    layers = manifest.get("layers") if isinstance(manifest, dict) else None
    if not isinstance(layers, list):
        raise ArtifactError(f"artifact manifest without layers: {str(manifest)[:200]}")
    return sum(_field(layer, "size", int) for layer in layers)


def _cli_name(row: Mapping[str, Any]) -> str:
    # A name added without a tag is stored and listed without one.
    repository, tag = _field(row, "Repository", str), row.get("Tag") or ""
    return f"{repository}:{tag}" if tag else repository


def _field(entry: Any, key: str, kind: type) -> Any:
    value = entry.get(key) if isinstance(entry, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ArtifactError(
            f"unexpected artifact entry, no {kind.__name__} {key!r}: {entry!r}"[:300]
        )
    return value


def _json(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise ArtifactError(f"{what}: not JSON: {text[:200]!r}") from error
    if not isinstance(value, dict):
        raise ArtifactError(f"{what}: not a JSON object: {text[:200]!r}")
    return value


def _version_tuple(version: str) -> tuple[int, ...]:
    """ "5.4.2" -> (5, 4, 2); unparsable parts count as 0."""
    return tuple(int(p) if p.isdigit() else 0 for p in version.split("-")[0].split("."))


def _prefixed(digest: str) -> str:
    return digest if ":" in digest else f"sha256:{digest}"


def _message(body: Any) -> str:
    if isinstance(body, dict):
        return str(body.get("message") or body.get("cause") or body)
    return str(body or "no message")


def _stderr(proc: subprocess.CompletedProcess[str]) -> str:
    """Podman's error lines without its level=warning noise or "Error: " prefix."""
    lines = [line.strip() for line in (proc.stderr or "").splitlines()]
    kept = [line.removeprefix("Error: ") for line in lines if line and "level=warning" not in line]
    return " ".join(kept) or f"exit {proc.returncode}"
