"""The Podman adapter against a real Podman service (private sandbox store).

Mocks appear only for faults real Podman cannot produce on demand (a 503).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
from podman.errors import APIError

from controller.podman import (
    ImageInUse,
    PodmanError,
    PodmanStore,
    PodmanUnavailable,
    RetryPolicy,
    image_from_attrs,
    is_transient,
)
from controller.sandbox import Sandbox


class Recorder:
    """Collects injected sleeps and on_retry calls; never actually waits."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.retries: list[tuple[str, int, float, BaseException]] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def on_retry(self, operation: str, attempt: int, wait: float, error: BaseException) -> None:
        self.retries.append((operation, attempt, wait, error))

    def store(self, url: str, **policy: Any) -> PodmanStore:
        return PodmanStore(
            url, retry=RetryPolicy(sleep=self.sleep, **policy), on_retry=self.on_retry
        )


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def http_error(status: int, message: str) -> APIError:
    response = requests.Response()
    response.status_code = status
    return APIError(message, response=response, explanation=message)


def requested_paths(spy: Any) -> list[str]:
    return [call.args[1] for call in spy.call_args_list]


# -- inventory ----------------------------------------------------------------


def test_inventory_of_tagged_multi_tag_dangling_and_held_images(
    sandbox: Sandbox, podman_store: PodmanStore
) -> None:
    web = sandbox.make_image("localhost/app/web:1", "web")
    api = sandbox.make_image("localhost/app/api:1", "api")
    sandbox.tag(api, "localhost/app/api:latest")
    orphan = sandbox.make_image(None, "orphan")
    db = sandbox.make_image("localhost/app/db:1", "db")
    holder = sandbox.create_container("localhost/app/db:1", "holder")

    inventory = podman_store.inventory(now=1234.5)
    images = inventory.by_id()

    assert set(images) == {web, api, orphan, db}
    assert inventory.taken_at == 1234.5
    assert inventory.storage_path == str(sandbox.storage_path)
    assert images[web].names == ("localhost/app/web:1",)
    assert set(images[api].names) == {"localhost/app/api:1", "localhost/app/api:latest"}
    assert images[orphan].dangling and images[orphan].names == ()
    assert not any(images[i].dangling for i in (web, api, db))
    for image in images.values():
        assert image.digests and all(d.startswith("sha256:") for d in image.digests)
        assert image.size > 0 and image.created > 0
        assert image.unique_size is not None and 0 < image.unique_size <= image.size
        assert not image.is_manifest_list
    # Each repo digest's digest is among the digests (Digest + RepoDigests).
    for ref in images[web].repo_digests:
        assert ref.partition("@")[2] in images[web].digests

    (container,) = inventory.containers
    assert container.id == holder
    assert container.names == ("holder",)
    assert container.image_id == db
    assert container.image == "localhost/app/db:1"
    assert container.state == "created"


def test_inventory_call_count_does_not_grow_with_images(
    sandbox: Sandbox, podman_store: PodmanStore, mocker: Any
) -> None:
    spy = mocker.spy(podman_store._client.api, "request")
    sandbox.make_image("localhost/a:1", "a")
    podman_store.inventory(now=0)
    few = len(spy.call_args_list)
    for n in range(5):
        sandbox.make_image(f"localhost/more:{n}", f"more {n}")
    spy.reset_mock()
    podman_store.inventory(now=0)
    # images, df, containers, manifest-list listing, info
    assert len(spy.call_args_list) == few == 5
    assert not any("/manifests/" in path for path in requested_paths(spy))


def test_manifest_list_detected_with_instances_and_no_registry_call(
    sandbox: Sandbox, podman_store: PodmanStore, mocker: Any
) -> None:
    amd = sandbox.make_image("localhost/app/multi:amd64", "amd64 build")
    arm = sandbox.make_image("localhost/app/multi:arm64", "arm64 build")
    plain = sandbox.make_image("localhost/app/plain:1", "plain")
    manifest = sandbox.make_manifest_list(
        "localhost/app/multi:1", "localhost/app/multi:amd64", "localhost/app/multi:arm64"
    )
    spy = mocker.spy(podman_store._client.api, "request")

    images = podman_store.inventory(now=0).by_id()

    listed = images[manifest]
    assert listed.is_manifest_list
    assert listed.names == ("localhost/app/multi:1",)
    assert set(listed.manifest_instances) == {images[amd].digests[0], images[arm].digests[0]}
    for other in (amd, arm, plain):
        assert not images[other].is_manifest_list
        assert images[other].manifest_instances == ()
    # Only the list itself is inspected through /manifests: inspecting a
    # plain image that way makes Podman contact the registry.
    inspected = [p for p in requested_paths(spy) if "/manifests/" in p]
    assert len(inspected) == 1 and manifest in inspected[0]
    assert len(spy.call_args_list) == 6


def test_image_known_only_by_digest_is_not_dangling() -> None:
    digest = "sha256:" + "ab" * 32
    image = image_from_attrs(
        {
            "Id": "sha256:" + "cd" * 32,
            "RepoTags": ["<none>:<none>"],
            "RepoDigests": [f"quay.io/app/web@{digest}"],
            "Digest": digest,
            "Size": 10,
            "Created": 5,
        }
    )
    assert image.id == "cd" * 32
    assert image.names == ()
    assert image.digests == (digest,)
    assert not image.dangling


# -- removal ------------------------------------------------------------------


def test_remove_last_name_removes_the_image(sandbox: Sandbox, podman_store: PodmanStore) -> None:
    web = sandbox.make_image("localhost/app/web:1", "web")

    result = podman_store.remove_image("localhost/app/web:1")

    assert result.status == "removed"
    assert web in result.deleted
    assert result.untagged == ("localhost/app/web:1",)
    assert web not in podman_store.image_ids()


def test_remove_one_of_two_tags_only_untags(sandbox: Sandbox, podman_store: PodmanStore) -> None:
    web = sandbox.make_image("localhost/app/web:1", "web")
    sandbox.tag(web, "localhost/app/web:2")

    result = podman_store.remove_image("localhost/app/web:2")

    assert result.status == "untagged"
    assert result.untagged == ("localhost/app/web:2",)
    assert result.deleted == ()
    assert web in podman_store.image_ids()


def test_remove_missing_image_is_already_gone(sandbox: Sandbox, podman_store: PodmanStore) -> None:
    web = sandbox.make_image("localhost/app/web:1", "web")
    assert podman_store.remove_image(web).status == "removed"

    assert podman_store.remove_image(web).status == "already-gone"
    assert podman_store.remove_image("localhost/never/was:1").status == "already-gone"


def test_remove_image_in_use_names_the_container_and_keeps_both(
    sandbox: Sandbox, recorder: Recorder
) -> None:
    web = sandbox.make_image("localhost/app/web:1", "web")
    holder = sandbox.create_container("localhost/app/web:1", "holder")

    with recorder.store(sandbox.url) as store, pytest.raises(ImageInUse) as caught:
        store.remove_image("localhost/app/web:1")

    assert caught.value.containers == (holder,)
    assert "localhost/app/web:1" in str(caught.value)
    assert recorder.retries == [] and recorder.sleeps == []
    assert web in set(
        sandbox.podman("images", "-q", "--no-trunc").stdout.replace("sha256:", "").split()
    )
    assert holder in sandbox.podman("ps", "-aq", "--no-trunc").stdout


def test_remove_by_id_with_several_tags_is_not_retried(
    sandbox: Sandbox, recorder: Recorder, mocker: Any
) -> None:
    web = sandbox.make_image("localhost/app/web:1", "web")
    sandbox.tag(web, "localhost/app/web:2")

    with recorder.store(sandbox.url) as store:
        spy = mocker.spy(store._client.images, "remove")
        with pytest.raises(PodmanError) as caught:
            store.remove_image(web)
        assert web in store.image_ids()

    assert not isinstance(caught.value, (ImageInUse, PodmanUnavailable))
    assert "HTTP 500" in str(caught.value) and "more than one tag" in str(caught.value)
    assert spy.call_count == 1
    assert recorder.retries == [] and recorder.sleeps == []


def test_transient_503_is_retried_then_succeeds(
    sandbox: Sandbox, recorder: Recorder, mocker: Any
) -> None:
    web = sandbox.make_image("localhost/app/web:1", "web")
    with recorder.store(sandbox.url) as store:
        real_remove = store._client.images.remove
        unavailable = http_error(503, "service restarting")
        faults = [unavailable]

        def flaky_remove(*args: Any, **kwargs: Any) -> Any:
            if faults:
                raise faults.pop()
            return real_remove(*args, **kwargs)

        mocker.patch.object(store._client.images, "remove", side_effect=flaky_remove)

        result = store.remove_image(web)

    assert result.status == "removed"
    assert recorder.sleeps == [0.5]
    assert recorder.retries == [(f"remove image {web}", 1, 0.5, unavailable)]


def test_persistent_5xx_gives_podman_error_after_all_attempts(
    sandbox: Sandbox, recorder: Recorder, mocker: Any
) -> None:
    with recorder.store(sandbox.url, attempts=3) as store:
        mocker.patch.object(store._client, "info", side_effect=http_error(502, "bad gateway"))
        with pytest.raises(PodmanError) as caught:
            store.inventory(now=0)

    assert not isinstance(caught.value, PodmanUnavailable)
    assert "info failed after 3 attempts" in str(caught.value)
    assert [attempt for _, attempt, _, _ in recorder.retries] == [1, 2]


# -- unreachable service --------------------------------------------------------


@pytest.mark.parametrize("operation", ["inventory", "remove_image", "image_ids"])
def test_dead_socket_gives_unavailable_after_configured_attempts(
    tmp_path: Path, recorder: Recorder, operation: str
) -> None:
    url = f"unix://{tmp_path}/podman.sock"  # nothing listens there
    store = recorder.store(url, attempts=5, initial_wait=0.5, max_wait=2.0)

    call = {
        "inventory": lambda: store.inventory(now=0),
        "remove_image": lambda: store.remove_image("localhost/app/web:1"),
        "image_ids": store.image_ids,
    }[operation]
    with pytest.raises(PodmanUnavailable) as caught:
        call()

    assert caught.value.url == url and url in str(caught.value)
    assert "after 5 attempts" in str(caught.value)
    # Exponential backoff capped at max_wait, and no real sleeping.
    assert recorder.sleeps == [0.5, 1.0, 2.0, 2.0]
    assert [(attempt, wait) for _, attempt, wait, _ in recorder.retries] == [
        (1, 0.5),
        (2, 1.0),
        (3, 2.0),
        (4, 2.0),
    ]
    assert all(isinstance(error, APIError) for *_, error in recorder.retries)


def test_failing_retry_hook_does_not_break_the_operation(tmp_path: Path) -> None:
    def broken_hook(*_: object) -> None:
        raise RuntimeError("exporter down")

    store = PodmanStore(
        f"unix://{tmp_path}/podman.sock",
        retry=RetryPolicy(attempts=2, sleep=lambda _s: None),
        on_retry=broken_hook,
    )
    with pytest.raises(PodmanUnavailable):
        store.image_ids()


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (requests.ConnectionError("reset"), True),
        (requests.Timeout("slow"), True),
        (APIError("GET failed"), True),  # no response: connection-level
        (http_error(503, "unavailable"), True),
        (http_error(500, "database is locked"), True),
        (http_error(500, 'unable to delete image "x" by ID with more than one tag'), False),
        (http_error(404, "image not known"), False),
        (http_error(409, "image is in use by a container"), False),
        (ValueError("bad json"), False),
    ],
)
def test_only_transient_errors_are_retryable(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


def test_bare_exit_code_zero_counts_as_removed_anything_else_unexpected_is_an_error() -> None:
    from controller.podman import _remove_result

    # Podman 4.3 answers an intermediate image's removal with only an exit code.
    assert _remove_result("abc", [{"ExitCode": 0}]).status == "removed"
    assert _remove_result("abc", []).status == "already-gone"
    assert _remove_result("a:1", [{"Untagged": "a:1"}, {"ExitCode": 0}]).status == "untagged"
    for odd in ([{"ExitCode": 1}], [{"Errors": "boom"}, {"ExitCode": 0}], [{"Something": 1}]):
        with pytest.raises(PodmanError, match="unexpected report"):
            _remove_result("abc", odd)
