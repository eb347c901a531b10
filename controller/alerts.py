"""The worker's disk alerts: where the rules come from, samples, critical responses.

`PruneService`'s worker calls `refresh()` after each run (the applied spec's
Disk monitor and Podman's storage path may have changed), `check()` every
sampling interval when it monitors the disk itself, and `answer_host()` for
alerts the host reported. A critical alert gets an emergency prune through
controller/emergency.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from controller.disk import DiskUsage, disk_usage
from controller.diskmon import (
    DEFAULT_RULES,
    AlertRule,
    DiskMonitor,
    DiskMonitorSpec,
    DiskSettings,
    Severity,
    resolve_settings,
)
from controller.emergency import EmergencyResponder, StoreState
from controller.pruner import Pruner, StoreFactory
from controller.report import Report
from controller.spec import CURRENT_FILE, SpecError, read_generations, read_spec_file

log = logging.getLogger("edgeprune")

_DEFAULT_CRITICAL = next(r for r in DEFAULT_RULES if r.severity is Severity.CRITICAL)


class DiskAlerts:
    """Disk alert state of one PruneService; its worker thread is the only user."""

    def __init__(
        self,
        pruner: Pruner,
        store_factory: StoreFactory,
        clock: Callable[[], float],
        emergency_run: Callable[[], Report],
        *,
        announce: bool,
        stopping: Callable[[], bool],
    ) -> None:
        self._pruner = pruner
        self._store_factory = store_factory
        self._clock = clock
        self._announce = announce  # log the settings in use (the daemon)
        self._stopping = stopping
        self._spec_monitors: tuple[DiskMonitorSpec, ...] = ()
        self._spec_problems: tuple[str, ...] = ()
        self._told_disabled = False
        self.monitor = DiskMonitor(self._settings())
        self._responder = EmergencyResponder(emergency_run, self._store_state, clock)

    @property
    def settings(self) -> DiskSettings:
        return self.monitor.settings

    def refresh(self) -> None:
        """Re-read the applied spec's Disk monitor; log what changed."""
        current = self._pruner.config.spec_dir / CURRENT_FILE
        try:
            spec = read_spec_file(current, required=True)
        except SpecError:
            pass  # the run reports it; keep the monitors we had
        else:
            self._spec_monitors = spec.disk_monitors
            if spec.resource_problems != self._spec_problems:
                for problem in spec.resource_problems:
                    log.warning("ignored a malformed disk monitor in %s: %s", current, problem)
                self._spec_problems = spec.resource_problems
        settings = self._settings()
        if settings != self.monitor.settings:
            self.monitor.update(settings)
            if self._announce:
                log.info(
                    "disk monitor: %s every %gs; rules from %s: %s",
                    ", ".join(settings.paths) or "no path known yet",
                    settings.sampling_seconds,
                    settings.source,
                    "; ".join(rule.describe() for rule in settings.rules) or "none",
                )

    def check(self) -> None:
        changes = self.monitor.observe(self.monitor.sample(), self._clock())
        for change in changes:
            if change.fired:
                log.warning("%s", change.describe())
            else:
                log.info("%s", change.describe())
                if change.rule.severity is Severity.CRITICAL:
                    self._responder.reset()
        rule = self.monitor.settings.rule(Severity.CRITICAL)
        if rule is None:
            return
        for path in self.monitor.settings.paths:
            if self._stopping() or not self.monitor.tracker.firing(path, Severity.CRITICAL):
                continue
            if not self._may_prune():
                return
            result = self._responder.respond(path, rule, lambda path=path: disk_usage(path))
            if result is not None and result.after is not None:
                # The fresh sample: the alert clears now if the prune brought usage down.
                for change in self.monitor.observe([result.after], self._clock()):
                    if not change.fired and change.rule.severity is not Severity.CRITICAL:
                        log.info("%s", change.describe())

    def answer_host(self, alerts: Mapping[str, object]) -> bool:
        """Alerts the host reported; True when an emergency run happened."""
        rule = self._critical_rule()
        usages: dict[str, float] = {}
        for severity, usage in alerts.items():
            if severity not in tuple(Severity) or isinstance(usage, bool):
                log.warning("ignored a disk alert of severity %r, usage %r", severity, usage)
                continue
            try:
                usages[severity] = float(usage)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                log.warning("ignored a disk alert of severity %r, usage %r", severity, usage)
        if Severity.CRITICAL not in usages:
            if any(value <= rule.percentage for value in usages.values()):
                self._responder.reset()  # the critical episode is over
            return False
        usage = usages[Severity.CRITICAL]
        log.warning("the host reported a critical disk alert: usage %g%%", usage)
        if not self._may_prune():
            return False
        where = self._pruner.storage_path or "Podman's storage"
        result = self._responder.respond(where, rule, self._measure_storage)
        return result is not None and result.report.outcome != "locked"

    def _critical_rule(self) -> AlertRule:
        return self.monitor.settings.rule(Severity.CRITICAL) or _DEFAULT_CRITICAL

    def _may_prune(self) -> bool:
        if self._pruner.config.enabled:
            self._told_disabled = False
            return True
        if not self._told_disabled:
            self._told_disabled = True
            log.warning("critical disk alert: pruning is disabled by configuration; nothing done")
        return False

    def _measure_storage(self) -> DiskUsage | None:
        return disk_usage(self._pruner.storage_path)

    def _store_state(self) -> StoreState | None:
        """The applied generation and the store's images and containers; None if unknown."""
        config = self._pruner.config
        try:
            generation = read_generations(config.spec_dir)[0]
            store = self._store_factory(config)
            try:
                inventory = store.inventory(self._clock())
            finally:
                store.close()
        except Exception as error:  # unknown state: wait for it to become known
            log.debug("store state unknown: %s", error)
            return None
        return StoreState(
            generation,
            frozenset(image.id for image in inventory.images),
            frozenset(container.id for container in inventory.containers),
        )

    def _settings(self) -> DiskSettings:
        return resolve_settings(self._pruner.config, self._spec_monitors, self._pruner.storage_path)
