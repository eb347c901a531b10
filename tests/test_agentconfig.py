"""The agent's `image-pruning: {enabled: ...}` and edgeprune's own `enabled` winning."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.agentconfig import read_agent_pruning
from controller.config import ConfigError, load_config

NO_ENV: dict[str, str] = {}

AGENT_MAIN = """\
enrollment-service:
  service:
    server: https://agent-api.example.com
spec-fetch-interval: 60s
image-pruning:
  enabled: true
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def agent(tmp_path: Path) -> Path:
    return write(tmp_path / "flightctl" / "config.yaml", AGENT_MAIN)


def test_agent_knob_is_read_after_its_drop_ins(agent: Path) -> None:
    drop_ins = agent.parent / "conf.d"
    write(drop_ins / "20-off.yaml", "image-pruning:\n  enabled: false\n")
    write(drop_ins / "10-other.yaml", "log-level: debug\n")  # does not name it
    write(drop_ins / "30-empty.yaml", "image-pruning: {}\n")  # names the section only
    write(drop_ins / "40-notes.yml", "image-pruning: {enabled: true}\n")  # not *.yaml
    result = read_agent_pruning(agent)
    assert result.enabled is False
    assert result.source == str(drop_ins / "20-off.yaml")
    assert result.files == (
        str(agent),
        str(drop_ins / "10-other.yaml"),
        str(drop_ins / "20-off.yaml"),
        str(drop_ins / "30-empty.yaml"),
    )


def test_agent_config_without_the_knob_says_nothing(tmp_path: Path) -> None:
    agent = write(tmp_path / "config.yaml", "spec-fetch-interval: 60s\n")
    assert read_agent_pruning(agent).enabled is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("image-pruning: [on]\n", "'image-pruning' must be a mapping"),
        (
            "image-pruning:\n  enabled: yes please\n",
            "'image-pruning.enabled' must be true or false",
        ),
        ("image-pruning: {enabled: [x\n", "(?s)invalid YAML.*in the agent's config"),
        ("- a list\n", "expected a mapping of settings at the top level.*in the agent's config"),
    ],
)
def test_malformed_agent_config_is_an_error_naming_the_file(
    tmp_path: Path, text: str, problem: str
) -> None:
    agent = write(tmp_path / "config.yaml", text)
    with pytest.raises(ConfigError, match=problem) as caught:
        read_agent_pruning(agent)
    assert str(caught.value).startswith(str(agent))


def test_missing_agent_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"the agent's config file \(agent-config\) is not found"):
        read_agent_pruning(tmp_path / "nowhere.yaml")


# --- through load_config --------------------------------------------------------------


def test_agent_turns_pruning_off_when_edgeprune_says_nothing(agent: Path, tmp_path: Path) -> None:
    write(agent.parent / "conf.d" / "50-off.yaml", "image-pruning: {enabled: false}\n")
    own = write(tmp_path / "edgeprune" / "config.yaml", f"agent-config: {agent}\n")
    config = load_config(own, environ=NO_ENV)
    assert config.enabled is False
    assert config.agent_config == agent
    assert str(agent.parent / "conf.d" / "50-off.yaml") in config.sources


def test_edgeprunes_own_enabled_wins_from_any_layer(agent: Path, tmp_path: Path) -> None:
    write(agent.parent / "conf.d" / "50-off.yaml", "image-pruning: {enabled: false}\n")
    own = write(tmp_path / "edgeprune" / "config.yaml", f"agent-config: {agent}\n")
    write(own.parent / "conf.d" / "10-on.yaml", "enabled: true\n")  # explicit, even if default
    assert load_config(own, environ=NO_ENV).enabled is True


def test_agent_turns_pruning_on_and_the_flag_points_at_it(agent: Path, tmp_path: Path) -> None:
    own = write(tmp_path / "edgeprune" / "config.yaml", "min-age: 5m\n")
    assert load_config(own, environ=NO_ENV).enabled is True  # not pointed at: the default
    write(agent, "image-pruning: {enabled: false}\n")
    flagged = load_config(own, overrides={"agent-config": str(agent)}, environ=NO_ENV)
    assert flagged.enabled is False
    explicit = load_config(
        own, overrides={"agent-config": str(agent), "enabled": True}, environ=NO_ENV
    )
    assert explicit.enabled is True


def test_bad_agent_config_stops_loading(tmp_path: Path) -> None:
    agent = write(tmp_path / "flightctl" / "config.yaml", "image-pruning: {enabled: 1}\n")
    own = write(tmp_path / "edgeprune" / "config.yaml", f"agent-config: {agent}\n")
    with pytest.raises(ConfigError, match="must be true or false"):
        load_config(own, environ=NO_ENV)
