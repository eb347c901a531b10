"""The public entry point: one pruning run, start to report, never raising.

A host agent embeds `Pruner` in its reconcile loop; the CLI uses the same
class. A run's failure is reported, logged and traced, and ends in the Failed
state; it is never raised into the caller.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable

from opentelemetry import metrics, trace
from opentelemetry.trace import Status, StatusCode

from controller.artifacts import ArtifactSource
from controller.config import Config
from controller.context import FreeRun, RunContext, RunControl, StoreRun
from controller.lock import LockBusy, RunLock
from controller.machine import (
    FAILED,
    INVENTORY,
    PLAN,
    REMOVE,
    VALIDATE,
    VERIFY_ROLLBACK,
    PruneMachine,
)
from controller.metrics import RunMetrics
from controller.podman import PodmanStore
from controller.report import (
    Item,
    Report,
    StoreSummary,
    image_size,
    sort_artifact_items,
    sort_items,
)
from controller.stores import StoreTarget
from states import inventory, plan, remove, validate, verify_rollback

log = logging.getLogger("edgeprune")

HANDLERS = {
    INVENTORY: inventory.handle,
    PLAN: plan.handle,
    VERIFY_ROLLBACK: verify_rollback.handle,
    REMOVE: remove.handle,
    VALIDATE: validate.handle,
}

StoreFactory = Callable[[Config], PodmanStore]
ArtifactSourceFactory = Callable[[StoreTarget], ArtifactSource]


def _default_store(config: Config) -> PodmanStore:
    return PodmanStore(config.podman_url)


def _default_artifact_source(_target: StoreTarget) -> ArtifactSource:
    # The plain `podman` CLI; ArtifactStore uses it only when it reaches the
    # very store the service serves (same graphRoot), else reports "not supported".
    return ArtifactSource()


class Pruner:
    """Prunes the agent's Podman store, and each `runAs` user's, against the agent's specs.

    `store_factory` connects to a store: it is given `config` with
    `podman_url` set to that store's URL. `artifact_source` says how each
    store's artifacts are reached besides its REST API (the CLI, Podman 5.4-5.5).

    `run_once()` is synchronous and thread-safe (runs never overlap); it
    returns the run's `Report` and keeps it as `last_report`.
    """

    def __init__(
        self,
        config: Config,
        *,
        store_factory: StoreFactory = _default_store,
        artifact_source: ArtifactSourceFactory = _default_artifact_source,
        clock: Callable[[], float] = time.time,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        on_report: Callable[[Report], None] | None = None,
    ) -> None:
        """`on_report` is called with each run's report, after its metrics are
        recorded (the CLI and daemon pass `Telemetry.on_report`)."""
        self.config = config
        self._store_factory = store_factory
        self._artifact_source = artifact_source
        self._clock = clock
        self._tracer = trace.get_tracer("edgeprune", tracer_provider=tracer_provider)
        self._metrics = RunMetrics(meter_provider)
        self._on_report = on_report
        self._machine = PruneMachine(
            HANDLERS, tracer=self._tracer, on_transition=self._metrics.record_transition
        )
        self._lock = threading.Lock()
        self.last_report: Report | None = None
        self.storage_path: str | None = None  # Podman's graphRoot, as the last run saw it

    @property
    def state(self) -> str:
        return self._machine.state

    def run_once(
        self,
        *,
        dry_run: bool = False,
        trigger: str = "manual",
        emergency: bool = False,
        control: RunControl | None = None,
    ) -> Report:
        """One run. `emergency` (a critical disk alert) ignores min-age only;
        `control` lets a host hold off removals or stop the run (PruneService).
        A run that finds the state dir's run lock taken is skipped: "locked".
        """
        with self._lock:
            try:
                report = self._run(
                    dry_run=dry_run,
                    trigger=trigger,
                    emergency=emergency,
                    control=control or FreeRun(),
                )
            except Exception as error:  # last line of defence: never raise into the agent
                log.exception("prune run crashed")
                now = self._clock()
                report = Report(
                    "failed",
                    now,
                    now,
                    trigger=trigger,
                    dry_run=dry_run,
                    error=f"internal error: {error}",
                )
            self.last_report = report
            self._observe(report)
            return report

    def _observe(self, report: Report) -> None:
        try:  # telemetry must never break a run or raise into the agent
            self._metrics.record_run(report)
            if self._on_report is not None:
                self._on_report(report)
        except Exception:
            log.exception("recording the run's metrics failed")

    def _run(self, *, dry_run: bool, trigger: str, emergency: bool, control: RunControl) -> Report:
        started = self._clock()
        if not self.config.enabled:
            log.info("pruning is disabled by configuration; nothing done")
            return Report(
                "disabled",
                started,
                self._clock(),
                trigger=trigger,
                dry_run=dry_run,
                states=[self._machine.state],
            )
        lock = RunLock(self.config.state_dir)
        try:
            lock.acquire(trigger, started)
        except LockBusy as busy:
            log.warning("prune run skipped (trigger=%s): %s", trigger, busy)
            return Report(
                "locked",
                started,
                self._clock(),
                trigger=trigger,
                dry_run=dry_run,
                states=[self._machine.state],
                notes=[f"skipped: {busy}"],
            )
        except OSError as error:  # fail safe: no lock, no run
            log.warning("prune run not started: cannot take the run lock %s: %s", lock.path, error)
            return Report(
                "failed",
                started,
                self._clock(),
                trigger=trigger,
                dry_run=dry_run,
                error=f"cannot take the run lock {lock.path}: {error}",
                states=[self._machine.state],
            )
        try:
            return self._locked_run(started, dry_run, trigger, emergency, control)
        finally:
            lock.release()

    def _locked_run(
        self, started: float, dry_run: bool, trigger: str, emergency: bool, control: RunControl
    ) -> Report:
        attributes = {
            "edgeprune.trigger": trigger,
            "edgeprune.dry_run": dry_run,
            "edgeprune.emergency": emergency,
        }
        with self._tracer.start_as_current_span("edgeprune.run", attributes=attributes) as span:
            # Logged inside the run span, so the line carries the run's trace ID.
            log.info(
                "prune run started (trigger=%s%s%s)",
                trigger,
                ", dry run" if dry_run else "",
                ", emergency: min-age not applied" if emergency else "",
                extra={"fields": {"event": "run.started", "trigger": trigger, "dry_run": dry_run}},
            )
            store = self._store_factory(self.config)
            store.tracer = self._tracer  # Podman call spans join the run's trace
            ctx = RunContext(
                self.config,
                store,
                self._clock,
                dry_run=dry_run,
                trigger=trigger,
                emergency=emergency,
                control=control,
                connect=self._connect,
                artifact_source=self._artifact_source,
            )
            if emergency:
                ctx.notes.append("emergency run (critical disk alert): min-age not applied")
            try:
                final = self._machine.run(ctx, span)
            finally:
                for run in ctx.stores:
                    if run.store is not None:
                        run.store.close()
            if ctx.inventory is not None and ctx.inventory.storage_path:
                self.storage_path = ctx.inventory.storage_path
            report = self._report(ctx, started, final)
            _annotate(span, report)
            report.trace_id = _trace_id(span)
            _log_summary(report)
        return report

    def _connect(self, target: StoreTarget) -> PodmanStore:
        return self._store_factory(dataclasses.replace(self.config, podman_url=target.url))

    def _report(self, ctx: RunContext, started: float, final: str) -> Report:
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
            self._clock(),
            trigger=ctx.trigger,
            dry_run=ctx.dry_run,
            error=ctx.error,
            failed_state=ctx.failed_state,
            states=list(self._machine.visited),
            notes=list(ctx.notes),
        )
        if ctx.specs is not None:
            report.spec_generation = ctx.specs.current.generation
        for run in ctx.stores:
            _report_store(report, run, ctx.dry_run)
        report.measured_bytes = _measured(ctx.stores)
        # None: the run ended before the pre-check, so the rollback was not checked.
        checked = VERIFY_ROLLBACK in self._machine.visited
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


def _annotate(span: trace.Span, report: Report) -> None:
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


def _trace_id(span: trace.Span) -> str | None:
    context = span.get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def _log_summary(report: Report) -> None:
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
