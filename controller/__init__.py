"""edgeprune: prune unused container images on edge devices, never a rollback's.

The public API, for a host agent that embeds edgeprune in its reconcile loop:

    from controller import Pruner, load_config
    pruner = Pruner(load_config())
    report = pruner.run_once(trigger="after-update")   # never raises

or, to prune in the background of its reconcile loop (docs/triggers.md):

    from controller import PruneService, load_config
    service = PruneService(load_config())
    service.start()
    with service.hold():          # around each pull or update
        ...
    service.after_update()        # returns at once; coalesces
    service.stop()

Names are resolved lazily so that `import controller` (and the CLI) stay light.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Pruner": "controller.pruner",
    "PruneService": "controller.service",
    "Report": "controller.report",
    "Config": "controller.config",
    "ConfigError": "controller.config",
    "load_config": "controller.config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'controller' has no attribute {name!r}")
    return getattr(import_module(module), name)
