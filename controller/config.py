"""edgeprune configuration: a YAML file plus ``conf.d`` drop-ins into a frozen ``Config``.

Layering, lowest to highest precedence:

1. built-in defaults (the ``Config`` field defaults);
2. the main file (``/etc/edgeprune/config.yaml`` unless ``--config`` names another);
3. ``<dir of the main file>/conf.d/*.yaml`` in lexical order of file name;
4. command-line overrides.

A layer only changes the keys it names: a drop-in that sets ``pinned`` leaves
``scope`` as the main file set it (the flightctl agent once reset unmentioned
keys to defaults; design.md section 2). A list value (``pinned``) REPLACES the
list of earlier layers, it is not appended to, so a drop-in can also shrink it.

Bad input never degrades to a default: an unknown key, a wrong type or value,
invalid YAML or a non-mapping top level raises ``ConfigError`` naming the file
and the key, and the caller removes nothing (fail safe, design.md section 4).

Keys are data-driven (``CONFIG_KEYS``): a new setting is one ``Config`` field
plus one row mapping its kebab-case YAML key to the field and a value parser.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from controller import references

if TYPE_CHECKING:
    from controller.diskmon import AlertRule

DEFAULT_CONFIG_FILE = Path("/etc/edgeprune/config.yaml")
DROP_IN_DIR = "conf.d"
DROP_IN_GLOB = "*.yaml"
DEFAULT_PODMAN_URL = "unix:///run/podman/podman.sock"
COMMAND_LINE = "command line"  # the "file" named in errors about overrides
SCOPES = ("managed", "all")


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Config:
    enabled: bool = True
    spec_dir: Path = Path("/var/lib/flightctl")
    state_dir: Path = Path("/var/lib/edgeprune")
    podman_url: str = ""  # resolved at load: $CONTAINER_HOST, else DEFAULT_PODMAN_URL
    # per-user stores (docs/configuration.md#stores): (user, API URL) pairs, sorted
    stores: tuple[tuple[str, str], ...] = ()
    agent_user: str = "root"  # whose store podman-url is: root, no runAs and this user share it
    scope: str = "managed"  # "managed" | "all"
    retain_previous: int = 1  # previous distinct versions kept per app / applied generations
    min_age_seconds: float = 120.0  # from "min-age"
    pinned: tuple[str, ...] = ()  # reference patterns never removed
    # observability (docs/observability.md); relative paths are under state_dir
    log_format: str = "text"  # "text" | "json"
    trace_file: Path | None = Path("traces.jsonl")  # None: no trace file
    trace_file_max_bytes: int = 5 * 1024 * 1024
    trace_file_backups: int = 2
    otlp_endpoint: str = ""  # base URL; "" leaves it to the OTEL_EXPORTER_OTLP_* variables
    console_exporter: bool = False
    metrics_textfile: Path | None = None  # Prometheus text file, written after each run
    # triggers (docs/triggers.md)
    agent_config: Path | None = None  # the agent's config.yaml: its image-pruning.enabled
    disk_alert_rules: tuple[AlertRule, ...] | None = None  # None: the spec's, else the agent's
    disk_sampling_seconds: float | None = None  # None: the spec's Disk monitor's, else 1m
    disk_paths: tuple[Path, ...] = ()  # filesystems watched besides Podman's storage
    watch_poll_seconds: float = 10.0  # `watch` re-reads current.json this often
    bootc_command: Path | None = None  # None: `bootc` on PATH, if any
    sources: tuple[str, ...] = ()  # the files that were read, in order


# --- durations -------------------------------------------------------------

_DURATION_EXAMPLES = "expected e.g. 90s, 2m, 1h30m"
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
# "ms" before "m" so "500ms" is not read as 500 minutes followed by garbage.
_DURATION_PART = r"(\d+(?:\.\d*)?|\.\d+)(ms|h|m|s)"
_DURATION_RE = re.compile(rf"(?:{_DURATION_PART})+")
_PLAIN_NUMBER_RE = re.compile(r"\d+(?:\.\d*)?|\.\d+")


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration: "0s", "90s", "2m", "1h30m", "500ms", "1.5h".

    A plain number means seconds. Negative, empty or malformed text raises ValueError.
    """
    stripped = text.strip()
    if _PLAIN_NUMBER_RE.fullmatch(stripped):
        seconds = float(stripped)
    elif _DURATION_RE.fullmatch(stripped):
        seconds = sum(
            float(amount) * _UNIT_SECONDS[unit]
            for amount, unit in re.findall(_DURATION_PART, stripped)
        )
    else:
        seconds = math.nan
    if not math.isfinite(seconds):  # also catches digit strings too long for a float
        raise ValueError(f"bad duration {text!r} ({_DURATION_EXAMPLES})")
    return seconds


# --- value parsers (raise ValueError with the problem; the loader adds file and key) ---


def _describe(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


def _parse_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_describe(value)}")
    return value


def _parse_path(value: object) -> Path:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a directory path, got {_describe(value)}")
    return Path(value)


# edgeprune prunes the store of the device it runs on: a local socket or a
# plain TCP/HTTP endpoint. ssh:// (a remote machine, and a client that can
# block forever on connect) and anything else are refused up front.
_URL_SCHEMES = ("unix://", "tcp://", "http://")


def _parse_url(value: object) -> str:
    if not isinstance(value, str) or not value.startswith(_URL_SCHEMES):
        raise ValueError(
            f"expected a unix://, tcp:// or http:// URL such as {DEFAULT_PODMAN_URL}, "
            f"got {_describe(value)}"
        )
    return value


# A POSIX-portable user name (useradd's default NAME_REGEX, plus upper case).
_USER_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_.-]*\$?")


def _parse_user(value: object) -> str:
    if not isinstance(value, str) or not _USER_RE.fullmatch(value) or len(value) > 32:
        raise ValueError(f"expected a user name such as root or flightctl, got {_describe(value)}")
    return value


def _parse_stores(value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        raise ValueError(
            "expected a mapping of user name to Podman API URL, e.g. "
            f"{{alice: unix:///run/user/1000/podman/podman.sock}}, got {_describe(value)}"
        )
    stores: dict[str, str] = {}
    for user, url in value.items():
        name = _parse_user(user)
        try:
            stores[name] = _parse_url(url)
        except ValueError as exc:
            raise ValueError(f"user {name}: {exc}") from exc
    return tuple(sorted(stores.items()))


def _parse_scope(value: object) -> str:
    if not isinstance(value, str) or value not in SCOPES:
        raise ValueError(f"expected one of {', '.join(SCOPES)}, got {_describe(value)}")
    return value


def _parse_retain(value: object) -> int:
    # bool is an int subclass: "retain-previous: true" must not mean 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a whole number >= 0, got {_describe(value)}")
    return value


def parse_duration_value(value: object) -> float:
    """A YAML duration value (text like "2m", or a number of seconds) that is >= 0."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a duration ({_DURATION_EXAMPLES}), got {_describe(value)}")
    seconds = parse_duration(value) if isinstance(value, str) else float(value)
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError(f"bad duration {str(value)!r} ({_DURATION_EXAMPLES})")
    return seconds


def _is_wildcard(pattern: str) -> bool:
    return any(char in pattern for char in "*?[")


def _parse_pinned(value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list of reference patterns, got {_describe(value)}")
    patterns: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"expected reference patterns, got {_describe(item)} in the list")
        pattern = item.strip()
        # A wildcard-free pin that does not parse would silently never match: reject it.
        if not _is_wildcard(pattern):
            try:
                references.parse_reference(pattern)
            except references.ReferenceError as exc:
                raise ValueError(f"bad reference {pattern!r}: {exc}") from exc
        patterns.append(pattern)
    return tuple(patterns)


LOG_FORMATS = ("text", "json")
_SIZE_RE = re.compile(r"(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?")
_SIZE_UNITS = {"B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3}
_SIZE_UNITS |= {"KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


def _parse_log_format(value: object) -> str:
    if not isinstance(value, str) or value not in LOG_FORMATS:
        raise ValueError(f"expected one of {', '.join(LOG_FORMATS)}, got {_describe(value)}")
    return value


def _parse_file(value: object) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a file path, got {_describe(value)}")
    return Path(value)


def _parse_trace_file(value: object) -> Path | None:
    if value is False:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a file path or false, got {_describe(value)}")
    return Path(value)


def _parse_size(value: object) -> int:
    match = _SIZE_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match:
        value = int(match[1]) * _SIZE_UNITS[match[2] or "B"]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"expected a size > 0 such as 5MiB or 1048576, got {_describe(value)}")
    return value


def _parse_otlp_endpoint(value: object) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ValueError(
            f"expected an http(s) URL such as http://collector:4318, got {_describe(value)}"
        )
    return value


def _parse_agent_config(value: object) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected the agent's config file path, got {_describe(value)}")
    return Path(value)


def _parse_alert_rules(value: object) -> tuple[AlertRule, ...]:
    from controller.diskmon import parse_alert_rules  # diskmon imports this module

    return parse_alert_rules(value, "rule list")


def _parse_interval(value: object) -> float:
    from controller.diskmon import parse_sampling_interval

    return parse_sampling_interval(value, "interval")


def _parse_disk_paths(value: object) -> tuple[Path, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list of absolute paths, got {_describe(value)}")
    for item in value:
        if not isinstance(item, str) or not item.startswith("/"):
            raise ValueError(f"expected absolute paths, got {_describe(item)} in the list")
    return tuple(Path(item) for item in value)


@dataclass(frozen=True)
class ConfigKey:
    field: str  # the Config field the key sets
    parse: Callable[[object], object]  # raises ValueError describing the problem


CONFIG_KEYS: dict[str, ConfigKey] = {
    "enabled": ConfigKey("enabled", _parse_bool),
    "spec-dir": ConfigKey("spec_dir", _parse_path),
    "state-dir": ConfigKey("state_dir", _parse_path),
    "podman-url": ConfigKey("podman_url", _parse_url),
    "scope": ConfigKey("scope", _parse_scope),
    "retain-previous": ConfigKey("retain_previous", _parse_retain),
    "min-age": ConfigKey("min_age_seconds", parse_duration_value),
    "pinned": ConfigKey("pinned", _parse_pinned),
    "stores": ConfigKey("stores", _parse_stores),
    "agent-user": ConfigKey("agent_user", _parse_user),
    "agent-config": ConfigKey("agent_config", _parse_agent_config),
    "disk-alert-rules": ConfigKey("disk_alert_rules", _parse_alert_rules),
    "disk-sampling-interval": ConfigKey("disk_sampling_seconds", _parse_interval),
    "disk-paths": ConfigKey("disk_paths", _parse_disk_paths),
    "watch-poll-interval": ConfigKey("watch_poll_seconds", _parse_interval),
    "log-format": ConfigKey("log_format", _parse_log_format),
    "trace-file": ConfigKey("trace_file", _parse_trace_file),
    "trace-file-max-bytes": ConfigKey("trace_file_max_bytes", _parse_size),
    "trace-file-backups": ConfigKey("trace_file_backups", _parse_retain),
    "otlp-endpoint": ConfigKey("otlp_endpoint", _parse_otlp_endpoint),
    "console-exporter": ConfigKey("console_exporter", _parse_bool),
    "metrics-textfile": ConfigKey("metrics_textfile", _parse_file),
    "bootc-command": ConfigKey("bootc_command", _parse_path),
}


def _check_stores(values: Mapping[str, object], sources: list[str]) -> None:
    # The agent's own store is podman-url; a second URL for it would make one
    # store two, each planned with only part of the keep-set.
    own = {"root", str(values.get("agent_user", "root"))}
    stores = values.get("stores")
    clash = sorted(own & {user for user, _ in stores}) if isinstance(stores, tuple) else []
    where = ", ".join(sources) or COMMAND_LINE
    if clash:
        raise ConfigError(
            f"{where}: key 'stores': {', '.join(clash)} is the agent's own store:"
            " set its URL with podman-url"
        )
    # Two names for one store would plan it twice, each time with only part of
    # its keep-set: each plan would remove what the other user's apps need.
    urls: dict[str, str] = {}
    own_url = str(values.get("podman_url", ""))
    for user, url in stores if isinstance(stores, tuple) else ():
        if url == own_url:
            raise ConfigError(
                f"{where}: key 'stores': {user}'s URL {url} is podman-url, the agent's own"
                " store; one store cannot be pruned as two"
            )
        if url in urls:
            raise ConfigError(
                f"{where}: key 'stores': {urls[url]} and {user} have the same URL {url};"
                " one store cannot be pruned as two"
            )
        urls[url] = user


# --- loading ------------------------------------------------------------------


def _apply(settings: Mapping[object, object], source: str, values: dict[str, object]) -> None:
    """Parse every key of one layer into ``values`` (Config field -> value)."""
    for key, raw in settings.items():
        spec = CONFIG_KEYS.get(key) if isinstance(key, str) else None
        if spec is None:
            known = ", ".join(CONFIG_KEYS)
            raise ConfigError(f"{source}: unknown key {key!r} (known keys: {known})")
        try:
            values[spec.field] = spec.parse(raw)
        except (ValueError, OverflowError, RecursionError) as exc:
            raise ConfigError(f"{source}: key '{key}': {exc}") from exc


_MAX_CONFIG_BYTES = 1024 * 1024  # a config is a few hundred bytes


def read_yaml_mapping(path: Path) -> Mapping[object, object]:
    """A YAML file's top-level mapping; any unusable file is a ConfigError naming it."""
    try:
        # stat first: a FIFO or a device must not block or flood the reader
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ConfigError(f"{path}: not a regular file")
        if os.stat(path).st_size > _MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: larger than {_MAX_CONFIG_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    except (RecursionError, MemoryError) as exc:
        raise ConfigError(f"{path}: YAML too deeply nested or too large") from exc
    if document is None:  # empty file or only comments: no keys
        return {}
    if not isinstance(document, dict):
        raise ConfigError(
            f"{path}: expected a mapping of settings at the top level, got {_describe(document)}"
        )
    return document


def _drop_ins(main_file: Path) -> list[Path]:
    directory = main_file.parent / DROP_IN_DIR
    if not directory.is_dir():
        return []
    # Every *.yaml entry counts: one that is not a readable regular file (a
    # dangling link, a directory) is an error in read_yaml_mapping, never skipped, or a
    # pin or "enabled: false" it carries would silently vanish.
    return sorted(directory.glob(DROP_IN_GLOB), key=lambda path: path.name)


def load_config(
    path: Path | None = None,
    *,
    overrides: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Load the main file, its ``conf.d/*.yaml`` drop-ins, then ``overrides``.

    ``path`` None means ``DEFAULT_CONFIG_FILE``, which may be absent (its
    drop-ins still apply). An explicit ``path`` (``--config FILE``) must exist.
    ``overrides`` use the YAML keys with the values YAML would give (bool,
    int, str, list); a None value means "flag not given" and changes nothing.
    ``podman-url`` falls back to ``$CONTAINER_HOST`` (from ``environ``,
    default ``os.environ``), then to ``DEFAULT_PODMAN_URL``. With
    ``agent-config`` set, the agent's ``image-pruning: {enabled: ...}``
    applies when no layer here sets ``enabled`` (controller/agentconfig.py).
    """
    path = None if path is None else Path(path)  # a str from an embedding agent works too
    main_file = DEFAULT_CONFIG_FILE if path is None else path
    if path is not None and not path.is_file():
        raise ConfigError(f"{path}: config file not found (or not a regular file)")

    # Absent is fine for the default file; present but unusable (a directory, a
    # dangling link) is an error, not the defaults.
    present = main_file.exists() or main_file.is_symlink()
    files = ([main_file] if present else []) + _drop_ins(main_file)
    values: dict[str, object] = {}
    for file in files:
        _apply(read_yaml_mapping(file), str(file), values)
    if overrides:
        given = {key: value for key, value in overrides.items() if value is not None}
        _apply(given, COMMAND_LINE, values)

    sources = [str(file) for file in files]
    agent_config = values.get("agent_config")
    if isinstance(agent_config, Path):
        from controller.agentconfig import read_agent_pruning

        agent = read_agent_pruning(agent_config)
        sources += agent.files
        # edgeprune's own "enabled", from any layer, wins over the agent's knob.
        if "enabled" not in values and agent.enabled is not None:
            values["enabled"] = agent.enabled
    if not values.get("podman_url"):
        env = os.environ if environ is None else environ
        values["podman_url"] = env.get("CONTAINER_HOST") or DEFAULT_PODMAN_URL
    _check_stores(values, sources)
    return Config(**values, sources=tuple(sources))  # type: ignore[arg-type]
