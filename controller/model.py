"""Plain data shared by the adapter, the planner, the states and the report.

Everything here is immutable and free of I/O so the planner can stay pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True)
class Image:
    """One local image (one image ID), as Podman lists it."""

    id: str  # full hex ID, no "sha256:" prefix
    names: tuple[
        str, ...
    ] = ()  # fully qualified repo:tag names, e.g. "docker.io/library/redis:7.2"
    digests: tuple[
        str, ...
    ] = ()  # "sha256:..." manifest digests (Digest + every RepoDigests digest)
    repo_digests: tuple[str, ...] = ()  # "repo@sha256:..." as listed
    size: int = 0  # virtual size: shared layers included
    unique_size: int | None = None  # bytes only this image holds (from system df); None if unknown
    created: int = 0  # epoch seconds (build time, not pull time)
    dangling: bool = False
    is_manifest_list: bool = False
    manifest_instances: tuple[str, ...] = ()  # "sha256:..." digests a manifest list references

    @property
    def short_id(self) -> str:
        return self.id[:12]


@dataclass(frozen=True)
class Artifact:
    """One OCI artifact in a store (Podman 5.4+), e.g. an image-backed volume's content."""

    # "quay.io/org/models:1" as stored; None for an unnamed one (the previous
    # manifest of a re-pulled tag, which Podman keeps without a name)
    name: str | None
    # "sha256:..." manifest digest; several names may share one. "" only for
    # an unnamed artifact listed through REST when the store's index is unreadable.
    digest: str
    size: int = 0  # bytes of its layers, as Podman counts an artifact's size

    @property
    def label(self) -> str:
        return self.name or f"<unnamed> {self.digest[:19] or 'digest unknown'}"

    def as_image(self) -> Image:
        """The artifact as the reference index and the keep rules see it: its name
        and digest, under an ID no image has (references match both alike)."""
        return Image(
            id=f"artifact:{self.name or ''}@{self.digest}",
            names=(self.name,) if self.name else (),
            digests=(self.digest,) if self.digest else (),
            size=self.size,
            unique_size=self.size,
            dangling=self.name is None,
        )


@dataclass(frozen=True)
class Container:
    """A container of any state (running, exited, created) that holds an image."""

    id: str
    names: tuple[str, ...]
    image_id: str
    image: str = ""
    state: str = ""

    @property
    def label(self) -> str:
        name = self.names[0] if self.names else self.id[:12]
        return f"{name} ({self.id[:12]}, {self.state or 'unknown state'})"


@dataclass(frozen=True)
class Inventory:
    """What the store holds at one moment."""

    images: tuple[Image, ...]
    containers: tuple[Container, ...]
    taken_at: float  # epoch seconds
    storage_path: str | None = None  # Podman graphRoot, for measuring reclaimed space
    os_images: tuple[str, ...] = ()  # booted/staged/rollback OS image refs (bootc), when known

    def by_id(self) -> dict[str, Image]:
        return {image.id: image for image in self.images}


class Action(StrEnum):
    KEEP = "keep"
    REMOVE = "remove"


class Rule(StrEnum):
    """Why an image is kept (design.md section 4), or why it may go."""

    REFERENCED = "referenced"  # rule 1: named by desired/current/rollback
    RETENTION = "retention"  # rule 2: current or previous version of an app / generation
    IN_USE = "in-use"  # rule 3: a container (any state) uses it
    OS_IMAGE = "os-image"  # rule 4: booted/staged/rollback OS image
    PINNED = "pinned"  # rule 5: matches a pin pattern
    MIN_AGE = "min-age"  # rule 6: first seen too recently
    MANIFEST_LIST = "manifest-list"  # rule 7: a kept manifest list references it
    OUT_OF_SCOPE = "out-of-scope"  # rule 8: never referenced by the agent (scope: managed)
    UNREAD_PACKAGE = "unread-package"  # an image package whose content is unknown may name it
    NEW_NAME = "new-name"  # gained a name between Plan and Remove; only planned names went
    HISTORY_INCOMPLETE = "history-incomplete"  # scope all, before N previous generations are known
    NOT_REMOVABLE = "not-removable"  # planned, but Podman cannot remove it (an unnamed artifact)
    # reasons to remove
    UNREFERENCED = "unreferenced"  # the agent referenced it once, nothing needs it now
    DANGLING = "dangling"  # no name, nothing needs it
    UNMANAGED = "unmanaged"  # scope: all, nothing needs it


@dataclass(frozen=True)
class Reason:
    rule: Rule
    detail: str

    def __str__(self) -> str:
        return f"{self.rule.value}: {self.detail}"


@dataclass(frozen=True)
class Decision:
    image: Image
    action: Action
    reasons: tuple[Reason, ...]


@dataclass(frozen=True)
class ArtifactDecision:
    artifact: Artifact
    action: Action
    reasons: tuple[Reason, ...]


@dataclass(frozen=True)
class Plan:
    """The planner's output: one decision per image, removals in safe order."""

    decisions: tuple[Decision, ...]
    spec_generation: str  # current.json renderedVersion the plan was made from
    desired_generation: str = ""
    # references of the current spec that must be present (pre-check), and of
    # older retained versions (missing ones only degrade the rollback)
    required_refs: tuple[str, ...] = ()
    retained_refs: tuple[str, ...] = ()
    # every reference rules 1, 2 and 4 protect: the pre-check's independent guard
    protected_refs: tuple[str, ...] = ()
    # one per artifact (name) in the store, removals first
    artifact_decisions: tuple[ArtifactDecision, ...] = ()
    # image-backed volumes of the current spec: an image or an artifact must hold each
    required_volumes: tuple[str, ...] = ()

    @property
    def artifact_removals(self) -> tuple[ArtifactDecision, ...]:
        return tuple(d for d in self.artifact_decisions if d.action is Action.REMOVE)

    @property
    def removals(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if d.action is Action.REMOVE)

    @property
    def kept(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if d.action is Action.KEEP)

    @property
    def removes_anything(self) -> bool:
        return bool(self.removals or self.artifact_removals)


@dataclass
class RemovalOutcome:
    """What happened to one removal attempt."""

    image: Image
    status: str  # "removed" | "already-gone" | "in-use" | "error" | "skipped"
    detail: str = ""
    containers: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class ArtifactOutcome:
    """What happened to one artifact removal attempt."""

    artifact: Artifact
    status: str  # "removed" | "already-gone" | "not-removable" | "error"
    detail: str = ""
