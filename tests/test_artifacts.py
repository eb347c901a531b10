"""OCI artifacts on real Podman: REST (5.6+), the CLI (5.4-5.5), or unsupported (4.3).

Every Podman test runs once per binary (system Podman plus the Podman 5
builds of scripts/provision-podman5.sh); a test that needs a feature the
binary lacks skips on that binary only. Mocks appear only in the unit tests
at the end, for answers real Podman cannot be made to give.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest
from pytest_mock import MockerFixture

from controller.artifacts import (
    Access,
    ArtifactError,
    ArtifactSource,
    ArtifactStore,
    read_layout,
)
from controller.model import Artifact
from controller.podman import PodmanStore, RetryPolicy
from controller.sandbox import Sandbox


def podman_version(sandbox: Sandbox) -> tuple[int, int]:
    out = sandbox.podman("version", "--format", "{{.Client.Version}}").stdout.strip()
    major, minor = out.split(".")[:2]
    return int(major), int(minor)


def expected_access(sandbox: Sandbox) -> Access:
    version = podman_version(sandbox)
    if version >= (5, 6):
        return Access.REST
    return Access.CLI if version >= (5, 4) else Access.NONE


def needs_artifacts(sandbox: Sandbox) -> None:
    if podman_version(sandbox) < (5, 4):
        pytest.skip(f"{sandbox.binary.label}: no OCI artifacts before Podman 5.4")


def artifact_store(sandbox: Sandbox, **source: Any) -> ArtifactStore:
    argv, env = sandbox.cli()
    store = PodmanStore(sandbox.url, retry=RetryPolicy(sleep=lambda _seconds: None))
    return ArtifactStore(store, ArtifactSource(**{"cli": argv, "env": env, **source}))


def add_artifact(sandbox: Sandbox, name: str, content: str) -> str:
    """`podman artifact add`; returns the digest it prints."""
    path = sandbox.root / "tmp" / "artifact-file"
    path.write_text(content)
    return "sha256:" + sandbox.podman("artifact", "add", name, str(path)).stdout.strip()


class TinyRegistry:
    """A pull-only OCI registry on 127.0.0.1, for re-pulling a moved tag.

    Manifests are served indented, as many real registries hold them: the
    bytes (and so the digest) differ from Podman's own re-encoding.
    """

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[tuple[str, str], bytes] = {}
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self.answer(send_body=False)

            def do_GET(self) -> None:
                self.answer(send_body=True)

            def answer(self, send_body: bool) -> None:
                path = self.path.partition("?")[0]
                body, kind = b"{}", "application/json"
                found = path in ("/v2/", "/v2")
                if "/manifests/" in path:
                    repo, _, ref = path.removeprefix("/v2/").partition("/manifests/")
                    body = registry.manifests.get((repo, ref), b"{}")
                    kind = "application/vnd.oci.image.manifest.v1+json"
                    found = (repo, ref) in registry.manifests
                elif "/blobs/" in path:
                    digest = path.partition("/blobs/")[2]
                    body = registry.blobs.get(digest, b"{}")
                    kind, found = "application/octet-stream", digest in registry.blobs
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Docker-Content-Digest", _digest(body))
                self.end_headers()
                if send_body:
                    self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"localhost:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def publish(self, repo: str, tag: str, content: str) -> str:
        """Point repo:tag at a one-file artifact; returns its manifest digest."""
        config, layer = b"{}", content.encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.edgeprune.test",
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": self._blob(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "text/plain",
                    "digest": self._blob(layer),
                    "size": len(layer),
                    "annotations": {"org.opencontainers.image.title": "data.txt"},
                }
            ],
        }
        body = json.dumps(manifest, indent=1).encode()
        digest = self._blob(body)
        self.manifests[(repo, tag)] = self.manifests[(repo, digest)] = body
        return digest

    def _blob(self, data: bytes) -> str:
        self.blobs[_digest(data)] = data
        return _digest(data)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def registry() -> Iterator[TinyRegistry]:
    reg = TinyRegistry()
    yield reg
    reg.close()


@pytest.fixture
def private_sandbox(podman_sandbox: Sandbox) -> Iterator[Sandbox]:
    """A fresh store of the same binary: one holding an unnamed artifact
    cannot be emptied through Podman, so it must not be the shared one."""
    with Sandbox(podman_sandbox.binary) as own:
        yield own


def pull(sandbox: Sandbox, ref: str) -> None:
    sandbox.podman("artifact", "pull", "--tls-verify=false", "--retry", "0", ref)


# -- on real Podman -------------------------------------------------------------


def test_access_is_rest_from_5_6_cli_from_5_4_and_none_before(sandbox: Sandbox) -> None:
    assert artifact_store(sandbox).access is expected_access(sandbox)


def test_lists_named_artifacts_with_digest_and_size(sandbox: Sandbox) -> None:
    needs_artifacts(sandbox)
    models = add_artifact(sandbox, "localhost/vol/models:1", "eleven byte")
    config = add_artifact(sandbox, "localhost/vol/config", "four")  # no tag: listed without one

    listing = artifact_store(sandbox).list()

    assert listing.access is expected_access(sandbox)
    assert set(listing.artifacts) == {
        Artifact("localhost/vol/models:1", models, 11),
        Artifact("localhost/vol/config", config, 4),
    }
    assert listing.notes == ()


def test_sandbox_reset_empties_the_artifacts(sandbox: Sandbox) -> None:
    needs_artifacts(sandbox)
    add_artifact(sandbox, "localhost/vol/leftover:1", "x")
    sandbox.reset()
    assert artifact_store(sandbox).list().artifacts == ()


def test_removes_by_name_and_a_second_removal_is_already_gone(sandbox: Sandbox) -> None:
    needs_artifacts(sandbox)
    old = add_artifact(sandbox, "localhost/vol/data:1", "old data")
    new = add_artifact(sandbox, "localhost/vol/data:2", "new data!")
    artifacts = artifact_store(sandbox)
    target = Artifact("localhost/vol/data:1", old, 8)

    first = artifacts.remove(target)
    second = artifacts.remove(target)

    assert (first.status, second.status) == ("removed", "already-gone")
    assert "localhost/vol/data:1" in second.detail  # Podman's own words
    assert artifacts.list().artifacts == (Artifact("localhost/vol/data:2", new, 9),)
    listed = sandbox.podman("artifact", "ls", "--noheading", "--format", "{{.Tag}}").stdout
    assert listed.split() == ["2"]


def test_a_pulled_artifact_has_the_registry_digest_not_podmans_recomputed_one(
    sandbox: Sandbox, registry: TinyRegistry
) -> None:
    needs_artifacts(sandbox)
    digest = registry.publish("vol/model", "1", "weights v1")
    pull(sandbox, f"{registry.host}/vol/model:1")
    inspected = sandbox.podman("artifact", "inspect", f"{registry.host}/vol/model:1").stdout

    listing = artifact_store(sandbox).list()

    assert json.loads(inspected)["Digest"] != digest  # what Podman itself would say
    assert listing.artifacts == (Artifact(f"{registry.host}/vol/model:1", digest, 10),)


def test_an_unnamed_artifact_is_listed_and_reported_and_not_taken_for_gone(
    private_sandbox: Sandbox, registry: TinyRegistry
) -> None:
    sandbox = private_sandbox
    needs_artifacts(sandbox)
    ref = f"{registry.host}/vol/model:1"
    previous = registry.publish("vol/model", "1", "weights v1")
    pull(sandbox, ref)
    current = registry.publish("vol/model", "1", "weights v2!")  # the tag moves
    pull(sandbox, ref)  # Podman keeps the previous manifest, unnamed
    local = add_artifact(sandbox, "localhost/vol/config:1", "cfg")
    artifacts = artifact_store(sandbox)
    unnamed = Artifact(None, previous, 10)

    listing = artifacts.list()

    assert set(listing.artifacts) == {
        unnamed,
        Artifact(ref, current, 11),
        Artifact("localhost/vol/config:1", local, 3),
    }
    assert any("1 unnamed artifact(s)" in note for note in listing.notes)
    if listing.access is Access.CLI:
        assert "podman artifact ls fails on unnamed artifacts: listed from the index" in (
            listing.notes
        )
    # Podman looks artifacts up by name: "does not exist" is not "gone".
    refused = artifacts.remove(unnamed)
    assert refused.status == "not-removable"
    assert previous in refused.detail
    assert artifacts.remove(Artifact(ref, current, 11)).status == "removed"
    assert set(artifacts.list().artifacts) == {
        Artifact("localhost/vol/config:1", local, 3),
        unnamed,
    }


def test_unsupported_is_reported_once_and_is_no_error(
    sandbox: Sandbox, mocker: MockerFixture, caplog: pytest.LogCaptureFixture
) -> None:
    if podman_version(sandbox) >= (5, 4):
        pytest.skip(f"{sandbox.binary.label} has artifacts")
    argv, env = sandbox.cli()
    mocker.patch("controller.artifacts._SAID", set())  # as in a fresh process
    store = PodmanStore(sandbox.url, retry=RetryPolicy(sleep=lambda _seconds: None))
    probe = mocker.spy(store, "request")
    artifacts = ArtifactStore(store, ArtifactSource(cli=argv, env=env))

    with caplog.at_level(logging.INFO, logger="controller.artifacts"):
        first, second = artifacts.list(), artifacts.list()
        removal = artifacts.remove(Artifact("localhost/vol/x:1", "sha256:" + "0" * 64))

    version = sandbox.podman("version", "--format", "{{.Client.Version}}").stdout.strip()
    assert first == second
    assert (first.access, first.artifacts) == (Access.NONE, ())
    assert first.notes == (
        f"not supported by this Podman ({version}): no /libpod/artifacts API (Podman 5.6+)"
        " and no `podman artifact` command (Podman 5.4+)",
    )
    assert (removal.status, removal.detail) == ("not-removable", first.notes[0])
    assert [r.getMessage() for r in caplog.records] == [f"artifacts: {first.notes[0]}"]
    assert [c.args[2] for c in probe.call_args_list] == ["/artifacts/json"]  # probed once
    # the next run's store (a daemon runs often) does not say it again at INFO
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="controller.artifacts"):
        ArtifactStore(store, ArtifactSource(cli=argv, env=env)).list()
    assert caplog.records == []


def test_a_cli_era_podman_without_its_cli_is_unsupported(sandbox: Sandbox) -> None:
    if expected_access(sandbox) is not Access.CLI:
        pytest.skip(f"{sandbox.binary.label} is not a Podman 5.4-5.5")
    listing = artifact_store(sandbox, cli=None).list()
    assert listing.access is Access.NONE
    assert listing.notes == (
        "not supported by this Podman service: no /libpod/artifacts API (Podman 5.6+),"
        " no CLI configured",
    )


# -- unit tests: answers real Podman cannot be made to give --------------------------


def fake_store(mocker: MockerFixture, answers: dict[str, tuple[int, Any]]) -> PodmanStore:
    store = mocker.create_autospec(PodmanStore, instance=True)
    store.request.side_effect = lambda _op, _method, path, **_: answers[path]
    return store


def cli_answers(*procs: tuple[int, str, str]) -> Any:
    replies = iter(procs)

    def run(argv: list[str], **_: Any) -> CompletedProcess[str]:
        code, out, err = next(replies)
        return CompletedProcess(argv, code, out, err)

    return run


def test_a_cli_listing_failure_other_than_unnamed_raises(mocker: MockerFixture) -> None:
    store = fake_store(mocker, {"/artifacts/json": (404, None)})
    run = cli_answers(
        (0, "5.4.2\n", ""),
        (125, "", 'time="x" level=warning msg="cgroups-v1"\nError: database is locked\n'),
    )
    artifacts = ArtifactStore(store, ArtifactSource(cli=("podman",)), run=run)

    with pytest.raises(ArtifactError, match=r"^podman artifact ls: database is locked$"):
        artifacts.list()


def test_a_missing_cli_binary_means_unsupported_with_the_reason(mocker: MockerFixture) -> None:
    store = fake_store(mocker, {"/artifacts/json": (404, None)})

    def run(argv: list[str], **_: Any) -> CompletedProcess[str]:
        raise FileNotFoundError(2, "No such file or directory", argv[0])

    listing = ArtifactStore(store, ArtifactSource(cli=("/opt/no/podman",)), run=run).list()

    assert listing.access is Access.NONE
    assert listing.notes[0].startswith("not supported: no /libpod/artifacts API (Podman 5.6+)")
    assert "cannot run /opt/no/podman version" in listing.notes[0]


def test_an_unnamed_artifact_without_a_digest_is_not_removable(mocker: MockerFixture) -> None:
    store = fake_store(mocker, {"/artifacts/json": (200, [])})
    removal = ArtifactStore(store).remove(Artifact(None, ""))
    assert (removal.status, removal.detail) == (
        "not-removable",
        "unnamed and its digest is unknown",
    )
    assert [c.args[2] for c in store.request.call_args_list] == ["/artifacts/json"]


def test_a_rest_listing_with_an_unreadable_index_keeps_podmans_digests(
    mocker: MockerFixture, tmp_path: Path
) -> None:
    manifest = {"layers": [{"size": 5}, {"size": 7}]}
    store = fake_store(
        mocker,
        {
            "/artifacts/json": (200, [{"Name": "q.io/a:1", "Manifest": manifest}]),
            "/artifacts/q.io%2Fa%3A1/json": (200, {"Digest": "sha256:abc", "Manifest": manifest}),
            "/info": (200, {"store": {"graphRoot": str(tmp_path)}}),
        },
    )
    listing = ArtifactStore(store).list()

    assert listing.artifacts == (Artifact("q.io/a:1", "sha256:abc", 12),)
    assert listing.notes == (
        "digests as Podman recomputes them, not as stored: "
        f"{tmp_path}/artifacts/index.json: unreadable: [Errno 2] No such file or directory:"
        f" '{tmp_path}/artifacts/index.json'",
    )


@pytest.mark.parametrize(
    ("index", "error"),
    [
        (None, "index.json: unreadable"),
        ("{not json", "index.json: unreadable"),
        ('{"manifests": 3}', "index.json: no manifests list"),
        ('{"manifests": [{"digest": "sha256:../../etc/passwd"}]}', "bad digest"),
        ('{"manifests": [{"digest": "sha256:ab"}]}', "blobs/sha256/ab: unreadable"),
    ],
)
def test_read_layout_refuses_a_malformed_index(
    tmp_path: Path, index: str | None, error: str
) -> None:
    (tmp_path / "artifacts").mkdir()
    if index is not None:
        (tmp_path / "artifacts" / "index.json").write_text(index)
    with pytest.raises(ArtifactError, match=error):
        read_layout(tmp_path)
