"""A finished run as its report, its root span's attributes and its end log line."""

from __future__ import annotations

import logging
import os

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from controller.context import RunContext, StoreRun
from controller.machine import FAILED, VALIDATE, VERIFY_ROLLBACK
from controller.report import (
    Item,
    Report,
    StoreSummary,
    image_size,
    sort_artifact_items,
    sort_items,
)

log = logging.getLogger("edgeprune")


def build_report(
    ctx: RunContext, started: float, finished: float, final: str, visited: list[str]
) -> Report:
    """The report of a finished run: outcome, items of every store, space, rollback check."""
    failed = final == FAILED
    if failed:
        outcome = "failed"
    elif ctx.dry_run:
        outcome = "dry-run"
    elif ctx.stopped:
        outcome = "stopped"
    elif any(run.attempted for run in ctx.stores):
        outcome = "pruned"
    else:
        outcome = "nothing-to-prune"
    report = Report(
        outcome,
        started,
        finished,
        trigger=ctx.trigger,
        dry_run=ctx.dry_run,
        error=ctx.error,
        failed_state=ctx.failed_state,
        states=list(visited),
        notes=list(ctx.notes),
    )
    if ctx.specs is not None:
        report.spec_generation = ctx.specs.current.generation
    for run in ctx.stores:
        _report_store(report, run, ctx.dry_run)
    report.measured_bytes = _measured(ctx.stores)
    # None: the run ended before the pre-check, so the rollback was not checked.
    checked = VERIFY_ROLLBACK in visited
    report.rollback_ok = (
        not report.rollback_missing and ctx.failed_state not in (VERIFY_ROLLBACK, VALIDATE)
        if checked
        else None
    )
    return report


def _report_store(report: Report, run: StoreRun, dry_run: bool) -> None:
    """Add one store's items, estimate, missing rollback images and summary."""
    user, plan = run.user, run.plan
    removed: list[Item] = []
    kept: list[Item] = []
    failed: list[Item] = []
    if plan is not None:
        planned = {d.image.id for d in plan.decisions}
        earlier = tuple(  # removed before a replan, so absent from the final plan
            run.removal_decisions[o.image.id]
            for o in run.outcomes
            if o.image.id not in planned and o.image.id in run.removal_decisions
        )
        removed, kept, failed = sort_items(earlier + plan.decisions, run.outcomes, user)
        planned_artifacts = {(d.artifact.name, d.artifact.digest) for d in plan.artifact_decisions}
        earlier_artifacts = tuple(
            run.artifact_removal_decisions[key]
            for o in run.artifact_outcomes
            if (key := (o.artifact.name, o.artifact.digest)) not in planned_artifacts
            and key in run.artifact_removal_decisions
        )
        more = sort_artifact_items(
            earlier_artifacts + plan.artifact_decisions, run.artifact_outcomes, user
        )
        removed, kept, failed = removed + more[0], kept + more[1], failed + more[2]
        if dry_run:
            report.would_remove += [Item.of(d.image, d.reasons, store=user) for d in plan.removals]
            report.would_remove += [
                Item.of_artifact(d.artifact, d.reasons, store=user) for d in plan.artifact_removals
            ]
    report.removed += removed
    report.kept += kept
    report.failures += failed
    report.estimated_bytes += sum(
        image_size(o.image) for o in run.outcomes if o.status == "removed"
    ) + sum(o.artifact.size for o in run.artifact_outcomes if o.status == "removed")
    suffix = "" if run.target.agent else f" (store {user})"
    report.rollback_missing += [ref + suffix for ref in run.rollback_missing]
    listing, inventory = run.listing, run.inventory
    report.stores.append(
        StoreSummary(
            user=user,
            url=run.target.url,
            status="skipped" if run.skipped is not None else "pruned",
            reason=run.skipped or "",
            artifacts=(
                ""
                if inventory is None
                else listing.access.value
                if listing is not None
                else "unlisted"
            ),
            images=len(inventory.images) if inventory is not None else 0,
            artifact_count=len(listing.artifacts) if listing is not None else 0,
            removed=len(removed),
            kept=len(kept),
            failed=len(failed),
        )
    )


def _measured(runs: list[StoreRun]) -> int | None:
    """Free space gained, summed once per filesystem (stores may share one)."""
    gained: dict[object, int] = {}
    for run in runs:
        before, after = run.disk_before, run.disk_after
        if before is None or after is None:
            continue
        try:
            filesystem: object = os.stat(before.path).st_dev
        except OSError:
            filesystem = before.path
        gained.setdefault(filesystem, after.free_bytes - before.free_bytes)
    return sum(gained.values()) if gained else None


def annotate(span: trace.Span, report: Report) -> None:
    span.set_attributes(
        {
            "edgeprune.outcome": report.outcome,
            "edgeprune.spec_generation": report.spec_generation,
            "edgeprune.images.removed": _count(report.removed, artifacts=False),
            "edgeprune.images.kept": _count(report.kept, artifacts=False),
            "edgeprune.images.failed": _count(report.failures, artifacts=False),
            "edgeprune.artifacts.removed": _count(report.removed, artifacts=True),
            "edgeprune.artifacts.kept": _count(report.kept, artifacts=True),
            "edgeprune.artifacts.failed": _count(report.failures, artifacts=True),
            "edgeprune.bytes.estimated": report.estimated_bytes,
            "edgeprune.rollback.missing": list(report.rollback_missing),
            "edgeprune.stores": [s.user for s in report.stores if s.status != "skipped"],
            "edgeprune.stores.skipped": [s.user for s in report.stores if s.status == "skipped"],
        }
    )
    if report.rollback_ok is not None:  # absent: the pre-check never ran
        span.set_attribute("edgeprune.rollback.ok", report.rollback_ok)
    if report.measured_bytes is not None:  # attributes cannot be null
        span.set_attribute("edgeprune.bytes.measured", report.measured_bytes)
    if report.outcome == "failed":
        span.set_status(Status(StatusCode.ERROR, report.error or "failed"))


def _count(items: list[Item], *, artifacts: bool) -> int:
    return sum(1 for item in items if (item.kind == "artifact") == artifacts)


def trace_id(span: trace.Span) -> str | None:
    context = span.get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def log_summary(report: Report) -> None:
    # Each failed removal was logged by Remove when it happened; the end line counts them.
    measured = "unknown" if report.measured_bytes is None else f"{report.measured_bytes}"
    message = (
        "prune run finished: outcome=%s removed=%d kept=%d failed=%d "
        "reclaimed_measured=%s reclaimed_estimated=%d duration=%.3fs started=%s finished=%s"
    )
    args = (
        report.outcome,
        len(report.removed),
        len(report.kept),
        len(report.failures),
        measured,
        report.estimated_bytes,
        report.duration_seconds,
        report.to_dict()["started_at"],
        report.to_dict()["finished_at"],
    )
    fields = {
        "event": "run.finished",
        "outcome": report.outcome,
        "trigger": report.trigger,
        "removed": len(report.removed),
        "kept": len(report.kept),
        "failed": len(report.failures),
        "reclaimed_measured_bytes": report.measured_bytes,
        "reclaimed_estimated_bytes": report.estimated_bytes,
        "duration_seconds": report.duration_seconds,
    }
    if report.outcome == "failed":
        fields["error"] = report.error
        log.warning(message + " error=%s", *args, report.error, extra={"fields": fields})
    else:
        log.info(message, *args, extra={"fields": fields})
