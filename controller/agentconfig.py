"""The flightctl agent's own pruning knob: `image-pruning: {enabled: bool}`.

The agent reads `/etc/flightctl/config.yaml`, then `conf.d/*.yaml` next to it
in lexical order; a drop-in changes only what it names (design.md section 2),
so a drop-in without `image-pruning.enabled` leaves the earlier value alone.
Only that one key is read here; the rest of the agent's settings are its own
business and are not validated. edgeprune's own `enabled` wins (config.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from controller.config import ConfigError, read_yaml_mapping

AGENT_CONFIG_FILE = Path("/etc/flightctl/config.yaml")
SECTION = "image-pruning"


@dataclass(frozen=True)
class AgentPruning:
    enabled: bool | None  # None: no agent file says anything
    source: str | None  # the file that set `enabled` last
    files: tuple[str, ...]  # every agent file read, in order


def _document(path: Path) -> Mapping[object, object]:
    try:
        return read_yaml_mapping(path)
    except ConfigError as error:
        raise ConfigError(f"{error} (in the agent's config)") from error


def _enabled(document: Mapping[object, object], path: Path) -> bool | None:
    section = document.get(SECTION)
    if section is None:
        return None
    if not isinstance(section, Mapping):
        raise ConfigError(f"{path}: '{SECTION}' must be a mapping such as {{enabled: true}}")
    value = section.get("enabled")
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"{path}: '{SECTION}.enabled' must be true or false, got {value!r}")
    return value


def read_agent_pruning(path: Path) -> AgentPruning:
    """The agent's `image-pruning.enabled` after its drop-ins.

    The named file must exist (a typo must not silently change nothing);
    unreadable or malformed files raise ConfigError, so nothing is removed.
    """
    if not path.is_file():
        raise ConfigError(f"{path}: the agent's config file (agent-config) is not found")
    drop_ins = path.parent / "conf.d"
    files = [path]
    if drop_ins.is_dir():
        # an unusable *.yaml (a directory, a dangling link) is an error, never skipped
        files += sorted(drop_ins.glob("*.yaml"), key=lambda p: p.name)
    enabled: bool | None = None
    source: str | None = None
    for file in files:
        value = _enabled(_document(file), file)
        if value is not None:
            enabled, source = value, str(file)
    return AgentPruning(enabled, source, tuple(str(file) for file in files))
