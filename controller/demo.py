"""`edgeprune demo`: three spec generations on a private Podman sandbox.

Everything happens in a temp dir with its own Podman store and API service;
the host's Podman store is never touched and no network is used. After each
generation a prune runs and its decisions are printed; at the end a rollback
to the previous generation is proven to work offline.
"""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
from pathlib import Path

from controller import agentfiles
from controller.config import Config
from controller.pruner import Pruner
from controller.report import Report
from controller.sandbox import Sandbox, find_podman
from controller.table import format_rows, human_bytes, item_rows

OS_IMAGE = "registry.example.com/os/edge-rhel:9.6-r{n}"
WEB = "registry.example.com/shop/web:{n}.0"
KIOSK = "registry.example.com/ui/kiosk:{n}.0"
REDIS = "docker.io/library/redis:7.2"
PINNED = "registry.example.com/infra/vpn-sidecar:1.0"
UNMANAGED = "localhost/debug-tools:latest"


def _spec(n: int) -> dict:
    return agentfiles.device_spec(
        OS_IMAGE.format(n=n),
        [
            agentfiles.compose_app("shop", {"web": WEB.format(n=n), "cache": REDIS}),
            agentfiles.container_app("kiosk", KIOSK.format(n=n)),
        ],
    )


def _pull(sandbox: Sandbox, n: int) -> None:
    """Stand-in for the agent's pulls: tiny local images, no network."""
    for ref in (WEB.format(n=n), KIOSK.format(n=n)):
        sandbox.make_image(ref, f"{ref} payload")


def _show(title: str, report: Report) -> None:
    print(f"\n=== {title} ===")
    rows = item_rows("REMOVED", report.removed) + item_rows("kept", report.kept)
    rows += item_rows("FAILED", report.failures)
    print(format_rows(rows, ("DECISION", "IMAGE", "ID", "SIZE", "REASONS")))
    measured = human_bytes(report.measured_bytes)
    print(
        f"outcome: {report.outcome}; removed {len(report.removed)}, kept {len(report.kept)}; "
        f"reclaimed {human_bytes(report.estimated_bytes)} estimated, {measured} measured; "
        f"states: {' -> '.join(report.states)}"
    )
    if report.error:
        print(f"error: {report.error}")


def _prove_rollback(sandbox: Sandbox, n: int) -> bool:
    print(f"\n=== Rollback to generation {n}, offline ===")
    ok = True
    for i, ref in enumerate((WEB.format(n=n), REDIS, KIOSK.format(n=n))):
        result = sandbox.podman(
            "create", "--pull=never", "--name", f"rollback-check-{i}", ref, "true", check=False
        )
        status = (
            "present, container created"
            if result.returncode == 0
            else (f"MISSING: {result.stderr.strip()}")
        )
        ok = ok and result.returncode == 0
        print(f"  {ref}: {status}")
    print(
        f"rollback OK: every image of generation {n} is local"
        if ok
        else "rollback would FAIL offline"
    )
    return ok


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def run_demo(*, keep: bool = False) -> int:
    binary = find_podman()
    if binary is None:
        print(
            "edgeprune demo needs Podman: run scripts/setup.sh as root "
            "(it installs podman with apt)",
            file=sys.stderr,
        )
        return 2
    base = Path(tempfile.mkdtemp(prefix="edgeprune-demo-"))
    sandbox = Sandbox(binary)  # its own short temp path: Podman caps runroot at 50 chars
    # SIGTERM (a timeout, a cancelled job) must still stop the service and clean up.
    previous = signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        sandbox.start()
        spec_dir, state_dir = base / "flightctl", base / "edgeprune"
        config = Config(
            spec_dir=spec_dir,
            state_dir=state_dir,
            podman_url=sandbox.url,
            min_age_seconds=0.0,
            pinned=(PINNED,),
        )
        print(
            f"spec and state files: {base}\nprivate Podman store: {sandbox.root} "
            f"(Podman {binary.label}: {binary.path})\n"
            f"config: min-age 0s, retain-previous 1, pinned {PINNED}"
        )
        sandbox.make_image(REDIS, "redis payload")
        sandbox.make_image(PINNED, "vpn payload")
        sandbox.make_image(UNMANAGED, "debugging tools nobody asked for")
        sandbox.make_image(None, "a dangling leftover layer")
        pruner = Pruner(config)
        for n in (1, 2, 3):
            _pull(sandbox, n)
            agentfiles.apply(spec_dir, str(n), _spec(n))
            if n == 1:
                # An operator's stopped container keeps kiosk 1.0 alive for good.
                sandbox.create_container(KIOSK.format(n=1), "old-kiosk-debug")
            _show(
                f"Generation {n} applied (web {n}.0, kiosk {n}.0); prune",
                pruner.run_once(trigger="demo"),
            )
        agentfiles.apply(spec_dir, "4", _spec(2))  # the operator rolls back to generation 2
        return 0 if _prove_rollback(sandbox, 2) else 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        sandbox.stop()
        if keep:
            print(f"\nkept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
