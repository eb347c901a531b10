"""A critical disk alert: an emergency prune at once, and no spinning when it cannot help.

The emergency run ignores min-age and keeps every other rule. Usage is
measured before and after it. At or below the rule, the alert clears and the
log says so with both figures. Above it, the log says what takes the space
that pruning may not touch (kept images grouped by reason, with sizes, and
what is not images at all), and the store's state is remembered: the next
emergency prune waits until something changes, i.e. the applied spec
generation, or the set of images or containers in the store (a pull, an
update, an operator's cleanup), or the alert clears and fires again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from controller.disk import DiskUsage
from controller.diskmon import AlertRule
from controller.report import Item, Report
from controller.table import human_bytes

log = logging.getLogger("edgeprune")

_NAMES_SHOWN = 3  # image names listed per reason; the rest are counted


@dataclass(frozen=True)
class StoreState:
    """What an emergency prune's result depends on; a change makes a retry worthwhile."""

    generation: str
    image_ids: frozenset[str]
    container_ids: frozenset[str]


@dataclass(frozen=True)
class EmergencyResult:
    report: Report
    before: DiskUsage | None
    after: DiskUsage | None
    cleared: bool


def _percent(usage: DiskUsage | None) -> str:
    return "unknown" if usage is None else f"{usage.used_percent}%"


def _primary_rule(item: Item) -> str:
    return item.reasons[0].split(":", 1)[0] if item.reasons else item.detail or "kept"


def explain_kept(report: Report, usage: DiskUsage | None) -> str:
    """Kept images grouped by their first reason, with sizes; then what is not images."""
    groups: dict[str, list[Item]] = {}
    for item in report.kept:
        groups.setdefault(_primary_rule(item), []).append(item)
    parts = []
    for rule, items in sorted(groups.items(), key=lambda g: -sum(i.size_bytes for i in g[1])):
        names = [", ".join(i.names) or i.id[:12] for i in items]
        shown = "; ".join(names[:_NAMES_SHOWN])
        if len(names) > _NAMES_SHOWN:
            shown += f"; +{len(names) - _NAMES_SHOWN} more"
        size = human_bytes(sum(i.size_bytes for i in items))
        parts.append(f"{rule}: {len(items)} image(s), {size} ({shown})")
    images = sum(i.size_bytes for i in report.kept)
    text = "; ".join(parts) if parts else "no images are kept"
    if usage is not None:
        used = usage.total_bytes - usage.free_bytes
        text += (
            f"; other data on {usage.path}'s filesystem (not image content pruning may "
            f"remove): {human_bytes(max(used - images, 0))} of {human_bytes(used)} used"
        )
    return text


@dataclass
class _Stuck:
    state: StoreState | None
    since: float
    told: bool = False  # the "waiting for a change" line was logged


class EmergencyResponder:
    """Answers critical alerts; remembers when pruning could not help."""

    def __init__(
        self,
        run: Callable[[], Report],
        store_state: Callable[[], StoreState | None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._run = run
        self._store_state = store_state
        self._clock = clock
        self._stuck: _Stuck | None = None

    @property
    def waiting_for_change(self) -> bool:
        return self._stuck is not None

    def reset(self) -> None:
        """The alert cleared: the next one gets an emergency prune at once."""
        self._stuck = None

    def respond(
        self,
        where: str,
        rule: AlertRule,
        measure: Callable[[], DiskUsage | None],
    ) -> EmergencyResult | None:
        """An emergency prune unless nothing changed since one that could not help."""
        if self._stuck is not None:
            if self._store_state() == self._stuck.state:
                if not self._stuck.told:
                    self._stuck.told = True
                    log.info(
                        "critical disk alert on %s: nothing changed since the emergency prune "
                        "that could not clear it; the next one waits for a new spec generation, "
                        "images or containers added or removed, or the alert clearing",
                        where,
                    )
                return None
            log.info("critical disk alert on %s: the store changed; pruning again", where)
        before = measure()
        report = self._run()
        after = measure()
        cleared = after is not None and after.used_percent <= rule.percentage
        result = EmergencyResult(report, before, after, cleared)
        if report.outcome == "locked":
            log.warning("emergency prune skipped: another run holds the lock; retrying")
            return result
        if cleared:
            self._stuck = None
            log.info(
                "critical disk alert on %s cleared by the emergency prune: usage %s -> %s "
                "(rule: %s); removed %d image(s), reclaimed %s measured, %s estimated",
                where,
                _percent(before),
                _percent(after),
                rule.describe(),
                len(report.removed),
                human_bytes(report.measured_bytes),
                human_bytes(report.estimated_bytes),
            )
            return result
        self._stuck = _Stuck(self._store_state(), self._clock())
        why = f"the run failed: {report.error}" if report.outcome == "failed" else ""
        log.warning(
            "emergency prune could not clear the critical disk alert on %s: usage %s -> %s "
            "(rule: %s); removed %d image(s)%s. Space pruning may not touch: %s",
            where,
            _percent(before),
            _percent(after),
            rule.describe(),
            len(report.removed),
            f"; {why}" if why else "",
            explain_kept(report, after),
        )
        return result
