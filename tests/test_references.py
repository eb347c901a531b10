"""Reference parsing, normalisation and fail-safe matching to local images."""

from __future__ import annotations

import pytest

from controller.model import Image
from controller.references import (
    ImageIndex,
    Reference,
    ReferenceError,
    parse_reference,
    pattern_matches,
)

D1 = "sha256:" + "1" * 64
D3 = "sha256:" + "3" * 64
D5 = "sha256:" + "5" * 64
D9 = "sha256:" + "9" * 64
HEX = "0123456789abcdef" * 4

# (raw, registry, path, tag, digest, canonical)
PARSE_CASES = [
    ("redis", None, "redis", "latest", None, "docker.io/library/redis:latest"),
    ("redis:7.2", None, "redis", "7.2", None, "docker.io/library/redis:7.2"),
    ("library/redis:7.2", None, "library/redis", "7.2", None, "docker.io/library/redis:7.2"),
    ("docker.io/redis:7.2", "docker.io", "redis", "7.2", None, "docker.io/library/redis:7.2"),
    (
        "docker.io/library/redis:7.2",
        "docker.io",
        "library/redis",
        "7.2",
        None,
        "docker.io/library/redis:7.2",
    ),
    (
        "index.docker.io/library/redis:7",
        "index.docker.io",
        "library/redis",
        "7",
        None,
        "docker.io/library/redis:7",
    ),
    ("shop/web:2.4.1", None, "shop/web", "2.4.1", None, "docker.io/shop/web:2.4.1"),
    ("reg:5000/a/b", "reg:5000", "a/b", "latest", None, "reg:5000/a/b:latest"),
    ("reg:5000/x:1", "reg:5000", "x", "1", None, "reg:5000/x:1"),
    ("localhost/app:1", "localhost", "app", "1", None, "localhost/app:1"),
    ("localhost:5000/app", "localhost:5000", "app", "latest", None, "localhost:5000/app:latest"),
    ("[::1]:5000/app:v2", "[::1]:5000", "app", "v2", None, "[::1]:5000/app:v2"),
    ("Reg.Example.com/a:1", "Reg.Example.com", "a", "1", None, "Reg.Example.com/a:1"),
    ("reg.io/a__b/c-d--e.f_g:V1.0-rc_1", "reg.io", "a__b/c-d--e.f_g", "V1.0-rc_1", None, None),
    ("reg:5000/a/b@" + D1, "reg:5000", "a/b", None, D1, "reg:5000/a/b@" + D1),
    ("reg.io/a:t@" + D1, "reg.io", "a", "t", D1, "reg.io/a:t@" + D1),
    ("redis@" + D1, None, "redis", None, D1, "docker.io/library/redis@" + D1),
    ("reg.io/a@sha512:" + "f" * 128, "reg.io", "a", None, "sha512:" + "f" * 128, None),
]


@pytest.mark.parametrize(("raw", "registry", "path", "tag", "digest", "canonical"), PARSE_CASES)
def test_parse_and_normalise(
    raw: str,
    registry: str | None,
    path: str,
    tag: str | None,
    digest: str | None,
    canonical: str | None,
) -> None:
    ref = parse_reference(raw)
    assert (ref.raw, ref.registry, ref.path, ref.tag, ref.digest, ref.image_id) == (
        raw,
        registry,
        path,
        tag,
        digest,
        None,
    )
    if canonical is not None:
        assert ref.canonical == canonical
    suffix = (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    assert ref.canonical == ref.name + suffix


def test_name_drops_tag_and_digest_but_keeps_registry_port() -> None:
    assert parse_reference("reg:5000/a/b:1@" + D1).name == "reg:5000/a/b"
    assert parse_reference("redis:7.2").name == "docker.io/library/redis"


@pytest.mark.parametrize(
    ("raw", "image_id"),
    [
        ("sha256:" + HEX, HEX),
        (HEX, HEX),
        (HEX[:12], HEX[:12]),
        ("sha256:" + HEX[:20], HEX[:20]),
    ],
)
def test_image_id_references(raw: str, image_id: str) -> None:
    ref = parse_reference(raw)
    assert ref.image_id == image_id
    assert (ref.registry, ref.path, ref.tag, ref.digest, ref.name) == (None, "", None, None, "")


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "Redis:7",  # uppercase repository
        "shop/Web",
        "shop//web",
        "/web",
        "web/",
        "reg.io/",
        "redis:",
        ":7",
        "redis:-x",
        "redis:é",
        "redis:a/b",
        "re dis",
        "-redis",
        "redis@sha256:xyz",
        "redis@sha256:" + "1" * 63,
        "redis@sha256:" + "A" * 64,
        "redis@md5:" + "1" * 32,
        "redis@",
        "@" + D1,
        "reg:port/x:1",
        "reg:5000/x:1:2",
        "sha256:xyz",
        "sha256:" + HEX[:11],
        "reg.io/" + "a" * 250,
        "redis:" + "t" * 129,
    ],
)
def test_invalid_references_are_rejected_naming_the_reference(raw: str) -> None:
    with pytest.raises(ReferenceError) as caught:
        parse_reference(raw)
    assert repr(raw) in str(caught.value)


def test_non_string_reference_is_rejected() -> None:
    with pytest.raises(ReferenceError):
        parse_reference(None)  # type: ignore[arg-type]


def test_reference_error_is_a_value_error() -> None:
    assert issubclass(ReferenceError, ValueError)


def _id(char: str) -> str:
    return char * 64


REDIS = Image(
    id=_id("a"),
    names=("docker.io/library/redis:7.2", "docker.io/library/redis:7"),  # one ID, two names
    digests=(D1,),
    repo_digests=("docker.io/library/redis@" + D1,),
)
QUAY_REDIS = Image(id=_id("f"), names=("quay.io/redis:7.2",))
LOCAL_APP = Image(id=_id("b"), names=("localhost/myapp:1",))
QUAY_APP = Image(id=_id("c"), names=("quay.io/myapp:1",))
SEED = Image(  # pulled by digest only: no tag, looks dangling
    id=_id("d"),
    digests=(D3,),
    repo_digests=("registry.example.com/iot/sensor-seed@" + D3,),
    dangling=True,
)
WEB = Image(id=_id("e"), names=("registry.example.com/shop/web:2.4.1",), digests=(D5,))
PORTED = Image(id="0" * 64, names=("reg.local:5000/team/app:1",))
TWIN_A = Image(id="0123456789ab" + "c" * 52, names=("localhost/twin:a",))
TWIN_B = Image(id="0123456789ab" + "d" * 52, names=("localhost/twin:b",))
HEXNAMED = Image(id="9" * 64, names=("docker.io/library/deadbeefcafe:latest",))
ALL_IMAGES = (REDIS, QUAY_REDIS, LOCAL_APP, QUAY_APP, SEED, WEB, PORTED, TWIN_A, TWIN_B, HEXNAMED)

LOOKUP_CASES = [
    # canonical names, both names of one image ID
    ("docker.io/library/redis:7.2", [REDIS]),
    ("docker.io/redis:7", [REDIS]),
    ("quay.io/redis:7.2", [QUAY_REDIS]),
    ("docker.io/library/redis:6", []),
    # short names: any registry, with or without library/
    ("redis:7.2", [REDIS, QUAY_REDIS]),
    ("redis:7", [REDIS]),
    ("library/redis:7.2", [REDIS, QUAY_REDIS]),
    ("redis", []),  # means redis:latest
    ("myapp:1", [LOCAL_APP, QUAY_APP]),
    ("localhost/myapp:1", [LOCAL_APP]),
    ("quay.io/myapp:1", [QUAY_APP]),
    ("myapp:2", []),
    # registry port is not a tag
    ("reg.local:5000/team/app:1", [PORTED]),
    ("reg.local:5000/team/app", []),
    ("reg.local/team/app:1", []),
    # digests are content addresses: the repository need not match
    ("registry.example.com/iot/sensor-seed@" + D3, [SEED]),
    ("other.example.com/anything@" + D3, [SEED]),
    ("registry.example.com/iot/sensor-seed@" + D9, []),
    # name:tag@digest matches by digest or by name
    ("registry.example.com/shop/web:9.9@" + D5, [WEB]),
    ("registry.example.com/shop/web:2.4.1@" + D9, [WEB]),
    ("docker.io/library/redis:7.2@" + D1, [REDIS]),  # both ways: listed once
    # image IDs and prefixes
    (_id("a"), [REDIS]),
    ("sha256:" + _id("a"), [REDIS]),
    (_id("a")[:12], [REDIS]),
    ("sha256:" + _id("e")[:20], [WEB]),
    ("0123456789ab", [TWIN_A, TWIN_B]),  # ambiguous prefix keeps both
    ("0123456789abc", [TWIN_A]),
    ("sha256:" + "1" * 64, [REDIS]),  # an ID-form string that is a manifest digest
    ("deadbeefcafe", [HEXNAMED]),  # bare hex Podman may also read as a short name
    ("sha256:deadbeefcafe", []),  # the sha256: form is only ever an ID
]


@pytest.mark.parametrize(("ref", "expected"), LOOKUP_CASES)
def test_index_lookup(ref: str, expected: list[Image]) -> None:
    index = ImageIndex(ALL_IMAGES)
    assert index.lookup(ref) == expected


def test_lookup_accepts_a_parsed_reference() -> None:
    index = ImageIndex(ALL_IMAGES)
    ref: Reference = parse_reference("myapp:1")
    assert index.lookup(ref) == [LOCAL_APP, QUAY_APP]


def test_lookup_of_an_invalid_reference_raises() -> None:
    with pytest.raises(ReferenceError):
        ImageIndex(ALL_IMAGES).lookup("Not/Valid")


def test_index_is_built_from_a_one_shot_iterable() -> None:
    index = ImageIndex(image for image in (REDIS, WEB))
    assert index.lookup("redis:7") == [REDIS]
    assert index.lookup("registry.example.com/shop/web:2.4.1") == [WEB]


def test_image_with_unparsable_listed_name_is_still_indexed() -> None:
    odd = Image(id=_id("7"), names=("<none>:<none>",), digests=(D9,))
    index = ImageIndex([odd])
    assert index.lookup("x.io/y@" + D9) == [odd]
    assert index.lookup(_id("7")) == [odd]


PIN_CASES = [
    # no wildcard: a reference, matched like one
    ("redis:7.2", REDIS, True),
    ("redis:7.2", QUAY_REDIS, True),
    ("docker.io/library/redis:7.2", QUAY_REDIS, False),
    ("redis", REDIS, False),  # redis:latest
    ("registry.example.com/iot/sensor-seed@" + D3, SEED, True),
    (_id("a")[:12], REDIS, True),
    (_id("a")[:12], WEB, False),
    # wildcards: full names, repo digests, names without registry (and library/)
    ("docker.io/library/redis:*", REDIS, True),
    ("redis:*", REDIS, True),
    ("library/redis:7.?", REDIS, True),
    ("[a-r]edis:7.2", REDIS, True),
    ("quay.io/*", REDIS, False),
    ("quay.io/*", QUAY_APP, True),
    ("localhost/*", LOCAL_APP, True),
    ("myapp:?", LOCAL_APP, True),
    ("registry.example.com/iot/sensor-seed@sha256:*", SEED, True),
    ("iot/sensor-seed@*", SEED, True),
    ("*sensor-seed*", WEB, False),
    ("reg.local:5000/team/*", PORTED, True),
    ("team/app:*", PORTED, True),
]


@pytest.mark.parametrize(("pattern", "image", "expected"), PIN_CASES)
def test_pin_patterns(pattern: str, image: Image, expected: bool) -> None:
    assert pattern_matches(pattern, image) is expected


def test_invalid_pin_without_wildcard_raises() -> None:
    with pytest.raises(ReferenceError):
        pattern_matches("Redis:7", REDIS)
