"""The public entry point: one pruning run, start to report, never raising.

A host agent embeds `Pruner` in its reconcile loop; the CLI uses the same
class. A run's failure is reported, logged and traced, and ends in the Failed
state; it is never raised into the caller.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from opentelemetry import metrics, trace

from controller.artifacts import ArtifactSource
from controller.config import Config
from controller.context import FreeRun, RunContext, RunControl
from controller.lock import LockBusy, RunLock
from controller.machine import (
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
    Report,
)
from controller.runreport import annotate, build_report, log_summary, trace_id
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
            report = build_report(ctx, started, self._clock(), final, self._machine.visited)
            annotate(span, report)
            report.trace_id = trace_id(span)
            log_summary(report)
        return report

    def _connect(self, target: StoreTarget) -> PodmanStore:
        return self._store_factory(dataclasses.replace(self.config, podman_url=target.url))
