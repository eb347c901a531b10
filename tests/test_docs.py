"""Drift checks: the operator docs name every config key, report field and rule the code has."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from controller.config import CONFIG_KEYS
from controller.model import Image, Reason, Rule
from controller.report import OUTCOMES, Item, Report, StoreSummary

DOCS = Path(__file__).resolve().parents[1] / "docs"


def doc(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def full_report() -> Report:
    """A report with every field away from its default, so every optional key is emitted."""
    image = Image(
        id="ab" * 32,
        names=("registry.example.com/app/web:1",),
        is_manifest_list=True,
        unique_size=10,
    )
    item = Item.of(image, (Reason(Rule.UNREFERENCED, "no longer needed"),), "already gone")
    return Report(
        outcome="failed",
        started_at=1.0,
        finished_at=2.5,
        trigger="test",
        dry_run=True,
        error="Remove: boom",
        failed_state="Remove",
        states=["Idle", "Inventory", "Failed"],
        spec_generation="3",
        removed=[item],
        would_remove=[item],
        kept=[item],
        failures=[item],
        measured_bytes=5,
        estimated_bytes=10,
        rollback_ok=False,
        rollback_missing=["registry.example.com/app/web:0"],
        notes=["a note"],
        trace_id="0" * 31 + "1",
        stores=[StoreSummary("alice", "unix:///run/user/1000/podman/podman.sock", "skipped", "x")],
    )


def report_fields(document: dict[str, Any]) -> list[str]:
    """Top-level keys, plus "parent.child" for the keys of nested objects."""
    fields: list[str] = []
    for key, value in document.items():
        fields.append(key)
        if isinstance(value, dict):
            fields.extend(f"{key}.{sub}" for sub in value)
    return fields


def test_sample_report_sets_every_field() -> None:
    # A new Report field must be set here too, or its key could go unchecked.
    sample, default = full_report(), Report("pruned", 0.0, 0.0)
    unchanged = [
        f.name
        for f in dataclasses.fields(Report)
        if getattr(sample, f.name) == getattr(default, f.name)
    ]
    assert unchanged == []
    assert {"would_remove", "error", "failed_state", "notes", "trace_id"} <= set(sample.to_dict())


@pytest.mark.parametrize("key", list(CONFIG_KEYS))
def test_configuration_doc_has_a_table_row_for_every_key(key: str) -> None:
    rows = [line for line in doc("configuration.md").splitlines() if line.startswith("| `")]
    assert any(row.startswith(f"| `{key}` |") for row in rows), f"docs/configuration.md: {key}"


@pytest.mark.parametrize("field", report_fields(full_report().to_dict()))
def test_report_doc_names_every_report_field(field: str) -> None:
    text = doc("report.md")
    # "reclaimed_bytes" is documented through its children, `reclaimed_bytes.measured`
    assert f"`{field}`" in text or f"`{field}." in text, f"docs/report.md: {field}"


@pytest.mark.parametrize("field", list(full_report().removed[0].to_dict()))
def test_report_doc_names_every_item_field(field: str) -> None:
    assert f"| `{field}` |" in doc("report.md"), f"docs/report.md: item field {field}"


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_report_doc_explains_every_outcome(outcome: str) -> None:
    assert f"| `{outcome}` |" in doc("report.md"), f"docs/report.md: outcome {outcome}"


@pytest.mark.parametrize("rule", [rule.value for rule in Rule])
def test_pruning_doc_names_every_rule(rule: str) -> None:
    assert f"`{rule}`" in doc("pruning.md"), f"docs/pruning.md: rule {rule}"
