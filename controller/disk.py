"""Filesystem space figures for the storage that Podman writes to."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DiskUsage:
    path: str
    total_bytes: int
    free_bytes: int  # available to unprivileged writers (f_bavail), what a pull can use

    @property
    def used_percent(self) -> int:
        """The agent's formula: round((1 - f_bavail / f_blocks) * 100)."""
        if self.total_bytes == 0:
            return 0
        return round((1 - self.free_bytes / self.total_bytes) * 100)


def disk_usage(path: str | None) -> DiskUsage | None:
    """Usage of the filesystem holding `path`; None when it cannot be read."""
    if not path:
        return None
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return DiskUsage(path, st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize)
