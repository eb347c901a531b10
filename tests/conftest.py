"""Shared fixtures: one private Podman sandbox per binary per session.

Tests that use `sandbox` (or `podman_sandbox`) are marked `podman`
automatically. Without Podman they are skipped locally and fail the run in CI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller import agentfiles
from controller.artifacts import ArtifactSource
from controller.config import Config
from controller.podman import PodmanStore, RetryPolicy
from controller.pruner import Pruner
from controller.report import Report
from controller.sandbox import PodmanBinary, Sandbox, available_binaries
from controller.stores import StoreTarget

_BINARIES = pytest.StashKey[list[PodmanBinary]]()
_SANDBOX_FIXTURES = {"podman_sandbox", "sandbox", "podman_store", "device", "other_sandbox"}


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def pytest_configure(config: pytest.Config) -> None:
    try:
        config.stash[_BINARIES] = available_binaries()
    except ValueError as error:
        raise pytest.UsageError(str(error)) from error


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "podman_sandbox" not in metafunc.fixturenames:
        return
    binaries: list[PodmanBinary | None] = [*metafunc.config.stash[_BINARIES]] or [None]
    metafunc.parametrize(
        "podman_sandbox",
        binaries,
        indirect=True,
        scope="session",
        ids=[b.label if b else "no-podman" for b in binaries],
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    needs_podman = False
    for item in items:
        if _SANDBOX_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.podman)
            needs_podman = True
    if needs_podman and not config.stash[_BINARIES] and _in_ci():
        raise pytest.UsageError(
            "CI must have Podman: no podman binary on PATH and none in "
            "EDGEPRUNE_PODMAN_BINARIES (run scripts/setup.sh as root)"
        )


@pytest.fixture(scope="session")
def podman_sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    """A started sandbox for one binary, shared by the whole session."""
    binary: PodmanBinary | None = request.param
    if binary is None:
        if _in_ci():
            pytest.fail("CI must have Podman, but no podman binary was found")
        pytest.skip("no podman binary found (install podman or run scripts/setup.sh as root)")
    with Sandbox(binary) as sandbox:
        yield sandbox


@pytest.fixture
def sandbox(podman_sandbox: Sandbox) -> Sandbox:
    """The session sandbox, emptied so each test starts from a clean store."""
    podman_sandbox.reset()
    return podman_sandbox


@pytest.fixture(scope="session")
def second_podman_sandbox(podman_sandbox: Sandbox) -> Iterator[Sandbox]:
    """Another started store of the same binary: a second user's store."""
    with Sandbox(podman_sandbox.binary) as sandbox:
        yield sandbox


@pytest.fixture
def other_sandbox(second_podman_sandbox: Sandbox) -> Sandbox:
    """The second store, emptied for each test."""
    second_podman_sandbox.reset()
    return second_podman_sandbox


@pytest.fixture
def podman_store(sandbox: Sandbox) -> Iterator[PodmanStore]:
    """An adapter on the clean sandbox; retries never sleep."""
    store = PodmanStore(sandbox.url, retry=RetryPolicy(sleep=lambda _seconds: None))
    yield store
    store.close()


REPO = Path(__file__).resolve().parents[1]


def edgeprune(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The real `edgeprune` command, run from the checkout (stdout and stderr kept apart)."""
    return subprocess.run(
        [sys.executable, "-m", "controller.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


class Device:
    """A simulated device: the agent's spec dir, edgeprune's state dir, its stores.

    `sandbox` is the agent's store; `add_store(user, sandbox)` gives a `runAs`
    user a store of its own. Each store's artifacts are reached through its
    own sandbox's CLI (Podman 5.4-5.5 has no artifacts API).
    """

    def __init__(self, sandbox: Sandbox, root: Path) -> None:
        self.sandbox = sandbox
        self.spec_dir = root / "flightctl"
        self.state_dir = root / "edgeprune"
        self.user_stores: dict[str, str] = {}  # user -> API URL
        self._sandboxes = {sandbox.url: sandbox}
        agentfiles.bootstrap(self.spec_dir)

    def add_store(self, user: str, store: Sandbox | str) -> None:
        """Route `user`'s store to a sandbox, or to a bare URL (e.g. one nobody serves)."""
        url = store if isinstance(store, str) else store.url
        if isinstance(store, Sandbox):
            self._sandboxes[url] = store
        self.user_stores[user] = url

    def config(self, **overrides: object) -> Config:
        values: dict[str, object] = {
            "spec_dir": self.spec_dir,
            "state_dir": self.state_dir,
            "podman_url": self.sandbox.url,
            "min_age_seconds": 0.0,
            "stores": tuple(sorted(self.user_stores.items())),
        }
        values.update(overrides)
        return Config(**values)  # type: ignore[arg-type]

    def artifact_source(self, target: StoreTarget) -> ArtifactSource:
        sandbox = self._sandboxes.get(target.url)
        if sandbox is None:
            return ArtifactSource(cli=None)
        argv, env = sandbox.cli()
        return ArtifactSource(cli=argv, env=env)

    def pruner(self, **overrides: object) -> Pruner:
        return Pruner(
            self.config(**overrides),
            store_factory=_no_sleep_store,
            artifact_source=self.artifact_source,
        )

    def prune(self, **overrides: object) -> Report:
        return self.pruner(**overrides).run_once(trigger="test")

    def cli_args(self, config: Path) -> list[str]:
        """The CLI flags that point a command at this device."""
        return [
            "--config",
            str(config),
            "--spec-dir",
            str(self.spec_dir),
            "--state-dir",
            str(self.state_dir),
            "--podman-url",
            self.sandbox.url,
        ]

    def image_names(self) -> set[str]:
        out = self.sandbox.podman("images", "--format", "{{.Repository}}:{{.Tag}}")
        return {line for line in out.stdout.split() if line}

    def image_ids(self) -> set[str]:
        out = self.sandbox.podman("images", "-a", "--no-trunc", "--format", "{{.ID}}")
        return {line.removeprefix("sha256:") for line in out.stdout.split() if line}


def _no_sleep_store(config: Config) -> PodmanStore:
    return PodmanStore(config.podman_url, retry=RetryPolicy(sleep=lambda _seconds: None))


@pytest.fixture
def device(sandbox: Sandbox, tmp_path: Path) -> Device:
    return Device(sandbox, tmp_path)
