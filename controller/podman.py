"""The only module that talks to Podman (its REST API, through podman-py).

It turns Podman's listings into `model` objects with a constant number of
calls, removes images without force, and retries only transient failures.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import requests
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from podman import PodmanClient
from podman.errors import APIError, ImageNotFound
from podman.errors import PodmanError as ClientError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from controller.model import Container, Image, Inventory

log = logging.getLogger(__name__)

T = TypeVar("T")

# Podman answers 500 to "remove by ID an image with several tags": a refusal
# that no retry will change.
_NOT_TRANSIENT_5XX = ("more than one tag",)
_IN_USE_BY = re.compile(r"used by ([0-9a-f]{12,64})")


class PodmanError(Exception):
    """A non-transient failure; the message names the call and the reason."""


class PodmanUnavailable(PodmanError):
    """The service could not be reached (after retries)."""

    def __init__(self, message: str, url: str) -> None:
        super().__init__(message)
        self.url = url


class ImageInUse(PodmanError):
    """Removal refused (HTTP 409): containers still use the image."""

    def __init__(self, message: str, containers: tuple[str, ...]) -> None:
        super().__init__(message)
        self.containers = containers


@dataclass(frozen=True)
class RemoveResult:
    status: str  # "removed" (something Deleted) | "untagged" | "already-gone"
    deleted: tuple[str, ...] = ()
    untagged: tuple[str, ...] = ()


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    initial_wait: float = 0.5
    max_wait: float = 8.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)


# (operation, attempt number, wait seconds, error), called before each retry sleep.
RetryHook = Callable[[str, int, float, BaseException], None]


def is_transient(error: BaseException) -> bool:
    """Connection loss, timeouts and 5xx other than "more than one tag"."""
    if isinstance(error, requests.ConnectionError | requests.Timeout):
        return True
    if not isinstance(error, APIError):
        return False
    if error.status_code is None:  # podman-py wraps socket/connection errors this way
        return True
    if error.status_code >= 500:
        return not any(text in _error_text(error) for text in _NOT_TRANSIENT_5XX)
    return False


def _is_connection_error(error: BaseException) -> bool:
    if isinstance(error, requests.ConnectionError | requests.Timeout):
        return True
    return isinstance(error, APIError) and error.status_code is None


def _error_text(error: BaseException) -> str:
    if isinstance(error, APIError):
        return str(error.explanation or error)
    return str(error)


def _describe(error: BaseException) -> str:
    if isinstance(error, APIError) and error.status_code is not None:
        return f"HTTP {error.status_code}: {_error_text(error)}"
    cause = error.__cause__
    return f"{_error_text(error)} ({cause})" if cause else _error_text(error)


class PodmanStore:
    """One Podman service (one store owner) behind retries."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),  # frozen: safe as a default
        on_retry: RetryHook | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.url = url
        self._retry = retry
        self._on_retry = on_retry
        # Where the call spans go; the Pruner sets it to the run's tracer.
        self.tracer = tracer or trace.get_tracer("edgeprune")
        self._client = PodmanClient(base_url=url, timeout=timeout)

    def __enter__(self) -> PodmanStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    # -- calls --------------------------------------------------------------

    def inventory(self, now: float) -> Inventory:
        """Images, containers and graphRoot with a fixed number of list calls.

        Only manifest lists are inspected (one call each): inspecting a plain
        image through /manifests makes Podman go to the registry.
        """
        images = self._call("list images", lambda: _attrs(self._client.images.list(all=True)))
        df = self._call("system df", self._client.df)
        containers = self._call(
            "list containers", lambda: _attrs(self._client.containers.list(all=True))
        )
        list_ids = self._manifest_list_ids(images)
        instances = {
            list_id: self._call(
                "inspect manifest list",
                lambda list_id=list_id: self._get_json(f"/manifests/{list_id}/json"),
                target=list_id[:12],
            )
            for list_id in list_ids
        }
        info = self._call("info", self._client.info)
        try:
            return build_inventory(images, df, containers, instances, info, now)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise PodmanError(
                f"inventory: unexpected response from {self.url}: {error!r}"
            ) from error

    def remove_image(self, name_or_id: str) -> RemoveResult:
        """Remove one name or image, never with force."""

        def remove() -> list[dict[str, Any]]:
            try:
                # force would delete the containers using the image: never.
                return self._client.images.remove(name_or_id, force=False)
            except ImageNotFound:
                return []
            except APIError as error:
                if error.status_code == 409:
                    text = _error_text(error)
                    raise ImageInUse(
                        f"remove image {name_or_id}: in use: {text}",
                        tuple(dict.fromkeys(_IN_USE_BY.findall(text))),
                    ) from error
                raise

        return _remove_result(name_or_id, self._call("remove image", remove, target=name_or_id))

    def remove_manifest_list(self, name_or_id: str) -> RemoveResult:
        """Remove a manifest list itself.

        Never through remove_image: Podman resolves a list's name to the image it
        lists for this platform and deletes THAT image, leaving the list behind.
        """

        def remove() -> list[dict[str, Any]]:
            response = self._client.api.delete(f"/manifests/{name_or_id}")
            if response.status_code == 404:
                return []
            response.raise_for_status()
            body = response.json()
            return [
                *({"Deleted": d} for d in body.get("Deleted") or ()),
                *({"Untagged": u} for u in body.get("Untagged") or ()),
                *([{"Errors": body["Errors"]}] if body.get("Errors") else ()),
            ]

        return _remove_result(
            name_or_id, self._call("remove manifest list", remove, target=name_or_id)
        )

    def image_names(self, image_id: str) -> tuple[str, ...] | None:
        """The image's tag names now; None when it is gone (one inspect call)."""

        def inspect() -> tuple[str, ...] | None:
            try:
                attrs = self._client.images.get(image_id).attrs
            except ImageNotFound:
                return None
            return tuple(n for n in attrs.get("RepoTags") or () if _is_tag(n))

        return self._call("inspect image", inspect, target=image_id)

    def image_ids(self) -> set[str]:
        """IDs of all local images (one listing), for post-checks."""
        images = self._call("list images", lambda: _attrs(self._client.images.list(all=True)))
        return {_strip_id(a["Id"]) for a in images}

    def request(
        self, operation: str, method: str, path: str, *, target: str | None = None
    ) -> tuple[int, Any]:
        """One raw libpod API call (e.g. "get", "/artifacts/json") behind the retries.

        Answers below 500 come back as (status, JSON body or None): what a 404
        means is the caller's call. 5xx and lost connections are retried and
        then raised like every other call's failures.
        """

        def call() -> tuple[int, Any]:
            response = getattr(self._client.api, method)(path)
            if response.status_code >= 500:
                response.raise_for_status()
            try:
                return response.status_code, response.json()
            except ValueError:  # 4.3 answers unknown routes with a plain-text 404
                return response.status_code, None

        return self._call(operation, call, target=target)

    def export_image(self, image_id: str, max_bytes: int) -> bytes:
        """The image as a docker-archive tar (for reading an image package's files).

        Refuses images larger than `max_bytes`: a package holds a few small files,
        and a device has little memory to spare.
        """

        def call() -> bytes:
            response = self._client.api.get(
                f"/images/{image_id}/get", params={"format": "docker-archive"}, stream=True
            )
            if response.status_code == 404:
                raise PodmanError(f"export image {image_id}: no such image")
            response.raise_for_status()
            data = bytearray()
            for chunk in response.iter_content(chunk_size=65536):
                data += chunk
                if len(data) > max_bytes:
                    response.close()
                    raise PodmanError(
                        f"export image {image_id}: larger than {max_bytes} bytes, not a package"
                    )
            return bytes(data)

        return self._call("export image", call, target=image_id)

    # -- plumbing -----------------------------------------------------------

    def _manifest_list_ids(self, images: list[dict[str, Any]]) -> list[str]:
        # Podman 5 marks lists in every listing; 4.3 needs the filtered one.
        flagged = {_strip_id(a["Id"]) for a in images if a.get("IsManifestList")}
        listed = self._call(
            "list manifest lists",
            lambda: self._get_json("/images/json", {"filters": json.dumps({"manifest": ["true"]})}),
        )
        return sorted(flagged | {_strip_id(a["Id"]) for a in listed or ()})

    def _get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        response = self._client.api.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def _call(self, operation: str, fn: Callable[[], T], *, target: str | None = None) -> T:
        """`fn` with retries, in a span named by the operation alone (span names
        stay low-cardinality: the image name or ID goes in an attribute)."""
        attributes = {"podman.operation": operation}
        if target:
            attributes["edgeprune.image"] = target
        with self.tracer.start_as_current_span(
            "podman." + operation.replace(" ", "_"),
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                return self._retried(f"{operation} {target}" if target else operation, fn)
            except ImageInUse:
                span.set_attribute("podman.in_use", True)  # a refusal, not an error
                raise
            except Exception as error:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, str(error)))
                raise

    def _retried(self, operation: str, fn: Callable[[], T]) -> T:
        policy = self._retry
        retrying = Retrying(
            stop=stop_after_attempt(max(1, policy.attempts)),
            wait=wait_exponential(multiplier=policy.initial_wait, max=policy.max_wait),
            retry=retry_if_exception(is_transient),
            sleep=policy.sleep,
            before_sleep=lambda state: self._notify(operation, state),
            reraise=True,
        )
        try:
            return retrying(fn)
        except PodmanError:
            raise
        except (requests.RequestException, ClientError, ValueError) as error:
            # RequestException covers podman-py's APIError; ValueError a bad JSON body.
            attempts = retrying.statistics.get("attempt_number", 1)
            tries = f" after {attempts} attempts" if attempts > 1 else ""
            if _is_connection_error(error):
                raise PodmanUnavailable(
                    f"{operation}: could not reach Podman at {self.url}{tries}: {_describe(error)}",
                    self.url,
                ) from error
            raise PodmanError(f"{operation} failed{tries}: {_describe(error)}") from error

    def _notify(self, operation: str, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "podman %s: attempt %d failed (%s); retrying in %.2fs",
            operation,
            state.attempt_number,
            error,
            wait,
        )
        # On the call's span: which attempt failed, and how long until the next.
        trace.get_current_span().add_event(
            "retry",
            {
                "operation": operation,
                "attempt": state.attempt_number,
                "wait_seconds": wait,
                "error": str(error),
            },
        )
        if self._on_retry is None or error is None:
            return
        try:
            self._on_retry(operation, state.attempt_number, wait, error)
        except Exception:  # telemetry must never break an operation
            log.exception("on_retry hook failed")


# -- parsing (pure) ---------------------------------------------------------


def build_inventory(
    images: Iterable[Mapping[str, Any]],
    df: Mapping[str, Any],
    containers: Iterable[Mapping[str, Any]],
    manifest_lists: Mapping[str, Mapping[str, Any]],
    info: Mapping[str, Any],
    now: float,
) -> Inventory:
    """Podman's raw answers -> Inventory (no I/O)."""
    unique = {
        _strip_id(row["ImageID"]): row.get("UniqueSize")
        for row in df.get("Images") or ()
        if row.get("ImageID")
    }
    return Inventory(
        images=tuple(
            image_from_attrs(
                attrs,
                unique.get(_strip_id(attrs["Id"])),
                manifest_lists.get(_strip_id(attrs["Id"])),
            )
            for attrs in images
        ),
        containers=tuple(container_from_attrs(a) for a in containers),
        taken_at=now,
        storage_path=(info.get("store") or {}).get("graphRoot"),
    )


def image_from_attrs(
    attrs: Mapping[str, Any],
    unique_size: int | None = None,
    manifest_list: Mapping[str, Any] | None = None,
) -> Image:
    names = _dedupe(
        n for n in [*(attrs.get("Names") or ()), *(attrs.get("RepoTags") or ())] if _is_tag(n)
    )
    repo_digests = _dedupe(
        [*(attrs.get("RepoDigests") or ()), *(n for n in attrs.get("Names") or () if "@" in n)]
    )
    digests = _dedupe(
        d
        for d in [attrs.get("Digest") or "", *(r.partition("@")[2] for r in repo_digests)]
        if d.startswith("sha256:")
    )
    is_list = manifest_list is not None or bool(attrs.get("IsManifestList"))
    instances = _dedupe(m.get("digest", "") for m in (manifest_list or {}).get("manifests") or ())
    return Image(
        id=_strip_id(attrs["Id"]),
        names=names,
        digests=digests,
        repo_digests=repo_digests,
        size=int(attrs.get("Size") or 0),
        unique_size=int(unique_size) if unique_size is not None else None,
        created=_epoch(attrs.get("Created")),
        # An image known only by digest (pulled by digest) is not dangling:
        # Podman does not call it so, and treating it as such would put it in
        # the default prune scope.
        dangling=bool(attrs.get("Dangling")) or not (names or repo_digests),
        is_manifest_list=is_list,
        manifest_instances=tuple(d for d in instances if d),
    )


def container_from_attrs(attrs: Mapping[str, Any]) -> Container:
    return Container(
        id=attrs["Id"],
        names=tuple(attrs.get("Names") or ()),
        image_id=_strip_id(attrs.get("ImageID") or ""),
        image=attrs.get("Image") or "",
        state=str(attrs.get("State") or ""),
    )


def _remove_result(name_or_id: str, report: list[dict[str, Any]]) -> RemoveResult:
    if not report:
        return RemoveResult(status="already-gone")
    deleted = tuple(str(r["Deleted"]) for r in report if "Deleted" in r)
    untagged = tuple(str(r["Untagged"]) for r in report if "Untagged" in r)
    errors = [str(r["Errors"]) for r in report if "Errors" in r]
    exit_codes = {r.get("ExitCode") for r in report if "ExitCode" in r}
    if not errors and not (deleted or untagged) and exit_codes == {0}:
        # Podman 4.3 reports an untagged (intermediate) image's removal as a bare
        # success; the post-check's listing confirms it is gone.
        return RemoveResult(status="removed", deleted=(name_or_id,))
    if errors or not (deleted or untagged):
        raise PodmanError(f"remove image {name_or_id}: unexpected report {report!r}")
    return RemoveResult(
        status="removed" if deleted else "untagged", deleted=deleted, untagged=untagged
    )


def _attrs(objects: Iterable[Any]) -> list[dict[str, Any]]:
    return [dict(o.attrs) for o in objects]


def _strip_id(value: str) -> str:
    return value.removeprefix("sha256:")


def _is_tag(name: str) -> bool:
    return bool(name) and "@" not in name and not name.startswith("<none>")


def _dedupe(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))


def _epoch(value: Any) -> int:
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str) and value:
        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
        except ValueError:
            return 0
    return 0
