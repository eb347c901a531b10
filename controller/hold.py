"""Holds: the host agent keeps removals off while it pulls or updates.

`HoldGate` is the `RunControl` of a `PruneService`'s runs:

- a run waits in Inventory while a hold is open, so it plans what the pull
  or update left behind;
- a run that is removing checks the gate before each item; if a hold is
  open, or one was opened since the run planned, it stops and replans;
- the check and the removal of one item are atomic with respect to holds:
  `hold()` waits for the one removal in progress (a single Podman call) to
  finish, so once `hold()` has returned nothing is removed until it closes;
- `stop()` (shutdown) releases a waiting run and stops removal after the
  current item.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from controller.context import GO, HOLD, STOP


class HoldGate:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._open = 0
        self._opened = 0  # holds ever opened
        self._planned_at = 0  # `_opened` when the running run last planned
        self._removing = False
        self._stopping = False

    @property
    def opened(self) -> int:
        """How many holds were ever opened (each one makes a running plan stale)."""
        return self._opened

    @property
    def is_held(self) -> bool:
        return self._open > 0

    @contextmanager
    def hold(self) -> Iterator[None]:
        with self._cond:
            self._open += 1
            self._opened += 1
            while self._removing:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._open -= 1
                self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def resume(self) -> None:
        with self._cond:
            self._stopping = False

    # -- RunControl ----------------------------------------------------------

    def wait_for_release(self) -> None:
        with self._cond:
            while self._open and not self._stopping:
                self._cond.wait()
            self._planned_at = self._opened

    @contextmanager
    def removal(self) -> Iterator[str | None]:
        with self._cond:
            if self._stopping:
                halt = STOP
            elif self._open or self._opened != self._planned_at:
                halt = HOLD
            else:
                halt = GO
                self._removing = True
        try:
            yield halt
        finally:
            if halt is GO:
                with self._cond:
                    self._removing = False
                    self._cond.notify_all()
