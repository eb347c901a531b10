"""The mutable record of one run, shared by the state handlers in `states/`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from controller.config import Config
from controller.disk import DiskUsage
from controller.ledger import Ledger
from controller.model import Inventory, Plan, RemovalOutcome
from controller.podman import PodmanStore
from controller.spec import SpecSet


@dataclass
class RunContext:
    config: Config
    store: PodmanStore
    clock: Callable[[], float]
    dry_run: bool = False
    trigger: str = "manual"
    # True while the host agent holds off removals (a pull or update is going on).
    should_pause: Callable[[], bool] = lambda: False
    max_replans: int = 3

    specs: SpecSet | None = None
    ledger: Ledger | None = None
    inventory: Inventory | None = None
    plan: Plan | None = None
    outcomes: list[RemovalOutcome] = field(default_factory=list)
    rollback_missing: list[str] = field(default_factory=list)
    disk_before: DiskUsage | None = None
    disk_after: DiskUsage | None = None
    replans: int = 0
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
