"""The mutable record of one run, shared by the state handlers in `states/`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from controller.artifacts import ArtifactListing, ArtifactSource, ArtifactStore
from controller.config import Config
from controller.disk import DiskUsage
from controller.ledger import Ledger
from controller.model import (
    ArtifactDecision,
    ArtifactOutcome,
    Decision,
    Inventory,
    Plan,
    RemovalOutcome,
)
from controller.podman import PodmanStore
from controller.spec import SpecSet
from controller.stores import StoreTarget, agent_target

# What `RunControl.removal()` yields: go ahead, or why removal must stop.
GO, HOLD, STOP = None, "hold", "stop"


class RunControl(Protocol):
    """How a host steers a run: holds around its pulls and updates, and shutdown."""

    def wait_for_release(self) -> None:
        """Block while a hold is open (Inventory calls it before planning)."""
        ...

    def removal(self) -> AbstractContextManager[str | None]:
        """Guard one removal: yields GO (no hold can open until it ends), HOLD or STOP."""
        ...


class FreeRun:
    """No host to answer to: never held, never stopped."""

    def wait_for_release(self) -> None:
        return None

    @contextmanager
    def removal(self) -> Iterator[str | None]:
        yield GO


ArtifactKey = tuple[str | None, str]  # (name, digest): Podman removes artifacts by name


def artifact_key(decision: ArtifactDecision | ArtifactOutcome) -> ArtifactKey:
    return decision.artifact.name, decision.artifact.digest


@dataclass
class StoreRun:
    """One store's part of the run: what Inventory, Plan and Remove found and did there."""

    target: StoreTarget
    store: PodmanStore | None = None  # None until connected (never, when skipped early)
    skipped: str | None = None  # why the store was left out of this run
    artifacts: ArtifactStore | None = None
    listing: ArtifactListing | None = None  # None: artifacts unknown (not listed)
    inventory: Inventory | None = None
    plan: Plan | None = None
    outcomes: list[RemovalOutcome] = field(default_factory=list)
    artifact_outcomes: list[ArtifactOutcome] = field(default_factory=list)
    # Every plan's removal decisions: after a replan the final plan no longer
    # lists what was already removed, but the report must.
    removal_decisions: dict[str, Decision] = field(default_factory=dict)
    artifact_removal_decisions: dict[ArtifactKey, ArtifactDecision] = field(default_factory=dict)
    rollback_missing: list[str] = field(default_factory=list)
    disk_before: DiskUsage | None = None
    disk_after: DiskUsage | None = None

    @property
    def user(self) -> str:
        return self.target.user

    @property
    def active(self) -> bool:
        """Inventoried and not skipped: planned, checked and pruned in this run."""
        return self.skipped is None and self.inventory is not None

    @property
    def attempted(self) -> bool:
        return bool(self.outcomes or self.artifact_outcomes)


def _no_store(target: StoreTarget) -> PodmanStore:
    raise RuntimeError(f"no way to connect to the store of {target.user}")


@dataclass
class RunContext:
    config: Config
    store: PodmanStore  # the agent's own store (podman-url)
    clock: Callable[[], float]
    dry_run: bool = False
    trigger: str = "manual"
    # An emergency run (critical disk alert) ignores min-age; every other rule holds.
    emergency: bool = False
    control: RunControl = field(default_factory=FreeRun)
    max_replans: int = 3  # replans for spec changes; replans for holds are not limited
    # how Inventory reaches the other users' stores and their artifacts
    connect: Callable[[StoreTarget], PodmanStore] = _no_store
    artifact_source: Callable[[StoreTarget], ArtifactSource] = lambda _target: ArtifactSource()

    specs: SpecSet | None = None
    ledger: Ledger | None = None
    # The agent's store first (its failure fails the run), then other users' stores.
    stores: list[StoreRun] = field(default_factory=list)
    replans: int = 0
    hold_replans: int = 0
    stopped: bool = False  # shutdown stopped removal part-way
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    failed_state: str | None = None

    def __post_init__(self) -> None:
        if not self.stores:
            self.stores.append(StoreRun(agent_target(self.config), self.store))

    @property
    def agent_store(self) -> StoreRun:
        return self.stores[0]

    @property
    def active_stores(self) -> list[StoreRun]:
        return [run for run in self.stores if run.active]

    # The agent store's inventory, plan and disk figures, where one store is meant.
    @property
    def inventory(self) -> Inventory | None:
        return self.agent_store.inventory

    @inventory.setter
    def inventory(self, value: Inventory | None) -> None:
        self.agent_store.inventory = value

    @property
    def disk_before(self) -> DiskUsage | None:
        return self.agent_store.disk_before

    @disk_before.setter
    def disk_before(self, value: DiskUsage | None) -> None:
        self.agent_store.disk_before = value

    @property
    def plan(self) -> Plan | None:
        return self.agent_store.plan

    def note(self, text: str) -> None:
        """A remark for the report, once per run (replans repeat Inventory)."""
        if text not in self.notes:
            self.notes.append(text)

    def fail(self, state: str, error: BaseException) -> None:
        self.failed_state = state
        self.error = f"{state}: {error}"


T = TypeVar("T")


def present(value: T | None, what: str) -> T:
    """The value an earlier state produced; a clear error if states ran out of order."""
    if value is None:
        raise RuntimeError(f"{what} is missing: states ran out of order")
    return value
