"""Disk alert rules, where they come from, the alert tracker, and the no-spin responder."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from controller.config import Config
from controller.disk import DiskUsage
from controller.diskmon import (
    DEFAULT_RULES,
    DEFAULT_SAMPLING_SECONDS,
    AlertRule,
    AlertTracker,
    DiskMonitor,
    DiskMonitorSpec,
    Severity,
    parse_alert_rules,
    parse_disk_monitors,
    resolve_settings,
)
from controller.emergency import EmergencyResponder, StoreState, explain_kept
from controller.report import Item, Report

CRITICAL_90 = AlertRule(Severity.CRITICAL, 90, 600)
GB = 10**9


def used(percent: int, path: str = "/var/lib/containers") -> DiskUsage:
    return DiskUsage(path, 100 * GB, (100 - percent) * GB)


# --- parsing ------------------------------------------------------------------------


def test_rules_parse_in_the_agents_model() -> None:
    rules = parse_alert_rules(
        [
            {"severity": "Critical", "percentage": 90, "duration": "10m", "description": "full"},
            {"severity": "warning", "percentage": 75.5, "duration": 30},
        ]
    )
    assert rules == (
        AlertRule(Severity.CRITICAL, 90.0, 600.0, "full"),
        AlertRule(Severity.WARNING, 75.5, 30.0),
    )


@pytest.mark.parametrize(
    ("rules", "problem"),
    [
        ("critical", "expected a list of rules"),
        ([{"severity": "Fatal", "percentage": 90, "duration": "1m"}], "severity must be Info"),
        ([{"severity": "Critical", "percentage": 101, "duration": "1m"}], "from 0 to 100"),
        ([{"severity": "Critical", "percentage": True, "duration": "1m"}], "from 0 to 100"),
        ([{"severity": "Critical", "percentage": 90}], "duration is missing"),
        ([{"severity": "Critical", "percentage": 90, "duration": "soon"}], "bad duration"),
        ([{"severity": "Critical", "percentage": 90, "duration": "1m", "for": 1}], "unknown field"),
        (
            [
                {"severity": "Critical", "percentage": 90, "duration": "1m"},
                {"severity": "CRITICAL", "percentage": 95, "duration": "1m"},
            ],
            "more than one rule for severity critical",
        ),
    ],
)
def test_bad_rules_say_what_is_wrong(rules: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_alert_rules(rules)


def test_spec_disk_monitors_parse_and_malformed_ones_are_reported_not_raised() -> None:
    resources = [
        {"monitorType": "CPU", "samplingInterval": "1m", "alertRules": []},
        {
            "monitorType": "Disk",
            "path": "/var",
            "samplingInterval": "30s",
            "alertRules": [{"severity": "Critical", "percentage": 85, "duration": "5m"}],
        },
        {"monitorType": "Disk", "path": "relative", "alertRules": []},
        {"monitorType": "Disk", "path": "/sysroot", "alertRules": [{"severity": "Critical"}]},
        "nonsense",
    ]
    monitors, problems = parse_disk_monitors(resources)
    assert monitors == (DiskMonitorSpec("/var", 30.0, (AlertRule(Severity.CRITICAL, 85, 300),)),)
    assert problems == (
        "spec.resources[2]: path must be an absolute path, got 'relative'",
        "spec.resources[3].alertRules[0]: percentage must be a number from 0 to 100, got None",
        "spec.resources[4] is not an object",
    )
    assert parse_disk_monitors({"monitorType": "Disk"}) == (
        (),
        ("spec.resources is dict, not a list",),
    )
    assert parse_disk_monitors(None) == ((), ())


# --- where rules come from ----------------------------------------------------------------


SPEC_VAR = DiskMonitorSpec("/var", 30.0, (AlertRule(Severity.CRITICAL, 85, 300),))
SPEC_CONTAINERS = DiskMonitorSpec(
    "/var/lib/containers", 10.0, (AlertRule(Severity.CRITICAL, 70, 60),)
)


def test_configuration_wins_over_the_spec_which_wins_over_the_defaults() -> None:
    storage = "/var/lib/containers/storage"
    own = (AlertRule(Severity.CRITICAL, 95, 0),)
    configured = resolve_settings(
        Config(disk_alert_rules=own, disk_sampling_seconds=5.0), [SPEC_VAR], storage
    )
    assert (configured.rules, configured.sampling_seconds) == (own, 5.0)
    assert configured.source == "configuration (disk-alert-rules)"
    from_spec = resolve_settings(Config(), [SPEC_VAR], storage)
    assert (from_spec.rules, from_spec.sampling_seconds) == (SPEC_VAR.rules, 30.0)
    assert from_spec.source == "the device spec's Disk monitor of /var"
    defaults = resolve_settings(Config(), [], storage)
    assert (defaults.rules, defaults.sampling_seconds) == (DEFAULT_RULES, DEFAULT_SAMPLING_SECONDS)
    assert defaults.rule(Severity.CRITICAL) == AlertRule(Severity.CRITICAL, 90, 600)
    assert defaults.rule(Severity.INFO) is None


def test_the_spec_monitor_holding_podmans_storage_is_chosen() -> None:
    storage = "/var/lib/containers/storage"
    chosen = resolve_settings(Config(), [SPEC_VAR, SPEC_CONTAINERS], storage)
    assert chosen.rules == SPEC_CONTAINERS.rules  # the deepest path that holds the storage
    elsewhere = DiskMonitorSpec("/srv", 1.0, ())
    assert resolve_settings(Config(), [elsewhere, SPEC_VAR], "/data/x").rules == ()  # first


def test_paths_are_the_storage_then_configured_ones_without_repeats() -> None:
    config = Config(disk_paths=(Path("/var"), Path("/data/podman")))
    settings = resolve_settings(config, [], "/data/podman")
    assert settings.paths == ("/data/podman", "/var")
    assert resolve_settings(Config(), [], None).paths == ()


# --- the tracker (the agent's semantics) --------------------------------------------------


def test_fires_only_after_usage_stays_above_for_the_whole_duration() -> None:
    tracker = AlertTracker([CRITICAL_90])
    assert tracker.observe(used(95), 0.0) == []
    assert tracker.observe(used(95), 599.0) == []
    [fired] = tracker.observe(used(91), 600.0)
    assert fired.fired and fired.rule == CRITICAL_90 and fired.usage.used_percent == 91
    assert tracker.firing("/var/lib/containers", Severity.CRITICAL)
    assert tracker.observe(used(99), 700.0) == []  # fires once per episode


def test_a_dip_to_the_percentage_restarts_the_duration_and_clears() -> None:
    tracker = AlertTracker([CRITICAL_90])
    tracker.observe(used(95), 0.0)
    assert tracker.observe(used(90), 300.0) == []  # at the percentage: not above
    assert tracker.observe(used(95), 600.0) == []  # the duration starts again
    assert tracker.observe(used(95), 1199.0) == []
    [fired] = tracker.observe(used(95), 1200.0)
    [cleared] = tracker.observe(used(90), 1300.0)
    assert fired.fired and not cleared.fired
    assert cleared.describe() == (
        "critical disk alert cleared on /var/lib/containers: usage 90% "
        "(rule: critical above 90% for 600s)"
    )
    assert not tracker.firing("/var/lib/containers", Severity.CRITICAL)


def test_zero_duration_fires_on_the_first_sample_above_and_paths_are_separate() -> None:
    rules = [AlertRule(Severity.WARNING, 50, 0), AlertRule(Severity.CRITICAL, 80, 0)]
    tracker = AlertTracker(rules)
    changes = tracker.observe(used(85, "/a"), 0.0) + tracker.observe(used(60, "/b"), 0.0)
    assert [(c.path, c.rule.severity) for c in changes] == [
        ("/a", Severity.WARNING),
        ("/a", Severity.CRITICAL),
        ("/b", Severity.WARNING),
    ]


def test_monitor_samples_each_filesystem_once(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    settings = resolve_settings(
        Config(disk_paths=(tmp_path / "a", tmp_path / "missing")), [], str(tmp_path)
    )
    usages = DiskMonitor(settings).sample()
    assert [u.path for u in usages] == [str(tmp_path)]  # "a" is on the same filesystem


# --- the responder -------------------------------------------------------------------------


def kept_report(outcome: str = "nothing-to-prune") -> Report:
    return Report(
        outcome,
        0.0,
        1.0,
        trigger="disk-critical",
        kept=[
            Item("image", "a" * 64, ("web:2",), 3_000_000, ("retention: previous version",)),
            Item("image", "b" * 64, ("web:3",), 4_000_000, ("referenced: current",)),
            Item("image", "c" * 64, ("db:1",), 2_000_000, ("referenced: current", "in-use: x")),
        ],
    )


def test_explain_groups_kept_images_by_reason_with_sizes() -> None:
    usage = DiskUsage("/var", 100_000_000, 10_000_000)
    assert explain_kept(kept_report(), usage) == (
        "referenced: 2 image(s), 6.0 MB (web:3; db:1); retention: 1 image(s), 3.0 MB (web:2); "
        "other data on /var's filesystem (not image content pruning may remove): "
        "81.0 MB of 90.0 MB used"
    )


class Store:
    """What the responder may see of the store; tests change it by hand."""

    def __init__(self) -> None:
        self.state = StoreState("7", frozenset({"a", "b"}), frozenset())

    def __call__(self) -> StoreState:
        return self.state


def test_responder_does_not_spin_and_retries_once_something_changes(caplog) -> None:
    store, runs, samples = Store(), [], iter([95, 95, 95, 95, 95, 40])
    responder = EmergencyResponder(lambda: runs.append(1) or kept_report(), store)

    def measure() -> DiskUsage:
        return used(next(samples))

    caplog.set_level(logging.INFO, logger="edgeprune")
    result = responder.respond("/var/lib/containers", CRITICAL_90, measure)
    assert result is not None and not result.cleared and len(runs) == 1
    assert "could not clear the critical disk alert on /var/lib/containers: usage 95% -> 95%" in (
        caplog.text
    )
    for _ in range(5):
        assert responder.respond("/var/lib/containers", CRITICAL_90, measure) is None
    assert len(runs) == 1 and caplog.text.count("nothing changed since") == 1

    store.state = StoreState("8", store.state.image_ids, frozenset())  # a new generation
    result = responder.respond("/var/lib/containers", CRITICAL_90, measure)
    assert result is not None and len(runs) == 2 and not result.cleared

    store.state = StoreState("8", frozenset({"a"}), frozenset())  # an image went away
    result = responder.respond("/var/lib/containers", CRITICAL_90, measure)
    assert result is not None and result.cleared and len(runs) == 3
    assert "cleared by the emergency prune: usage 95% -> 40%" in caplog.text


def test_responder_reset_by_a_cleared_alert_and_not_stuck_when_locked() -> None:
    store, runs = Store(), []
    outcome = ["nothing-to-prune"]
    responder = EmergencyResponder(lambda: runs.append(1) or kept_report(outcome[0]), store)
    responder.respond("/v", CRITICAL_90, lambda: used(95))
    assert responder.waiting_for_change
    responder.reset()  # the alert cleared (and may fire again)
    outcome[0] = "locked"
    responder.respond("/v", CRITICAL_90, lambda: used(95))
    assert not responder.waiting_for_change  # another run held the lock: try again
    responder.respond("/v", CRITICAL_90, lambda: used(95))
    assert len(runs) == 3
