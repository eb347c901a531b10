"""The run report: what was removed, what was kept and why, space, timing.

`Report.to_dict()` is the `--json` document (docs/report.md describes it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from controller.model import (
    Action,
    Artifact,
    ArtifactDecision,
    ArtifactOutcome,
    Decision,
    Image,
    Reason,
    RemovalOutcome,
    Rule,
)

OUTCOMES = (
    "pruned",
    "nothing-to-prune",
    "disabled",
    "dry-run",
    "failed",
    "locked",  # another run held the state dir's lock: nothing done
    "stopped",  # shutdown stopped removal part-way
)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def image_size(image: Image) -> int:
    """Bytes removing the image frees: its unique size when known, else its size."""
    return image.unique_size if image.unique_size is not None else image.size


@dataclass(frozen=True)
class Item:
    kind: str  # "image" | "manifest-list" | "artifact"
    id: str  # image ID; an artifact's manifest digest ("sha256:...")
    names: tuple[str, ...]
    size_bytes: int
    reasons: tuple[str, ...] = ()
    detail: str = ""
    store: str = "root"  # the owner of the store that holds it

    @classmethod
    def of(
        cls, image: Image, reasons: tuple[Reason, ...] = (), detail: str = "", store: str = "root"
    ) -> Item:
        return cls(
            kind="manifest-list" if image.is_manifest_list else "image",
            id=image.id,
            names=image.names,
            size_bytes=image_size(image),
            reasons=tuple(str(r) for r in reasons),
            detail=detail,
            store=store,
        )

    @classmethod
    def of_artifact(
        cls,
        artifact: Artifact,
        reasons: tuple[Reason, ...] = (),
        detail: str = "",
        store: str = "root",
    ) -> Item:
        return cls(
            kind="artifact",
            id=artifact.digest,
            names=(artifact.name,) if artifact.name else (),
            size_bytes=artifact.size,
            reasons=tuple(str(r) for r in reasons),
            detail=detail,
            store=store,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "store": self.store,
            "id": self.id,
            "names": list(self.names),
            "size_bytes": self.size_bytes,
        }
        if self.reasons:
            out["reasons"] = list(self.reasons)
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass(frozen=True)
class StoreSummary:
    """One store's part in the run, for the report's `stores` list."""

    user: str
    url: str
    status: str  # "pruned" (inventoried and planned) | "skipped"
    reason: str = ""  # why it was skipped
    artifacts: str = ""  # how its artifacts were reached: rest | cli | none | unlisted
    images: int = 0  # listed at the last Inventory
    artifact_count: int = 0
    removed: int = 0
    kept: int = 0
    failed: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"user": self.user, "url": self.url, "status": self.status}
        if self.reason:
            out["reason"] = self.reason
        if self.artifacts:  # listed: a store skipped before Inventory has no figures
            out.update(
                artifact_access=self.artifacts,
                images=self.images,
                artifacts=self.artifact_count,
                removed=self.removed,
                kept=self.kept,
                failed=self.failed,
            )
        return out


@dataclass
class Report:
    outcome: str
    started_at: float
    finished_at: float
    trigger: str = "manual"
    dry_run: bool = False
    error: str | None = None
    failed_state: str | None = None
    states: list[str] = field(default_factory=list)
    spec_generation: str = ""
    removed: list[Item] = field(default_factory=list)
    would_remove: list[Item] = field(default_factory=list)
    kept: list[Item] = field(default_factory=list)
    failures: list[Item] = field(default_factory=list)
    measured_bytes: int | None = None
    estimated_bytes: int = 0
    rollback_ok: bool | None = None  # None until the VerifyRollback pre-check has run
    rollback_missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    trace_id: str | None = None
    stores: list[StoreSummary] = field(default_factory=list)

    @property
    def duration_seconds(self) -> float:
        return round(self.finished_at - self.started_at, 3)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "outcome": self.outcome,
            "trigger": self.trigger,
            "dry_run": self.dry_run,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "duration_seconds": self.duration_seconds,
            "states": list(self.states),
            "spec_generation": self.spec_generation,
            "removed": [i.to_dict() for i in self.removed],
            "kept": [i.to_dict() for i in self.kept],
            "failures": [i.to_dict() for i in self.failures],
            "reclaimed_bytes": {
                "measured": self.measured_bytes,
                "estimated": self.estimated_bytes,
            },
            "rollback": {"ok": self.rollback_ok, "missing": list(self.rollback_missing)},
            "stores": [store.to_dict() for store in self.stores],
        }
        if self.dry_run:
            out["would_remove"] = [i.to_dict() for i in self.would_remove]
        if self.error is not None:
            out["error"] = self.error
            out["failed_state"] = self.failed_state
        if self.notes:
            out["notes"] = list(self.notes)
        if self.trace_id:
            out["trace_id"] = self.trace_id
        return out


def sort_items(
    decisions: tuple[Decision, ...], outcomes: list[RemovalOutcome], store: str = "root"
) -> tuple[list[Item], list[Item], list[Item]]:
    """Split a plan and its removal outcomes into removed / kept / failed items."""
    by_id = {o.image.id: o for o in outcomes}
    removed: list[Item] = []
    kept: list[Item] = []
    failed: list[Item] = []
    for decision in decisions:
        outcome = by_id.get(decision.image.id)
        if outcome is None:
            if decision.action.value == "keep":
                kept.append(Item.of(decision.image, decision.reasons, store=store))
            continue
        if outcome.status in ("removed", "already-gone"):
            detail = "already gone" if outcome.status == "already-gone" else ""
            removed.append(Item.of(decision.image, decision.reasons, detail, store))
        elif outcome.status in ("untagged", "renamed"):
            kept.append(
                Item.of(
                    decision.image,
                    (Reason(Rule.NEW_NAME, outcome.detail),),
                    "planned names removed" if outcome.status == "untagged" else "not removed",
                    store,
                )
            )
        elif outcome.status == "in-use":
            holders = ", ".join(outcome.containers) or "a container"
            kept.append(
                Item.of(
                    decision.image,
                    (Reason(Rule.IN_USE, f"container {holders}"),),
                    "removal refused: in use",
                    store,
                )
            )
        else:
            failed.append(Item.of(decision.image, decision.reasons, outcome.detail, store))
    return removed, kept, failed


def sort_artifact_items(
    decisions: tuple[ArtifactDecision, ...], outcomes: list[ArtifactOutcome], store: str
) -> tuple[list[Item], list[Item], list[Item]]:
    """Like `sort_items`, for one store's artifacts."""
    by_key = {(o.artifact.name, o.artifact.digest): o for o in outcomes}
    removed: list[Item] = []
    kept: list[Item] = []
    failed: list[Item] = []
    for decision in decisions:
        outcome = by_key.get((decision.artifact.name, decision.artifact.digest))
        if outcome is None:
            if decision.action is Action.KEEP:
                kept.append(Item.of_artifact(decision.artifact, decision.reasons, store=store))
            continue
        if outcome.status in ("removed", "already-gone"):
            detail = "already gone" if outcome.status == "already-gone" else ""
            removed.append(Item.of_artifact(decision.artifact, decision.reasons, detail, store))
        elif outcome.status == "not-removable":
            reason = Reason(Rule.NOT_REMOVABLE, outcome.detail)
            kept.append(Item.of_artifact(decision.artifact, (reason,), "not removable", store))
        else:
            failed.append(
                Item.of_artifact(decision.artifact, decision.reasons, outcome.detail, store)
            )
    return removed, kept, failed
