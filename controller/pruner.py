"""The public entry point: one pruning run, start to report, never raising.

A host agent embeds `Pruner` in its reconcile loop; the CLI uses the same
class. A run's failure is reported, logged and traced, and ends in the Failed
state; it is never raised into the caller.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from controller.config import Config
from controller.context import RunContext
from controller.machine import (
    FAILED,
    INVENTORY,
    PLAN,
    REMOVE,
    VALIDATE,
    VERIFY_ROLLBACK,
    PruneMachine,
)
from controller.podman import PodmanStore
from controller.report import Item, Report, image_size, sort_items
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


def _default_store(config: Config) -> PodmanStore:
    return PodmanStore(config.podman_url)


class Pruner:
    """Prunes one Podman store against the agent's specs, by `config`.

    `run_once()` is synchronous and thread-safe (runs never overlap); it
    returns the run's `Report` and keeps it as `last_report`.
    """

    def __init__(
        self,
        config: Config,
        *,
        store_factory: StoreFactory = _default_store,
        clock: Callable[[], float] = time.time,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self.config = config
        self._store_factory = store_factory
        self._clock = clock
        self._tracer = trace.get_tracer("edgeprune", tracer_provider=tracer_provider)
        self._machine = PruneMachine(HANDLERS, tracer=self._tracer)
        self._lock = threading.Lock()
        self.last_report: Report | None = None

    @property
    def state(self) -> str:
        return self._machine.state

    def run_once(self, *, dry_run: bool = False, trigger: str = "manual") -> Report:
        with self._lock:
            try:
                report = self._run(dry_run=dry_run, trigger=trigger)
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
            return report

    def _run(self, *, dry_run: bool, trigger: str) -> Report:
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
        log.info("prune run started (trigger=%s%s)", trigger, ", dry run" if dry_run else "")
        with self._tracer.start_as_current_span(
            "edgeprune.run", attributes={"edgeprune.trigger": trigger, "edgeprune.dry_run": dry_run}
        ) as span:
            store = self._store_factory(self.config)
            ctx = RunContext(self.config, store, self._clock, dry_run=dry_run, trigger=trigger)
            try:
                final = self._machine.run(ctx, span)
            finally:
                store.close()
            report = self._report(ctx, started, final)
            _annotate(span, report)
            report.trace_id = _trace_id(span)
        _log_summary(report)
        return report

    def _report(self, ctx: RunContext, started: float, final: str) -> Report:
        failed = final == FAILED
        if failed:
            outcome = "failed"
        elif ctx.dry_run:
            outcome = "dry-run"
        elif ctx.outcomes:
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
        if ctx.plan is not None:
            removed, kept, failures = sort_items(ctx.plan.decisions, ctx.outcomes)
            report.removed, report.kept, report.failures = removed, kept, failures
            if ctx.dry_run:
                report.would_remove = [Item.of(d.image, d.reasons) for d in ctx.plan.removals]
        report.estimated_bytes = sum(
            image_size(o.image) for o in ctx.outcomes if o.status == "removed"
        )
        if ctx.disk_before is not None and ctx.disk_after is not None:
            report.measured_bytes = ctx.disk_after.free_bytes - ctx.disk_before.free_bytes
        report.rollback_missing = list(ctx.rollback_missing)
        report.rollback_ok = not ctx.rollback_missing and ctx.failed_state not in (
            "VerifyRollback",
            "Validate",
        )
        return report


def _annotate(span: trace.Span, report: Report) -> None:
    span.set_attributes(
        {
            "edgeprune.outcome": report.outcome,
            "edgeprune.spec_generation": report.spec_generation,
            "edgeprune.images.removed": len(report.removed),
            "edgeprune.images.kept": len(report.kept),
            "edgeprune.images.failed": len(report.failures),
            "edgeprune.bytes.estimated": report.estimated_bytes,
            "edgeprune.rollback.ok": report.rollback_ok,
        }
    )
    if report.measured_bytes is not None:  # attributes cannot be null
        span.set_attribute("edgeprune.bytes.measured", report.measured_bytes)
    if report.outcome == "failed":
        span.set_status(Status(StatusCode.ERROR, report.error or "failed"))


def _trace_id(span: trace.Span) -> str | None:
    context = span.get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def _log_summary(report: Report) -> None:
    for item in report.failures:
        log.warning(
            "failed to remove %s (%s): %s",
            ", ".join(item.names) or "<none>",
            item.id[:12],
            item.detail,
        )
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
    if report.outcome == "failed":
        log.warning(message + " error=%s", *args, report.error)
    else:
        log.info(message, *args)
