from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from controller import config
from controller.config import (
    CONFIG_KEYS,
    DEFAULT_PODMAN_URL,
    Config,
    ConfigError,
    load_config,
    parse_duration,
)

NO_ENV: dict[str, str] = {}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def main_file(tmp_path: Path) -> Path:
    return tmp_path / "edgeprune" / "config.yaml"


@pytest.fixture
def conf_d(main_file: Path) -> Path:
    return main_file.parent / "conf.d"


# --- parse_duration -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0s", 0.0),
        ("90s", 90.0),
        ("2m", 120.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        ("1m500ms", 60.5),
        ("45", 45.0),
        ("2.5", 2.5),
        (" 2m ", 120.0),
    ],
)
def test_parse_duration_accepts(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "abc", "-5s", "-5", "2x", "m", "1h 30m", "2m-1s", "1e3", "inf", "nan", "9" * 400]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)


# --- defaults and the main file ------------------------------------------------------


def test_absent_default_file_gives_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "DEFAULT_CONFIG_FILE", tmp_path / "nowhere" / "config.yaml")
    loaded = load_config(environ=NO_ENV)
    assert loaded == Config(podman_url=DEFAULT_PODMAN_URL)
    assert loaded.sources == ()
    assert loaded.min_age_seconds == 120.0
    assert loaded.scope == "managed"
    assert loaded.retain_previous == 1


def test_default_path_is_used_when_no_path_given(
    main_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(main_file, "scope: all\n")
    monkeypatch.setattr(config, "DEFAULT_CONFIG_FILE", main_file)
    loaded = load_config(environ=NO_ENV)
    assert loaded.scope == "all"
    assert loaded.sources == (str(main_file),)


def test_every_key_is_read(main_file: Path) -> None:
    write(
        main_file,
        """
enabled: false
spec-dir: /data/flightctl
state-dir: /data/edgeprune
podman-url: unix:///run/user/1000/podman/podman.sock
scope: all
retain-previous: 3
min-age: 1h30m
pinned:
  - registry.example.com/infra/pause:3.9
  - "quay.io/edge/*"
""",
    )
    assert load_config(main_file, environ=NO_ENV) == Config(
        enabled=False,
        spec_dir=Path("/data/flightctl"),
        state_dir=Path("/data/edgeprune"),
        podman_url="unix:///run/user/1000/podman/podman.sock",
        scope="all",
        retain_previous=3,
        min_age_seconds=5400.0,
        pinned=("registry.example.com/infra/pause:3.9", "quay.io/edge/*"),
        sources=(str(main_file),),
    )


def test_explicit_path_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match=f"^{missing}: config file not found"):
        load_config(missing, environ=NO_ENV)


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n"])
def test_empty_file_sets_nothing(main_file: Path, text: str) -> None:
    write(main_file, text)
    loaded = load_config(main_file, environ=NO_ENV)
    assert loaded == Config(podman_url=DEFAULT_PODMAN_URL, sources=(str(main_file),))


@pytest.mark.parametrize("text", ["- scope\n- all\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(main_file: Path, text: str) -> None:
    write(main_file, text)
    with pytest.raises(ConfigError, match=f"^{main_file}: expected a mapping"):
        load_config(main_file, environ=NO_ENV)


def test_invalid_yaml_names_the_file(main_file: Path) -> None:
    write(main_file, "scope: [all\n")
    with pytest.raises(ConfigError, match=f"^{main_file}: invalid YAML"):
        load_config(main_file, environ=NO_ENV)


def test_unknown_key_names_file_and_key(main_file: Path) -> None:
    write(main_file, "scope: all\nmin_age: 5m\n")
    with pytest.raises(ConfigError) as caught:
        load_config(main_file, environ=NO_ENV)
    assert str(caught.value).startswith(f"{main_file}: unknown key 'min_age'")
    assert "min-age" in str(caught.value)  # the hint lists the real keys


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("enabled", "yes please", "expected true or false, got string 'yes please'"),
        ("enabled", "1", "expected true or false, got number 1"),
        ("spec-dir", "''", "expected a directory path"),
        ("state-dir", "[a, b]", "expected a directory path, got a list"),
        ("podman-url", "/run/podman/podman.sock", "expected a unix://, tcp:// or http:// URL"),
        ("podman-url", "ssh://core@edge/run/podman.sock", "expected a unix://, tcp:// or http://"),
        ("podman-url", "ftp://example.com/x", "expected a unix://, tcp:// or http://"),
        ("scope", "everything", "expected one of managed, all, got string 'everything'"),
        ("scope", "", "expected one of managed, all, got nothing"),
        ("retain-previous", "-1", "expected a whole number >= 0, got number -1"),
        ("retain-previous", "1.5", "expected a whole number >= 0"),
        ("retain-previous", "true", "expected a whole number >= 0, got boolean true"),
        ("min-age", "abc", "bad duration 'abc' (expected e.g. 90s, 2m, 1h30m)"),
        ("min-age", "-30", "bad duration '-30'"),
        ("min-age", "'-2m'", "bad duration '-2m'"),
        ("min-age", "false", "expected a duration"),
        ("pinned", "redis:7.2", "expected a list of reference patterns"),
        ("pinned", "[42]", "expected reference patterns, got number 42"),
        ("pinned", "['Not A Ref']", "bad reference 'Not A Ref'"),
        ("log-format", "yaml", "expected one of text, json, got string 'yaml'"),
        ("trace-file", "true", "expected a file path or false, got boolean true"),
        ("trace-file-max-bytes", "0", "expected a size > 0 such as 5MiB"),
        ("trace-file-max-bytes", "5 lots", "expected a size > 0 such as 5MiB"),
        ("trace-file-backups", "-1", "expected a whole number >= 0"),
        ("otlp-endpoint", "collector:4318", "expected an http(s) URL"),
        ("console-exporter", "1", "expected true or false"),
        ("metrics-textfile", "false", "expected a file path, got boolean false"),
    ],
)
def test_bad_values_name_file_and_key(main_file: Path, key: str, value: str, problem: str) -> None:
    write(main_file, f"{key}: {value}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(main_file, environ=NO_ENV)
    message = str(caught.value)
    assert message.startswith(f"{main_file}: key '{key}': ")
    assert problem in message


def test_min_age_error_message_is_exact(conf_d: Path, main_file: Path) -> None:
    write(main_file, "")
    drop_in = write(conf_d / "10-x.yaml", "min-age: abc\n")
    with pytest.raises(ConfigError) as caught:
        load_config(main_file, environ=NO_ENV)
    assert str(caught.value) == (
        f"{drop_in}: key 'min-age': bad duration 'abc' (expected e.g. 90s, 2m, 1h30m)"
    )


@pytest.mark.parametrize(("value", "seconds"), [("0s", 0.0), ("30", 30.0), ("2.5", 2.5)])
def test_min_age_accepts_zero_and_plain_numbers(
    main_file: Path, value: str, seconds: float
) -> None:
    write(main_file, f"min-age: {value}\n")
    assert load_config(main_file, environ=NO_ENV).min_age_seconds == seconds


def test_pinned_wildcards_skip_reference_parsing(main_file: Path) -> None:
    # "[" makes it a pattern: as a reference it would not parse.
    write(main_file, "pinned: ['registry.example.com/infra/*', 'pause:3.[0-9]', ' redis ']\n")
    loaded = load_config(main_file, environ=NO_ENV)
    assert loaded.pinned == ("registry.example.com/infra/*", "pause:3.[0-9]", "redis")


# --- drop-ins ------------------------------------------------------------------------


def test_drop_in_without_a_key_keeps_the_earlier_value(main_file: Path, conf_d: Path) -> None:
    """The flightctl agent's early bug (design.md section 2): a drop-in reset unmentioned keys."""
    write(main_file, "scope: all\nretain-previous: 2\n")
    write(conf_d / "50-pins.yaml", "pinned: [registry.example.com/infra/pause:3.9]\n")
    loaded = load_config(main_file, environ=NO_ENV)
    assert loaded.scope == "all"
    assert loaded.retain_previous == 2
    assert loaded.pinned == ("registry.example.com/infra/pause:3.9",)


def test_drop_ins_apply_in_lexical_order_and_lists_replace(main_file: Path, conf_d: Path) -> None:
    write(main_file, "min-age: 10m\npinned: [a.example.com/x:1, a.example.com/y:1]\n")
    second = write(conf_d / "20-later.yaml", "min-age: 0s\npinned: [b.example.com/z:1]\n")
    first = write(conf_d / "10-earlier.yaml", "min-age: 5m\nscope: all\n")
    write(conf_d / "30-ignored.yaml.bak", "scope: nonsense\n")
    write(conf_d / "README", "not yaml at all: [\n")

    loaded = load_config(main_file, environ=NO_ENV)
    assert loaded.min_age_seconds == 0.0
    assert loaded.scope == "all"
    assert loaded.pinned == ("b.example.com/z:1",)  # replaced, not appended
    assert loaded.sources == (str(main_file), str(first), str(second))


def test_drop_in_can_empty_a_list(main_file: Path, conf_d: Path) -> None:
    write(main_file, "pinned: [a.example.com/x:1]\n")
    write(conf_d / "10-unpin.yaml", "pinned: []\n")
    assert load_config(main_file, environ=NO_ENV).pinned == ()


def test_drop_ins_apply_when_the_default_main_file_is_absent(
    main_file: Path, conf_d: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drop_in = write(conf_d / "10-scope.yaml", "scope: all\n")
    monkeypatch.setattr(config, "DEFAULT_CONFIG_FILE", main_file)
    loaded = load_config(environ=NO_ENV)
    assert loaded.scope == "all"
    assert loaded.sources == (str(drop_in),)


def test_errors_in_a_drop_in_name_the_drop_in(main_file: Path, conf_d: Path) -> None:
    write(main_file, "scope: all\n")
    bad = write(conf_d / "10-bad.yaml", "retain-previous: many\n")
    with pytest.raises(ConfigError, match=f"^{bad}: key 'retain-previous'"):
        load_config(main_file, environ=NO_ENV)


# --- overrides and environment ---------------------------------------------------------


def test_overrides_win_over_files(main_file: Path, conf_d: Path) -> None:
    write(main_file, "scope: all\nmin-age: 5m\n")
    write(conf_d / "10-x.yaml", "retain-previous: 4\n")
    loaded = load_config(
        main_file,
        overrides={"scope": "managed", "min-age": "0s", "state-dir": Path("/tmp/state")},
        environ=NO_ENV,
    )
    assert loaded.scope == "managed"
    assert loaded.min_age_seconds == 0.0
    assert loaded.state_dir == Path("/tmp/state")
    assert loaded.retain_previous == 4  # not overridden


def test_override_of_none_means_flag_not_given(main_file: Path) -> None:
    write(main_file, "scope: all\n")
    loaded = load_config(main_file, overrides={"scope": None}, environ=NO_ENV)
    assert loaded.scope == "all"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"min-age": "soon"}, "command line: key 'min-age': bad duration 'soon'"),
        ({"retain-previous": "2"}, "command line: key 'retain-previous': expected a whole"),
        ({"no-such-flag": 1}, "command line: unknown key 'no-such-flag'"),
    ],
)
def test_overrides_are_validated(
    main_file: Path, overrides: dict[str, object], expected: str
) -> None:
    write(main_file, "")
    with pytest.raises(ConfigError) as caught:
        load_config(main_file, overrides=overrides, environ=NO_ENV)
    assert str(caught.value).startswith(expected)


def test_podman_url_precedence(main_file: Path) -> None:
    write(main_file, "")
    env = {"CONTAINER_HOST": "tcp://127.0.0.1:8080"}
    assert load_config(main_file, environ=NO_ENV).podman_url == DEFAULT_PODMAN_URL
    assert load_config(main_file, environ={"CONTAINER_HOST": ""}).podman_url == (DEFAULT_PODMAN_URL)
    assert load_config(main_file, environ=env).podman_url == "tcp://127.0.0.1:8080"
    write(main_file, "podman-url: unix:///tmp/podman.sock\n")
    assert load_config(main_file, environ=env).podman_url == "unix:///tmp/podman.sock"


def test_environ_defaults_to_the_process_environment(
    main_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(main_file, "")
    monkeypatch.setenv("CONTAINER_HOST", "unix:///from/env.sock")
    assert load_config(main_file).podman_url == "unix:///from/env.sock"


def test_key_table_targets_real_config_fields() -> None:
    """A row added for a later key must point at a Config field, or loading would crash."""
    fields = {field.name for field in dataclasses.fields(Config)}
    assert {key.field for key in CONFIG_KEYS.values()} <= fields - {"sources"}
    assert all(key == key.lower() and "_" not in key for key in CONFIG_KEYS)


def test_observability_keys_are_read(main_file: Path) -> None:
    write(
        main_file,
        """
log-format: json
trace-file: /var/log/edgeprune/traces.jsonl
trace-file-max-bytes: 2MiB
trace-file-backups: 0
otlp-endpoint: http://collector.example:4318
console-exporter: true
metrics-textfile: /var/lib/node_exporter/textfile_collector/edgeprune.prom
""",
    )
    loaded = load_config(main_file, environ=NO_ENV)
    assert loaded.log_format == "json"
    assert loaded.trace_file == Path("/var/log/edgeprune/traces.jsonl")
    assert loaded.trace_file_max_bytes == 2 * 1024 * 1024
    assert loaded.trace_file_backups == 0
    assert loaded.otlp_endpoint == "http://collector.example:4318"
    assert loaded.console_exporter is True
    assert loaded.metrics_textfile == Path(
        "/var/lib/node_exporter/textfile_collector/edgeprune.prom"
    )


@pytest.mark.parametrize(
    ("text", "trace_file", "max_bytes"),
    [
        ("", Path("traces.jsonl"), 5 * 1024 * 1024),  # the defaults: on, under state-dir
        ("trace-file: false\n", None, 5 * 1024 * 1024),
        ("trace-file-max-bytes: 1048576\n", Path("traces.jsonl"), 1048576),
        ("trace-file-max-bytes: 512KB\n", Path("traces.jsonl"), 512000),
    ],
)
def test_trace_file_defaults_and_sizes(
    main_file: Path, text: str, trace_file: Path | None, max_bytes: int
) -> None:
    write(main_file, text)
    loaded = load_config(main_file, environ=NO_ENV)
    assert (loaded.trace_file, loaded.trace_file_max_bytes) == (trace_file, max_bytes)


# --- trigger keys (docs/triggers.md) ---------------------------------------------------


def test_trigger_keys_are_read(main_file: Path, tmp_path: Path) -> None:
    from controller.diskmon import AlertRule, Severity

    agent = write(tmp_path / "flightctl" / "config.yaml", "spec-fetch-interval: 60s\n")
    write(
        main_file,
        f"""
agent-config: {agent}
disk-alert-rules:
  - severity: Critical
    percentage: 85
    duration: 5m
    description: nearly full
  - severity: warning
    percentage: 70
    duration: 0s
disk-sampling-interval: 30s
disk-paths: [/var, /data]
watch-poll-interval: 500ms
""",
    )
    loaded = load_config(main_file, environ=NO_ENV)
    assert loaded.agent_config == agent
    assert loaded.sources == (str(main_file), str(agent))
    assert loaded.enabled is True  # the agent's file does not say
    assert loaded.disk_alert_rules == (
        AlertRule(Severity.CRITICAL, 85.0, 300.0, "nearly full"),
        AlertRule(Severity.WARNING, 70.0, 0.0),
    )
    assert loaded.disk_sampling_seconds == 30.0
    assert loaded.disk_paths == (Path("/var"), Path("/data"))
    assert loaded.watch_poll_seconds == 0.5


def test_trigger_keys_default_to_unset(main_file: Path) -> None:
    write(main_file, "")
    loaded = load_config(main_file, environ=NO_ENV)
    assert (loaded.agent_config, loaded.disk_alert_rules, loaded.disk_sampling_seconds) == (
        None,
        None,
        None,
    )
    assert (loaded.disk_paths, loaded.watch_poll_seconds) == ((), 10.0)


def test_empty_rule_list_is_explicit(main_file: Path) -> None:
    write(main_file, "disk-alert-rules: []\n")
    assert load_config(main_file, environ=NO_ENV).disk_alert_rules == ()


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("agent-config", "''", "expected the agent's config file path"),
        ("disk-alert-rules", "{severity: critical}", "expected a list of rules"),
        ("disk-alert-rules", "[{severity: fatal, percentage: 9, duration: 1m}]", "severity must"),
        ("disk-alert-rules", "[{severity: critical, percentage: 900, duration: 1m}]", "0 to 100"),
        ("disk-sampling-interval", "0s", "must be more than 0s"),
        ("disk-sampling-interval", "often", "bad duration"),
        ("disk-paths", "/var", "expected a list of absolute paths"),
        ("disk-paths", "[var]", "expected absolute paths, got string 'var'"),
        ("watch-poll-interval", "-1", "bad duration"),
    ],
)
def test_bad_trigger_values_name_file_and_key(
    main_file: Path, key: str, value: str, problem: str
) -> None:
    write(main_file, f"{key}: {value}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(main_file, environ=NO_ENV)
    assert str(caught.value).startswith(f"{main_file}: key '{key}': ")
    assert problem in str(caught.value)


@pytest.mark.parametrize("kind", ["directory", "dangling-link", "fifo"])
def test_an_unusable_drop_in_is_an_error_not_silently_skipped(
    main_file: Path, conf_d: Path, kind: str
) -> None:
    import os

    write(main_file, "scope: all\n")
    write(conf_d / "10-pins.yaml", "pinned: [a.example.com/keep:1]\n")
    broken = conf_d / "20-broken.yaml"
    if kind == "directory":
        broken.mkdir()
    elif kind == "dangling-link":
        broken.symlink_to(conf_d / "gone.yaml")
    else:
        os.mkfifo(broken)  # must not block the loader
    with pytest.raises(ConfigError, match=r"20-broken\.yaml"):
        load_config(main_file, environ=NO_ENV)


def test_default_config_that_is_a_directory_is_an_error_not_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bogus = tmp_path / "config.yaml"
    bogus.mkdir()
    monkeypatch.setattr(config, "DEFAULT_CONFIG_FILE", bogus)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(None, environ=NO_ENV)


def test_absurd_values_are_config_errors_not_crashes(main_file: Path) -> None:
    write(main_file, "min-age: " + "9" * 400 + "h\n")
    with pytest.raises(ConfigError, match="min-age"):
        load_config(main_file, environ=NO_ENV)
    write(main_file, "pinned: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=str(main_file)):
        load_config(main_file, environ=NO_ENV)
