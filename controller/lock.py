"""The run lock: one pruning run at a time per state dir, across processes.

`edgeprune run`, `edgeprune watch` and an embedded `PruneService` all take
`<state-dir>/run.lock` with a non-blocking `flock` before a run. The winner
writes who it is (pid, command, trigger, start time) into the file so that a
loser can say who holds it; the kernel drops the lock when the holder exits,
even if it is killed, so a stale record never blocks anyone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

LOCK_FILE = "run.lock"
_MAX_COMMAND = 200  # characters of the holder's command line kept in the record


@dataclass(frozen=True)
class LockHolder:
    pid: int
    command: str
    trigger: str
    since: float  # epoch seconds

    def describe(self) -> str:
        started = datetime.fromtimestamp(self.since, UTC).isoformat(timespec="seconds")
        return f"pid {self.pid} ({self.command}), trigger {self.trigger}, since {started}"


class LockBusy(Exception):
    """Another run holds the lock; `holder` is None when its record is not readable yet."""

    def __init__(self, path: Path, holder: LockHolder | None) -> None:
        self.path = path
        self.holder = holder
        who = holder.describe() if holder else "a process that has not written its record yet"
        super().__init__(f"another run holds {path}: {who}")


def _command_line() -> str:
    return " ".join(sys.argv)[:_MAX_COMMAND] or "python"


class RunLock:
    """`acquire()` or raise `LockBusy`; `release()` when the run is over.

    Locks are per open file, so two `RunLock`s in one process exclude each
    other just like two processes do.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self, trigger: str, now: float) -> None:
        """Take the lock without waiting. OSError when the file cannot be opened."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this RunLock")
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockBusy(self.path, read_holder(self.path)) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        record = {"pid": os.getpid(), "command": _command_line(), "trigger": trigger, "since": now}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
        except OSError:
            pass  # the record only informs a loser; the lock itself is what counts

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # no record: nobody holds it
        os.close(fd)  # closing drops the flock


def read_holder(path: Path) -> LockHolder | None:
    """The record the current holder wrote; None if absent, empty or half-written."""
    try:
        record = json.loads(path.read_bytes() or b"null")
        return LockHolder(
            pid=int(record["pid"]),
            command=str(record["command"]),
            trigger=str(record["trigger"]),
            since=float(record["since"]),
        )
    except (OSError, ValueError, TypeError, KeyError):
        return None
