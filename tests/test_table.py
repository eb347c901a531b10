"""The human tables: one line per image, every rule named once."""

from __future__ import annotations

from controller.report import Item, Report
from controller.table import human_bytes, plan_table, summarize_reasons


def test_summarize_reasons_names_each_rule_once_and_counts_the_rest() -> None:
    reasons = (
        "referenced: current.json (generation 3) app 'shop': redis:7.2",
        "referenced: desired.json (generation 3) app 'shop': redis:7.2",
        "in-use: container web (abc, exited)",
        "referenced: rollback.json (generation 2) app 'shop': redis:7.2",
    )
    assert summarize_reasons(reasons) == (
        "referenced: current.json (generation 3) app 'shop': redis:7.2 (+2 more); "
        "in-use: container web (abc, exited)"
    )


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (None, 0, 999, 11_331, 2_500_000, 7 * 10**9)] == [
        "unknown",
        "0 B",
        "999 B",
        "11.3 KB",
        "2.5 MB",
        "7.0 GB",
    ]


def test_plan_table_lists_removals_then_kept_with_reasons() -> None:
    report = Report("dry-run", 0.0, 1.0, dry_run=True)
    report.would_remove = [Item("image", "a" * 64, ("reg/web:1",), 600, ("unreferenced: x",))]
    report.kept = [Item("image", "b" * 64, ("reg/web:2",), 700, ("retention: y",))]
    lines = plan_table(report).splitlines()
    assert lines[0].split() == ["DECISION", "IMAGE", "ID", "SIZE", "REASONS"]
    assert lines[1].split()[:4] == ["remove", "reg/web:1", "a" * 12, "600"]
    assert lines[1].endswith("unreferenced: x")
    assert lines[2].split()[:2] == ["keep", "reg/web:2"] and lines[2].endswith("retention: y")
    assert "1 to remove, 1 kept; about 600 B would be freed" in lines[-1]


def test_plan_table_of_a_failed_run_says_nothing_would_be_removed() -> None:
    report = Report(
        "failed",
        0.0,
        1.0,
        dry_run=True,
        error="Inventory: current.json: bad",
        failed_state="Inventory",
    )
    assert (
        plan_table(report) == "plan failed: Inventory: current.json: bad\nnothing would be removed"
    )
    report.dry_run = False
    assert plan_table(report) == "run failed: Inventory: current.json: bad\nnothing was removed"
