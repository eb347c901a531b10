"""Disk alert rules in the flightctl agent's model, and a monitor that samples them.

A rule (severity, percentage, duration) fires once usage stays ABOVE the
percentage for the whole duration and clears when usage is at or below it
(design.md section 2); usage% is the agent's formula (`DiskUsage.used_percent`).

Rules and the sampling interval come from edgeprune's configuration, else from
the Disk monitor in the applied device spec (`current.json` `spec.resources`),
else the agent's defaults. The monitored filesystems are the one holding
Podman's storage (graphRoot) plus configured `disk-paths`: that is the space
pruning can free, whatever path the agent itself watches.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from controller.config import Config, parse_duration_value
from controller.disk import DiskUsage, disk_usage


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True)
class AlertRule:
    severity: Severity
    percentage: float
    duration_seconds: float
    description: str = ""

    def describe(self) -> str:
        return f"{self.severity} above {self.percentage:g}% for {self.duration_seconds:g}s"


DEFAULT_RULES = (
    AlertRule(Severity.WARNING, 80, 30 * 60),
    AlertRule(Severity.CRITICAL, 90, 10 * 60),
)
DEFAULT_SAMPLING_SECONDS = 60.0


# --- parsing (config values and spec resources; ValueError says what is wrong) ---


def _duration(value: object, what: str) -> float:
    try:
        return parse_duration_value(value)
    except ValueError as error:
        raise ValueError(f"{what}: {error}") from None


def parse_sampling_interval(value: object, what: str = "sampling interval") -> float:
    seconds = _duration(value, what)
    if seconds <= 0:
        raise ValueError(f"{what}: must be more than 0s, got {value!r}")
    return seconds


_RULE_FIELDS = ("severity", "percentage", "duration", "description")


def _rule(raw: object, what: str) -> AlertRule:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{what}: expected a mapping with severity, percentage, duration")
    unknown = sorted(str(k) for k in raw if k not in _RULE_FIELDS)
    if unknown:
        raise ValueError(f"{what}: unknown field(s) {', '.join(unknown)}")
    severity = raw.get("severity")
    try:
        level = Severity(str(severity).lower()) if isinstance(severity, str) else None
    except ValueError:
        level = None
    if level is None:
        raise ValueError(f"{what}: severity must be Info, Warning or Critical, got {severity!r}")
    percentage = raw.get("percentage")
    if (
        isinstance(percentage, bool)
        or not isinstance(percentage, int | float)
        or not 0 <= percentage <= 100
    ):
        raise ValueError(f"{what}: percentage must be a number from 0 to 100, got {percentage!r}")
    if "duration" not in raw:
        raise ValueError(f"{what}: duration is missing")
    description = raw.get("description") or ""
    if not isinstance(description, str):
        raise ValueError(f"{what}: description must be a string")
    return AlertRule(level, float(percentage), _duration(raw["duration"], what), description)


def parse_alert_rules(value: object, what: str = "alert rules") -> tuple[AlertRule, ...]:
    """A list of {severity, percentage, duration[, description]}; one rule per severity."""
    if not isinstance(value, list | tuple):
        raise ValueError(f"{what}: expected a list of rules, got {type(value).__name__}")
    rules = tuple(_rule(raw, f"{what}[{index}]") for index, raw in enumerate(value))
    severities = [rule.severity for rule in rules]
    if doubled := sorted({s for s in severities if severities.count(s) > 1}):
        raise ValueError(f"{what}: more than one rule for severity {', '.join(doubled)}")
    return rules


@dataclass(frozen=True)
class DiskMonitorSpec:
    """A `monitorType: Disk` entry of a device spec's `resources`."""

    path: str
    sampling_seconds: float
    rules: tuple[AlertRule, ...]


def parse_disk_monitors(resources: object) -> tuple[tuple[DiskMonitorSpec, ...], tuple[str, ...]]:
    """The Disk monitors of `spec.resources`, and a problem per malformed entry.

    Never raises: alert rules do not decide what is kept, so a bad monitor
    must not stop pruning; it is skipped and its problem reported.
    """
    if resources is None:
        return (), ()
    if not isinstance(resources, list):
        return (), (f"spec.resources is {type(resources).__name__}, not a list",)
    monitors: list[DiskMonitorSpec] = []
    problems: list[str] = []
    for index, raw in enumerate(resources):
        what = f"spec.resources[{index}]"
        if not isinstance(raw, Mapping):
            problems.append(f"{what} is not an object")
            continue
        if raw.get("monitorType") != "Disk":
            continue  # CPU and Memory monitors are the agent's business
        try:
            path = raw.get("path")
            if not isinstance(path, str) or not path.startswith("/"):
                raise ValueError(f"{what}: path must be an absolute path, got {path!r}")
            interval = raw.get("samplingInterval")
            seconds = (
                DEFAULT_SAMPLING_SECONDS
                if interval is None
                else parse_sampling_interval(interval, f"{what}.samplingInterval")
            )
            rules = parse_alert_rules(raw.get("alertRules") or [], f"{what}.alertRules")
        except ValueError as error:
            problems.append(str(error))
            continue
        monitors.append(DiskMonitorSpec(path, seconds, rules))
    return tuple(monitors), tuple(problems)


# --- where the rules come from ---------------------------------------------------


@dataclass(frozen=True)
class DiskSettings:
    rules: tuple[AlertRule, ...]
    sampling_seconds: float
    paths: tuple[str, ...]  # Podman's storage first, then configured paths
    source: str  # where the rules came from, for the log

    def rule(self, severity: Severity) -> AlertRule | None:
        return next((r for r in self.rules if r.severity is severity), None)


def _contains(directory: str, path: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _spec_monitor(
    monitors: Sequence[DiskMonitorSpec], storage_path: str | None
) -> DiskMonitorSpec | None:
    """The monitor whose path holds Podman's storage (deepest first), else the first."""
    if storage_path:
        holding = [m for m in monitors if _contains(m.path, storage_path)]
        if holding:
            return max(holding, key=lambda m: len(m.path))
    return monitors[0] if monitors else None


def resolve_settings(
    config: Config, monitors: Sequence[DiskMonitorSpec], storage_path: str | None
) -> DiskSettings:
    spec = _spec_monitor(monitors, storage_path)
    if config.disk_alert_rules is not None:
        rules, source = config.disk_alert_rules, "configuration (disk-alert-rules)"
    elif spec is not None:
        rules, source = spec.rules, f"the device spec's Disk monitor of {spec.path}"
    else:
        rules, source = DEFAULT_RULES, "the agent's defaults"
    if config.disk_sampling_seconds is not None:
        sampling = config.disk_sampling_seconds
    else:
        sampling = spec.sampling_seconds if spec is not None else DEFAULT_SAMPLING_SECONDS
    paths = [storage_path] if storage_path else []
    paths += [str(path) for path in config.disk_paths]
    return DiskSettings(rules, sampling, tuple(dict.fromkeys(paths)), source)


# --- alert state -------------------------------------------------------------------


@dataclass(frozen=True)
class AlertChange:
    fired: bool  # True: the rule fired; False: it cleared
    path: str
    rule: AlertRule
    usage: DiskUsage

    def describe(self) -> str:
        verb = "fired" if self.fired else "cleared"
        return (
            f"{self.rule.severity} disk alert {verb} on {self.path}: usage "
            f"{self.usage.used_percent}% (rule: {self.rule.describe()})"
        )


class AlertTracker:
    """Per path and rule: when usage went above, and whether the alert fires. No I/O."""

    def __init__(self, rules: Iterable[AlertRule]) -> None:
        self.rules = tuple(rules)
        self._above_since: dict[tuple[str, Severity], float] = {}
        self._firing: set[tuple[str, Severity]] = set()

    def observe(self, usage: DiskUsage, now: float) -> list[AlertChange]:
        changes: list[AlertChange] = []
        for rule in self.rules:
            key = (usage.path, rule.severity)
            if usage.used_percent > rule.percentage:
                since = self._above_since.setdefault(key, now)
                if key not in self._firing and now - since >= rule.duration_seconds:
                    self._firing.add(key)
                    changes.append(AlertChange(True, usage.path, rule, usage))
            else:
                self._above_since.pop(key, None)
                if key in self._firing:
                    self._firing.discard(key)
                    changes.append(AlertChange(False, usage.path, rule, usage))
        return changes

    def firing(self, path: str, severity: Severity) -> bool:
        return (path, severity) in self._firing


class DiskMonitor:
    """Samples each distinct filesystem of `settings.paths` and tracks its alerts."""

    def __init__(self, settings: DiskSettings) -> None:
        self.settings = settings
        self.tracker = AlertTracker(settings.rules)

    def update(self, settings: DiskSettings) -> None:
        if settings.rules != self.settings.rules:
            self.tracker = AlertTracker(settings.rules)  # new rules start a new episode
        self.settings = settings

    def sample(self) -> list[DiskUsage]:
        """One usage per filesystem: a path on an already sampled device is skipped."""
        seen: set[int] = set()
        usages: list[DiskUsage] = []
        for path in self.settings.paths:
            try:
                device = os.stat(path).st_dev
            except OSError:
                continue  # not there (yet): nothing to watch
            if device in seen:
                continue
            usage = disk_usage(path)
            if usage is not None:
                seen.add(device)
                usages.append(usage)
        return usages

    def observe(self, usages: Iterable[DiskUsage], now: float) -> list[AlertChange]:
        return [change for usage in usages for change in self.tracker.observe(usage, now)]
