"""`edgeprune watch`: the daemon for devices whose agent is not Python.

It runs a `PruneService` with its own disk monitor and:

- prunes once at start;
- requests a prune when a reconciliation succeeds, i.e. when `current.json`'s
  renderedVersion changes. inotify wakes it at once where the kernel has it;
  it also re-reads the file every `watch-poll-interval` (the only way without
  inotify, and a safety net with it);
- `SIGHUP` reloads the configuration (enabling pruning requests a run,
  disabling it stops the next ones; a bad file keeps the running one);
- `SIGTERM`/`SIGINT` stop it cleanly after the item being removed.

Signals are blocked in every thread and taken with `sigwait` in the main
thread, so no handler ever runs in the middle of a lock.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import select
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controller.config import Config, ConfigError
from controller.report import Report
from controller.service import PruneService
from controller.spec import SpecError, read_generations

log = logging.getLogger("edgeprune")

STARTUP = "startup"
_SIGNALS = {signal.SIGHUP, signal.SIGTERM, signal.SIGINT}

# <sys/inotify.h>: events that mean "a file in the directory may have new content".
_IN_CLOSE_WRITE, _IN_MOVED_TO, _IN_CREATE = 0x008, 0x080, 0x100
_IN_DELETE_SELF, _IN_MOVE_SELF, _IN_IGNORED = 0x400, 0x800, 0x8000
_WATCH_MASK = _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE_SELF | _IN_MOVE_SELF
_EVENT_HEADER = 16  # int wd; uint32 mask, cookie, len


class DirectoryWatch:
    """A minimal inotify watch on one directory (libc through ctypes)."""

    def __init__(self, directory: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            error = ctypes.get_errno()
            raise OSError(error, f"inotify_init1: {os.strerror(error)}")
        if libc.inotify_add_watch(fd, os.fsencode(directory), _WATCH_MASK) < 0:
            error = ctypes.get_errno()
            os.close(fd)
            raise OSError(error, f"inotify_add_watch {directory}: {os.strerror(error)}")
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def drain(self) -> bool:
        """Consume pending events; False once the directory itself went away."""
        alive = True
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return alive
            offset = 0
            while offset + _EVENT_HEADER <= len(data):
                mask = int.from_bytes(data[offset + 4 : offset + 8], sys.byteorder)
                length = int.from_bytes(data[offset + 12 : offset + 16], sys.byteorder)
                if mask & (_IN_DELETE_SELF | _IN_MOVE_SELF | _IN_IGNORED):
                    alive = False
                offset += _EVENT_HEADER + length

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


def _open_watch(directory: Path) -> DirectoryWatch | None:
    try:
        return DirectoryWatch(directory)
    except (OSError, AttributeError) as error:  # AttributeError: a libc without inotify
        log.debug("no inotify on %s (%s): polling", directory, error)
        return None


class SpecWatcher:
    """Calls `on_change` when current.json's renderedVersion changes."""

    def __init__(self, spec_dir: Path, poll_seconds: float, on_change: Callable[[], None]) -> None:
        self._spec_dir = spec_dir
        self._poll_seconds = poll_seconds
        self._on_change = on_change
        self._last: str | None = None
        self._wake_r, self._wake_w = os.pipe()
        self._retarget = False
        self._stopping = False
        self._watch: DirectoryWatch | None = None
        self._thread = threading.Thread(target=self._loop, name="edgeprune-spec", daemon=True)

    def start(self) -> None:
        # Watch first, then read: a change in between is an event, not a miss.
        self._watch = _open_watch(self._spec_dir)
        self._last = self._generation()
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake()
        if self._thread.is_alive():
            self._thread.join()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def retarget(self, spec_dir: Path, poll_seconds: float) -> None:
        self._spec_dir, self._poll_seconds = spec_dir, poll_seconds
        self._retarget = True
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _generation(self) -> str | None:
        try:
            return read_generations(self._spec_dir)[0]
        except SpecError as error:
            log.debug("cannot read the spec generation now: %s", error)
            return None  # unreadable for now (the run reports why); look again later

    def _loop(self) -> None:
        watch, self._watch = self._watch, None
        try:
            while not self._stopping:
                if watch is None:
                    watch = _open_watch(self._spec_dir)  # again each round until it works
                fds = [self._wake_r] + ([watch.fileno()] if watch else [])
                ready, _, _ = select.select(fds, [], [], self._poll_seconds)
                if self._wake_r in ready:
                    os.read(self._wake_r, 64)
                if watch is not None and (
                    (watch.fileno() in ready and not watch.drain()) or self._retarget
                ):
                    watch.close()
                    watch = None
                self._retarget = False
                if not self._stopping:
                    self._check()
        finally:
            if watch is not None:
                watch.close()

    def _check(self) -> None:
        generation = self._generation()
        if generation is None or generation == self._last:
            return
        log.info(
            "reconciliation detected: %s renderedVersion %s -> %s; requesting a prune",
            self._spec_dir / "current.json",
            self._last if self._last is not None else "unreadable",
            generation,
        )
        self._last = generation
        self._on_change()


def _json_lines(report: Report) -> None:
    sys.stdout.write(json.dumps(report.to_dict()) + "\n")
    sys.stdout.flush()


def _with_json_lines(options: dict[str, Any]) -> dict[str, Any]:
    record = options.get("on_report")

    def on_report(report: Report) -> None:
        if record is not None:
            record(report)
        _json_lines(report)

    return {**options, "on_report": on_report}


def run_watch(
    config: Config, reload: Callable[[], Config], *, dry_run: bool = False, json_out: bool = False
) -> int:
    """Run the daemon until SIGTERM/SIGINT; `reload` reads the configuration on SIGHUP."""
    from controller.telemetry import setup_telemetry

    # Before any thread starts, so that every thread inherits the blocked mask.
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    telemetry = setup_telemetry(config)  # telemetry settings take effect at start only
    options = telemetry.pruner_options()
    service = PruneService(
        config,
        monitor_disk=True,
        dry_run=dry_run,
        **(_with_json_lines(options) if json_out else options),
    )
    watcher = SpecWatcher(config.spec_dir, config.watch_poll_seconds, service.after_update)
    log.info(
        "edgeprune watch started (pid %d): spec dir %s, state dir %s, pruning %s%s",
        os.getpid(),
        config.spec_dir,
        config.state_dir,
        "enabled" if config.enabled else "disabled",
        ", dry run" if dry_run else "",
    )
    try:
        service.request(STARTUP)
        service.start()
        watcher.start()
        while True:
            received = signal.sigwait(_SIGNALS)
            if received != signal.SIGHUP:
                # Tell the worker first (no waiting yet), then say so: once the line
                # is logged, no item after the current one can start.
                service.stop(timeout=0)
                log.info("%s: stopping after the current item", signal.Signals(received).name)
                break
            try:
                config = reload()
            except ConfigError as error:
                log.error("SIGHUP: configuration not reloaded, keeping the running one: %s", error)
                continue
            service.reconfigure(config)
            watcher.retarget(config.spec_dir, config.watch_poll_seconds)
    finally:
        watcher.stop()
        service.stop()
        telemetry.shutdown()
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
    log.info("edgeprune watch stopped")
    return 0
