"""Parse image references and match them to local images. Pure: no I/O.

Parsing follows the OCI distribution reference grammar: the first path
component is a registry iff it contains "." or ":" or is "localhost" (so
"reg:5000/x:1" has registry "reg:5000" and tag "1"); repository components are
lowercase; a reference without tag or digest means tag "latest";
"name:tag@digest" keeps both. "sha256:<hex>" or bare hex (12 to 64 digits) is
an image ID (or ID prefix).

Matching is fail safe: a reference denotes every local image it *might* name,
because keeping too much only costs disk while removing too much breaks a
rollback.

- A qualified reference matches images with the same canonical name
  ("docker.io/redis:7" == "docker.io/library/redis:7").
- A short name (no registry) matches the same path and tag under any
  registry, with or without "library/": Podman resolves short names through
  its unqualified-search registries or localhost/.
- A digest matches every image holding that digest, whatever its repository
  (content addressing); "name:tag@digest" matches by digest or by name.
- An image ID matches by full ID or by prefix (12 hex digits at least). A
  bare-hex prefix shorter than a full ID may also be a short repository name
  to Podman, so it matches that way too.

Pin patterns: a pattern without wildcards ("*", "?", "[") is a reference and
matches exactly as above ("redis" pins any short-name resolution of
redis:latest). A pattern with wildcards is matched with fnmatch against every
full image name, every repo digest ("repo@sha256:..."), and each of them with
the registry (and then "library/") stripped, so "redis:*" pins
"docker.io/library/redis:7.2".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase

from controller.model import Image

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
_LEGACY_DOCKER_REGISTRIES = frozenset({"index.docker.io", "registry-1.docker.io"})
_MIN_ID_PREFIX = 12
_MAX_NAME_LENGTH = 255

_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?")
_PATH_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # ASCII only, unlike \w
_ID_RE = re.compile(r"(?:sha256:)?([0-9a-f]{12,64})")
_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_HEX_RE = re.compile(r"[0-9a-f]+")
_WILDCARDS = frozenset("*?[")


class ReferenceError(ValueError):  # shadows the builtin on purpose: the API names it so
    """An image reference that cannot be parsed; the message names it."""


@dataclass(frozen=True)
class Reference:
    raw: str
    registry: str | None  # None for a short name
    path: str  # as written, e.g. "library/redis" or "redis"; "" for an image ID
    tag: str | None  # "latest" when neither tag nor digest is given
    digest: str | None  # "sha256:<hex>"
    image_id: str | None = None  # hex ID or ID prefix when raw is an image ID

    @property
    def is_short(self) -> bool:
        return self.image_id is None and self.registry is None

    @property
    def name(self) -> str:
        """Docker-normalised repository, e.g. "docker.io/library/redis"; "" for an ID."""
        if self.image_id is not None:
            return ""
        registry = self.registry or DEFAULT_REGISTRY
        if registry in _LEGACY_DOCKER_REGISTRIES:
            registry = DEFAULT_REGISTRY
        path = self.path
        if registry == DEFAULT_REGISTRY and "/" not in path:
            path = f"library/{path}"
        return f"{registry}/{path}"

    @property
    def canonical(self) -> str:
        """Full normalised form: name, ":tag" if any, "@digest" if any."""
        if self.image_id is not None:
            return f"sha256:{self.image_id}"
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{self.name}{tag}{digest}"


def parse_reference(raw: str) -> Reference:
    if not isinstance(raw, str) or not raw:
        raise ReferenceError(f"empty or non-string image reference {raw!r}")
    id_match = _ID_RE.fullmatch(raw)
    if id_match:
        return Reference(raw, None, "", None, None, image_id=id_match.group(1))
    if raw.startswith("sha256:"):
        # grammatically repo "sha256" with a tag, but only ever meant as an ID
        raise ReferenceError(f"invalid image ID {raw!r} (want sha256: and 12 to 64 hex digits)")

    remainder, digest = raw, None
    if "@" in raw:
        remainder, digest = raw.rsplit("@", 1)
        _check_digest(raw, digest)
    # a tag follows the last ":" after the last "/"; an earlier ":" is a port
    tag = None
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > last_slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            raise ReferenceError(f"invalid tag {tag!r} in image reference {raw!r}")

    registry, path = None, remainder
    first, sep, rest = remainder.partition("/")
    if sep and _is_registry(first):
        registry, path = first, rest
        if not _DOMAIN_RE.fullmatch(registry):
            raise ReferenceError(f"invalid registry {registry!r} in image reference {raw!r}")
    components = path.split("/")
    if not all(_PATH_COMPONENT_RE.fullmatch(part) for part in components):
        raise ReferenceError(
            f"invalid repository {path!r} in image reference {raw!r}"
            " (lowercase letters, digits and separators, no empty components)"
        )
    if len(remainder) > _MAX_NAME_LENGTH:
        raise ReferenceError(f"repository name too long in image reference {raw!r}")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(raw, registry, path, tag, digest)


def _is_registry(first_component: str) -> bool:
    return "." in first_component or ":" in first_component or first_component == "localhost"


def _check_digest(raw: str, digest: str) -> None:
    algorithm, _, hex_part = digest.partition(":")
    expected = _DIGEST_HEX_LENGTHS.get(algorithm)
    if expected is None or len(hex_part) != expected or not _HEX_RE.fullmatch(hex_part):
        raise ReferenceError(f"invalid digest {digest!r} in image reference {raw!r}")


# Matching works on keys: an image yields the keys under which references may
# find it, a reference yields the keys it looks up. The index and the pin
# matcher share these two functions, so they cannot disagree.
_Key = tuple[str, ...]


def _short_path(path: str) -> str:
    return path.removeprefix("library/")


def _image_keys(image: Image) -> Iterator[_Key]:
    for raw_name in image.names:
        try:
            ref = parse_reference(raw_name)
        except ReferenceError:
            yield ("name", raw_name)  # odd listing: still findable by its exact text
            continue
        if ref.tag is not None:
            yield ("name", f"{ref.name}:{ref.tag}")
            yield ("short", _short_path(ref.name.partition("/")[2]), ref.tag)
        if ref.digest:
            yield ("digest", ref.digest)
    for digest in image.digests:
        yield ("digest", digest)
    for repo_digest in image.repo_digests:
        yield ("digest", repo_digest.rpartition("@")[2])
    yield ("id", image.id)


def _reference_keys(ref: Reference) -> Iterator[_Key]:
    if ref.image_id is not None:
        if len(ref.image_id) == 64:
            yield ("id", ref.image_id)
            yield ("digest", f"sha256:{ref.image_id}")  # may be a manifest digest too
        elif not ref.raw.startswith("sha256:"):
            yield ("short", ref.image_id, DEFAULT_TAG)  # Podman may read it as a name
        return
    if ref.digest:
        yield ("digest", ref.digest)
    if ref.tag is None:
        return
    if ref.is_short:
        yield ("short", _short_path(ref.path), ref.tag)
    else:
        yield ("name", f"{ref.name}:{ref.tag}")


def _as_reference(ref: Reference | str) -> Reference:
    return ref if isinstance(ref, Reference) else parse_reference(ref)


class ImageIndex:
    """Every key of every local image, built once; a lookup is a few dict hits."""

    def __init__(self, images: Iterable[Image]) -> None:
        self._by_key: dict[_Key, list[Image]] = {}
        self._by_id_prefix: dict[str, list[Image]] = {}
        for image in images:
            for key in dict.fromkeys(_image_keys(image)):
                self._by_key.setdefault(key, []).append(image)
            self._by_id_prefix.setdefault(image.id[:_MIN_ID_PREFIX], []).append(image)

    def lookup(self, ref: Reference | str) -> list[Image]:
        """Every local image the reference may denote, each once, in index order."""
        ref = _as_reference(ref)
        found: dict[str, Image] = {}
        for key in _reference_keys(ref):
            for image in self._by_key.get(key, ()):
                found.setdefault(image.id, image)
        if ref.image_id is not None and len(ref.image_id) < 64:
            for image in self._by_id_prefix.get(ref.image_id[:_MIN_ID_PREFIX], ()):
                if image.id.startswith(ref.image_id):
                    found.setdefault(image.id, image)
        return list(found.values())


def reference_matches(ref: Reference | str, image: Image) -> bool:
    """Whether one image is among those the reference may denote."""
    ref = _as_reference(ref)
    if ref.image_id is not None and image.id.startswith(ref.image_id):
        return True
    return not set(_reference_keys(ref)).isdisjoint(_image_keys(image))


def pattern_matches(pattern: str, image: Image) -> bool:
    """Whether a pin pattern (see the module docstring) covers the image."""
    if not _WILDCARDS.intersection(pattern):
        return reference_matches(pattern, image)
    return any(fnmatchcase(candidate, pattern) for candidate in _pin_candidates(image))


def _pin_candidates(image: Image) -> Iterator[str]:
    for full in (*image.names, *image.repo_digests):
        yield full
        first, sep, rest = full.partition("/")
        if sep and _is_registry(first):
            yield rest
            if rest.startswith("library/"):
                yield _short_path(rest)
