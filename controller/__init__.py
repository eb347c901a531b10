"""edgeprune: prune unused container images on edge devices, never a rollback's.

The public API, for a host agent that embeds edgeprune in its reconcile loop:

    from controller import Pruner, load_config
    pruner = Pruner(load_config())
    report = pruner.run_once(trigger="after-update")   # never raises

Names are resolved lazily so that `import controller` (and the CLI) stay light.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Pruner": "controller.pruner",
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
