"""The mutable record of one run, shared by the state handlers in `states/`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from controller.config import Config
from controller.disk import DiskUsage
from controller.ledger import Ledger
from controller.model import Decision, Inventory, Plan, RemovalOutcome
from controller.podman import PodmanStore
from controller.spec import SpecSet

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


@dataclass
class RunContext:
    config: Config
    store: PodmanStore
    clock: Callable[[], float]
    dry_run: bool = False
    trigger: str = "manual"
    # An emergency run (critical disk alert) ignores min-age; every other rule holds.
    emergency: bool = False
    control: RunControl = field(default_factory=FreeRun)
    max_replans: int = 3  # replans for spec changes; replans for holds are not limited

    specs: SpecSet | None = None
    ledger: Ledger | None = None
    inventory: Inventory | None = None
    plan: Plan | None = None
    outcomes: list[RemovalOutcome] = field(default_factory=list)
    # Every plan's removal decisions by image ID: after a replan the final plan
    # no longer lists what was already removed, but the report must.
    removal_decisions: dict[str, Decision] = field(default_factory=dict)
    rollback_missing: list[str] = field(default_factory=list)
    disk_before: DiskUsage | None = None
    disk_after: DiskUsage | None = None
    replans: int = 0
    hold_replans: int = 0
    stopped: bool = False  # shutdown stopped removal part-way
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    failed_state: str | None = None

    def fail(self, state: str, error: BaseException) -> None:
        self.failed_state = state
        self.error = f"{state}: {error}"


T = TypeVar("T")


def present(value: T | None, what: str) -> T:
    """The value an earlier state produced; a clear error if states ran out of order."""
    if value is None:
        raise RuntimeError(f"{what} is missing: states ran out of order")
    return value
