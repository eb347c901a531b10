"""The embedding API: edgeprune running by itself next to a host agent.

    service = PruneService(load_config())
    service.start()
    ...
    with service.hold():          # around a pull or an update
        pull_images()
    service.after_update()        # after a successful spec upgrade
    ...
    service.stop()

One background worker serves every request; runs never overlap (in this
process through `Pruner`, across processes through the state dir's run lock).

- `after_update()` and `request()` set a flag and notify the worker: no I/O,
  no waiting for a run, never raising. Requests that arrive while a run is
  going coalesce into exactly one more run.
- `on_disk_alert(severity, usage_percent)` takes the host's own disk alerts: a
  critical one gets an emergency prune (min-age does not apply), see
  controller/emergency.py; other severities only end a stuck episode.
- With `monitor_disk=True` (the `edgeprune watch` daemon) the worker samples
  the disk itself by the rules of controller/diskmon.py (controller/alerts.py).
- `hold()` keeps removals off while the host pulls or updates (controller/hold.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any

from controller.alerts import DiskAlerts
from controller.config import Config
from controller.diskmon import DiskSettings
from controller.hold import HoldGate
from controller.podman import PodmanStore
from controller.pruner import Pruner, StoreFactory
from controller.report import Report

log = logging.getLogger("edgeprune")

AFTER_UPDATE = "after-update"
DISK_CRITICAL = "disk-critical"


def _podman_store(config: Config) -> PodmanStore:
    return PodmanStore(config.podman_url)


class PruneService:
    """A background pruning worker for a host agent (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        *,
        store_factory: StoreFactory = _podman_store,
        clock: Callable[[], float] = time.time,
        monitor_disk: bool = False,
        dry_run: bool = False,
        **pruner_options: Any,
    ) -> None:
        """`pruner_options` go to `Pruner`: tracer_provider, meter_provider and
        on_report (called after every run), e.g. `Telemetry.pruner_options()`."""
        self._store_factory = store_factory
        self._clock = clock
        self._pruner = Pruner(config, store_factory=store_factory, clock=clock, **pruner_options)
        self._gate = HoldGate()
        self._monitor_disk = monitor_disk
        self._dry_run = dry_run
        self._cond = threading.Condition()
        # Requests, guarded by _cond; the worker takes them all at once.
        self._trigger: str | None = None
        self._host_alerts: dict[str, object] = {}
        self._settings_stale = True
        self._stopping = False
        self._busy = False
        self._thread: threading.Thread | None = None
        # Worker-only state.
        self._alerts = DiskAlerts(
            self._pruner,
            store_factory,
            clock,
            self._emergency_run,
            announce=monitor_disk,
            stopping=lambda: self._stopping,
        )
        self._next_sample = 0.0  # time.monotonic() of the next disk sample

    # -- public API ------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self._pruner.config

    @property
    def last_report(self) -> Report | None:
        return self._pruner.last_report

    @property
    def disk_settings(self) -> DiskSettings:
        return self._alerts.settings

    def start(self) -> None:
        """Start the worker (idempotent). Requests made before start are served then."""
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping = False
            self._gate.resume()
            self._next_sample = time.monotonic()
            self._thread = threading.Thread(target=self._loop, name="edgeprune", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the worker: a run stops after the item it is removing."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._gate.stop()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def after_update(self) -> None:
        """Call after a successful spec upgrade: returns at once, never raises."""
        self.request(AFTER_UPDATE)

    def request(self, trigger: str = "manual") -> None:
        """Ask for a run in the background; coalesces with one already pending."""
        try:
            with self._cond:
                if self._trigger is None:
                    self._trigger = trigger
                self._cond.notify_all()
        except Exception:  # never raise into the host's loop
            log.debug("prune request failed", exc_info=True)

    def on_disk_alert(self, severity: str, usage_percent: float) -> None:
        """The host's resource monitor reports a disk alert (Info, Warning or Critical).

        A critical one gets an emergency prune in the background; returns at once.
        """
        try:
            with self._cond:
                self._host_alerts[str(severity).strip().lower()] = usage_percent
                self._cond.notify_all()
        except Exception:
            log.debug("disk alert request failed", exc_info=True)

    def hold(self) -> AbstractContextManager[None]:
        """Wrap a pull or an update: nothing is removed while a hold is open.

        Entering waits only for a removal already in progress (one Podman call).
        Do not call `run_once()` inside a hold: the run would wait for it.
        """
        return self._gate.hold()

    def run_once(
        self, *, dry_run: bool = False, trigger: str = "manual", emergency: bool = False
    ) -> Report:
        """A synchronous run in the caller's thread (CLI, tests); holds apply."""
        report = self._pruner.run_once(
            dry_run=dry_run, trigger=trigger, emergency=emergency, control=self._gate
        )
        with self._cond:
            self._settings_stale = True
        return report

    def reconfigure(self, config: Config) -> None:
        """New configuration (SIGHUP): enabling requests a run; disabling stops the next ones."""
        was_enabled = self._pruner.config.enabled
        self._pruner.config = config  # each run reads it when it starts
        with self._cond:
            self._settings_stale = True
            self._cond.notify_all()
        log.info("configuration reloaded: pruning %s", "enabled" if config.enabled else "disabled")
        if config.enabled and not was_enabled:
            self.request("config-reload")

    def wait_idle(self, timeout: float) -> bool:
        """True once no run is going and none is pending (False after `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._busy or self._trigger is not None or self._host_alerts:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    # -- the worker --------------------------------------------------------------

    def _due(self) -> bool:
        sample_due = self._monitor_disk and time.monotonic() >= self._next_sample
        return bool(self._trigger is not None or self._host_alerts or sample_due)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._due():
                    wait = self._next_sample - time.monotonic() if self._monitor_disk else None
                    self._cond.wait(None if wait is None else max(wait, 0.0))
                if self._stopping:
                    return
                trigger, self._trigger = self._trigger, None
                alerts, self._host_alerts = self._host_alerts, {}
                stale, self._settings_stale = self._settings_stale, False
                self._busy = True
            try:
                self._serve(trigger, alerts, stale)
            except Exception:  # the worker must outlive any bug
                log.exception("prune service: unexpected error; carrying on")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _serve(self, trigger: str | None, alerts: Mapping[str, object], stale: bool) -> None:
        if stale:
            self._alerts.refresh()
        # An emergency run does all a normal run would: a pending request is covered.
        covered = self._alerts.answer_host(alerts) if alerts else False
        if trigger is not None and not covered and not self._stopping:
            self._run(trigger)
        if self._monitor_disk and time.monotonic() >= self._next_sample:
            self._next_sample = time.monotonic() + self._alerts.settings.sampling_seconds
            self._alerts.check()

    def _run(self, trigger: str, *, emergency: bool = False) -> Report:
        report = self._pruner.run_once(
            dry_run=self._dry_run, trigger=trigger, emergency=emergency, control=self._gate
        )
        self._alerts.refresh()  # the applied spec's Disk monitor, Podman's storage path
        return report

    def _emergency_run(self) -> Report:
        return self._run(DISK_CRITICAL, emergency=True)
