"""A minimal host-agent reconcile loop with edgeprune embedded.

    python examples/reconcile_loop.py      # as root, with podman installed

It starts a private Podman store (a sandbox in a temp dir), then applies
three spec generations the way the flightctl agent does: write desired.json,
pull the images, switch current.json over. Each update runs inside
`service.hold()`, so nothing is removed while it pulls; after each successful
update the loop calls `service.after_update()`, which returns at once while
the prune runs in the background. At the end the store keeps the current and
the previous generation's images and nothing else.

edgeprune learns what the agent references from the spec files its runs
see: a generation applied and replaced before any run saw it is not learned,
and scope `managed` keeps its images as never referenced (safe, not tidy).
Hence the pause between updates, as a real agent has.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller import Config, PruneService, agentfiles
from controller.sandbox import Sandbox, find_podman

Spec = dict[str, Any]
Pull = Callable[[str], None]


def spec_images(spec: Spec) -> list[str]:
    return [app["image"] for app in spec.get("applications", []) if "image" in app]


def reconcile(
    service: PruneService, spec_dir: Path, generation: str, spec: Spec, pull: Pull
) -> None:
    """Apply one generation; edgeprune never removes what this update is about to use."""
    with service.hold():
        agentfiles.begin_update(spec_dir, generation, spec)
        for ref in spec_images(spec):
            pull(ref)
        agentfiles.finish_update(spec_dir)
    service.after_update()


def generation_spec(n: int) -> Spec:
    return agentfiles.device_spec(
        None,
        [
            agentfiles.container_app("web", f"registry.example.com/shop/web:{n}.0"),
            agentfiles.container_app("cache", "docker.io/library/redis:7.2"),
        ],
    )


def main() -> int:
    logging.basicConfig(format="%(levelname)s %(message)s")
    logging.getLogger("edgeprune").setLevel(logging.INFO)
    binary = find_podman()
    if binary is None:
        print("podman is not installed", file=sys.stderr)
        return 1
    with Sandbox(binary) as sandbox, tempfile.TemporaryDirectory() as work:
        spec_dir, state_dir = Path(work) / "flightctl", Path(work) / "edgeprune"
        agentfiles.bootstrap(spec_dir)
        config = Config(
            spec_dir=spec_dir, state_dir=state_dir, podman_url=sandbox.url, min_age_seconds=0
        )

        def pull(ref: str) -> None:  # a real agent pulls from a registry
            sandbox.make_image(ref, ref)

        service = PruneService(config)
        service.start()
        try:
            for n in (1, 2, 3):
                reconcile(service, spec_dir, str(n), generation_spec(n), pull)
                time.sleep(1)  # the loop goes on with its own work until the next spec
            service.wait_idle(timeout=120)
        finally:
            service.stop()
        images = sandbox.podman("images", "--format", "{{.Repository}}:{{.Tag}}").stdout
        print("images left:", ", ".join(sorted(images.split())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
