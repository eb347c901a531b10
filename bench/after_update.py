"""How long `PruneService.after_update()` takes while a slow run is going.

    python bench/after_update.py [--calls 100000]

A run is started and held inside the store's inventory call (a stand-in for a
slow Podman), then the host-side call is timed many times. It must stay well
under a millisecond: a few attribute sets and a Condition notify, no I/O.
Prints p50, p99 and max in microseconds, while runs keep completing and
while one run is blocked. The max includes the interpreter's thread switch
interval (the GIL, 5 ms by default), which no Python-level design avoids.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller import Config, PruneService, agentfiles
from controller.artifacts import ArtifactSource
from controller.model import Inventory


class BlockedStore:
    """Answers inventory() only once `release` is set: the run stays busy meanwhile."""

    entered = threading.Event()
    release = threading.Event()

    def inventory(self, now: float) -> Inventory:
        self.entered.set()
        self.release.wait()
        return Inventory(images=(), containers=(), taken_at=now)

    def request(self, *_args: object, **_kwargs: object) -> tuple[int, None]:
        return 404, None  # no artifacts endpoint: the run notes it and goes on

    def close(self) -> None:
        pass


def timed(call, calls: int) -> list[float]:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


def report(label: str, samples: list[float]) -> None:
    cuts = statistics.quantiles(samples, n=100)
    print(
        f"{label:<28} p50 {cuts[49]:7.2f} us   p99 {cuts[98]:7.2f} us   max {max(samples):9.2f} us"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        spec_dir = Path(work) / "flightctl"
        agentfiles.bootstrap(spec_dir)
        config = Config(spec_dir=spec_dir, state_dir=Path(work) / "state", podman_url="unix:///x")
        service = PruneService(
            config,
            store_factory=lambda _config: BlockedStore(),
            artifact_source=lambda _target: ArtifactSource(cli=None),  # no CLI probe
        )
        service.start()
        try:
            BlockedStore.release.set()  # runs complete at once: the worker keeps starting them
            report("runs completing", timed(service.after_update, args.calls))
            assert service.wait_idle(30)
            BlockedStore.release.clear()
            service.after_update()
            assert BlockedStore.entered.wait(30), "the run did not start"
            busy = timed(service.after_update, args.calls)
            still_running = not service.wait_idle(0)
            report("run in progress (blocked)", busy)
            print(f"the run was still going after {args.calls} calls: {still_running}")
        finally:
            BlockedStore.release.set()
            service.stop(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
