"""Run the real `edgeprune` CLI with removals that wait at a gate (a test fault injector).

    python tests/slow_cli.py GATE run --config ...

Before each image removal the process creates `GATE.waiting` and waits until
the file `GATE` exists, then removes the image for real. Tests use it to
hold a run mid-removal (a slow store real Podman cannot produce on demand),
e.g. to start a second run or send SIGTERM at that moment.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller import cli
from controller.podman import PodmanStore, RemoveResult

_GATE_TIMEOUT = 60.0


def _gated(gate: Path):  # type: ignore[no-untyped-def]
    real_remove = PodmanStore.remove_image

    def remove_image(self: PodmanStore, name_or_id: str) -> RemoveResult:
        gate.with_name(gate.name + ".waiting").write_text(name_or_id)
        deadline = time.monotonic() + _GATE_TIMEOUT
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return real_remove(self, name_or_id)

    return remove_image


if __name__ == "__main__":
    PodmanStore.remove_image = _gated(Path(sys.argv[1]))  # type: ignore[method-assign]
    sys.exit(cli.main(sys.argv[2:]))
