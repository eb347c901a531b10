"""Image references in compose and quadlet files, read directly from a files mapping."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from controller.appfiles import AppFileError, compose_images, quadlet_images
from controller.composevars import (
    Variable,
    VariableError,
    interpolate,
    literal_variables,
    parse_dotenv,
)

COMPOSE = """\
services:
  web:
    image: ${REGISTRY:-quay.io}/shop/web:${TAG-1.0}
  cache:
    image: "docker.io/library/redis:7.2"
  builder:
    build: ./src
"""


def test_compose_services_defaults_and_companion_files() -> None:
    files = {
        "docker-compose.yaml": COMPOSE.encode(),
        "override.yml": b"services:\n  web:\n    image: quay.io/shop/web:1.1\n",
        "volumes-only.yaml": b"volumes:\n  data: {}\n",
        "empty.yaml": b"",
        ".env": b"UNUSED: [yaml",  # dotenv (YAML-style line), not a compose file
    }
    assert compose_images(files) == [
        "quay.io/shop/web:1.0",
        "docker.io/library/redis:7.2",
        "quay.io/shop/web:1.1",
    ]


ENV_COMPOSE = """\
services:
  web:
    image: reg.io/shop/web:${TAG:-1}
  api:
    image: ${REGISTRY}/shop/api:$API_TAG
  cache:
    image: "reg.io/cache:${EMPTY:-7}${EMPTY-unused}"
  worker:
    image: reg.io/shop/worker:${WORKER_TAG:?must be set}
"""

DOTENV = """\
# the agent writes envVars here
export REGISTRY=quay.io
API_TAG = 3  # a comment after whitespace
EMPTY=''
WORKER_TAG="w1"
"""


def test_compose_variables_come_from_dotenv() -> None:
    files = {"docker-compose.yaml": ENV_COMPOSE.encode(), ".env": DOTENV.encode()}
    assert compose_images(files) == [
        "reg.io/shop/web:1",  # TAG unset: the default
        "quay.io/shop/api:3",
        "reg.io/cache:7",  # ':-' replaces an empty value, '-' keeps it
        "reg.io/shop/worker:w1",
    ]


def test_env_vars_override_dotenv_and_beat_the_default() -> None:
    files = {"docker-compose.yaml": ENV_COMPOSE.encode(), "./.env": DOTENV.encode()}
    env = {"TAG": "2", "API_TAG": "4", "EMPTY": "x"}
    assert compose_images(files, env) == [
        "reg.io/shop/web:2",  # what the app really runs, not ${TAG:-1}'s default
        "quay.io/shop/api:4",
        "reg.io/cache:xx",
        "reg.io/shop/worker:w1",
    ]


def test_dotenv_in_a_subdirectory_is_not_the_project_env() -> None:
    files = {
        "docker-compose.yaml": b"services:\n  web:\n    image: reg.io/web:${TAG}\n",
        "conf/.env": b"TAG=9\n",
    }
    with pytest.raises(AppFileError, match="variable TAG is not set"):
        compose_images(files)


def test_compose_ignores_quadlet_units_and_quadlet_ignores_compose() -> None:
    files = {
        "app.container": b"[Container]\nImage=reg.io/q:1\n",
        "compose.yaml": b"services:\n  web:\n    image: reg.io/c:1\n",
    }
    assert compose_images(files) == ["reg.io/c:1"]
    assert quadlet_images(files) == ["reg.io/q:1"]


def test_quadlet_image_indirection() -> None:
    files = {
        "sensor.container": b"[Container]\nImage=sensor.image\n",
        "sensor.image": b"[Image]\nImage=reg.io/iot/reader:5\n",
    }
    assert quadlet_images(files) == ["reg.io/iot/reader:5"]  # not "sensor.image"


UNIT_SYNTAX = """\
[Unit]
Description=Image=not-a-section-we-read
[X-Other]
Image=ignored.io/out:1
[Container]
# Image=commented.io/out:1
  ; Image=also.io/out:1
Image="quay.io/app/main:3"
Mount=destination=/a,src=reg.io/data/first:1,type=image
Mount=type=bind,source=/srv,destination=/srv
Mount="type=image,source=reg.io/data/second:2,destination=/b" \\
# comments inside a continuation are skipped, not joined
; Image=also.io/out:2
  type=artifact,src=reg.io/models/m:1,dst=/m
Mount=type=image,source=assets.image,destination=/c
Volume=seed.volume:/seed
[Install]
WantedBy=default.target
"""


def test_quadlet_unit_syntax_sections_mounts_and_volumes() -> None:
    files = {
        "app.container": UNIT_SYNTAX.encode(),
        "assets.image": b"[Image]\nImage=docker://reg.io/ui/assets:4\n",
        "seed.volume": ("[Volume]\nDriver=image\nImage=reg.io/seed@sha256:" + "3" * 64).encode(),
        "app.pod": b"[Pod]\nPodName=p\n",
        "README.md": b"Image=not.a/unit:1\n",
    }
    assert quadlet_images(files) == [
        "quay.io/app/main:3",
        "reg.io/data/first:1",
        "reg.io/data/second:2",
        "reg.io/models/m:1",
        "reg.io/ui/assets:4",
        "reg.io/seed@sha256:" + "3" * 64,
    ]


def test_quadlet_build_drop_in_and_archive() -> None:
    files = {
        "local.container": b"[Container]\nImage=local.build\n",
        "local.build": b"[Build]\nImageTag=localhost/local:1\nFile=Containerfile\n",
        "web.container": b"[Container]\nImage=reg.io/web:1\n",
        "web.container.d/10-pin.conf": b"[Container]\nImage=reg.io/web:1.0.1\n",
        "a.image": b"[Image]\nImage=oci-archive:/opt/a.tar\nImageTag=localhost/a:1\n",
    }
    assert quadlet_images(files) == ["reg.io/web:1", "reg.io/web:1.0.1", "localhost/a:1"]


POD_YAML = """\
apiVersion: v1
kind: Pod
spec:
  initContainers:
    - name: init
      image: reg.io/init:1
  containers:
    - name: main
      image: reg.io/main:2
---
apiVersion: apps/v1
kind: Deployment
spec:
  template:
    spec:
      containers:
        - {name: side, image: "reg.io/side:3"}
"""


def test_quadlet_kube_yaml() -> None:
    files = {
        "units/app.kube": b"[Kube]\nYaml=../pods/app.yaml\n",
        "pods/app.yaml": POD_YAML.encode(),
    }
    assert quadlet_images(files) == ["reg.io/init:1", "reg.io/main:2", "reg.io/side:3"]


# --- compose interpolation and dotenv (controller.composevars) -------------------------

VARIABLES = literal_variables({"SET": "v", "EMPTY": ""}) | {
    "NESTED": Variable("${SET}-n", template=True),
    "LITERAL": Variable("${SET}"),  # single-quoted in .env: never expanded
    "LOOP": Variable("${LOOP}", template=True),
}

INTERPOLATIONS = {
    "plain": ("reg.io/a:1", "reg.io/a:1"),
    "bare": ("$SET/x", "v/x"),
    "braced": ("${SET}x", "vx"),
    "colon-dash-set": ("${SET:-d}", "v"),
    "colon-dash-empty": ("${EMPTY:-d}", "d"),
    "colon-dash-unset": ("${UNSET:-d}", "d"),
    "dash-empty-kept": ("a${EMPTY-d}b", "ab"),
    "dash-unset": ("${UNSET-d}", "d"),
    "nested-default": ("${UNSET:-${SET}-${UNSET2:-z}}", "v-z"),
    "plus-set": ("${SET:+alt}", "alt"),
    "colon-plus-empty": ("${EMPTY:+alt}", ""),
    "plus-empty": ("${EMPTY+alt}", "alt"),
    "question-set": ("${SET:?why}", "v"),
    "dollar-dollar": ("a$$b$${SET}", "a$b${SET}"),
    "template-variable": ("$NESTED", "v-n"),
    "literal-variable": ("$LITERAL", "${SET}"),
}


@pytest.mark.parametrize(("text", "expected"), INTERPOLATIONS.values(), ids=INTERPOLATIONS)
def test_interpolate_like_compose(text: str, expected: str) -> None:
    assert interpolate(text, VARIABLES) == expected


INTERPOLATION_ERRORS = {
    "unset": ("a:${UNSET}", "variable UNSET is not set"),
    "bare-unset": ("a:$UNSET", "variable UNSET is not set"),
    "colon-question-empty": ("${EMPTY:?need it}", "variable EMPTY is empty in '${EMPTY:?need it}'"),
    "question-unset": (
        "${UNSET?need it}",
        "variable UNSET is unset in '${UNSET?need it}': need it",
    ),
    "unclosed": ("a:${SET", "unclosed '${'"),
    "lone-dollar": ("a:$", "invalid '$'"),
    "bad-name": ("${1X}", "invalid variable '${1X}'"),
    "bad-operator": ("${SET/x}", "invalid variable '${SET/x}'"),
    "cycle": ("$LOOP", "variable LOOP refers to itself"),
    "unset-default-used": ("${UNSET:-$ALSO_UNSET}", "variable ALSO_UNSET is not set"),
}


@pytest.mark.parametrize(
    ("text", "message"), INTERPOLATION_ERRORS.values(), ids=INTERPOLATION_ERRORS
)
def test_interpolation_errors(text: str, message: str) -> None:
    with pytest.raises(VariableError) as caught:
        interpolate(text, VARIABLES)
    assert str(caught.value).startswith(message), str(caught.value)


def test_parse_dotenv_syntax() -> None:
    text = (
        "# comment\n"
        "\n"
        "export A=1\n"
        "B = two words # comment\n"
        "C=x#not-a-comment\n"
        "D='${A} literal'  # comment\n"
        'E="line1\\n\\"q\\" \\$A ${A}"\n'
        'F="multi\n'
        'line"\n'
        "G: yaml-style\n"
        "PASSTHROUGH\n"
        "H=\n"
        "A=last wins\n"
    )
    variables = parse_dotenv(text)
    assert variables == {
        "A": Variable("last wins", True),
        "B": Variable("two words", True),
        "C": Variable("x#not-a-comment", True),
        "D": Variable("${A} literal"),
        "E": Variable('line1\n"q" $$A ${A}', True),
        "F": Variable("multi\nline", True),
        "G": Variable("yaml-style", True),
        "H": Variable("", True),
    }
    assert interpolate("$E", variables) == 'line1\n"q" $A last wins'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A='unterminated\nB=1\n", "line 1: unterminated ' quote"),
        ('A="x" y\n', "line 1: unexpected text after the closing quote"),
        ("OK=1\nBAD KEY=1\n", "line 2: not KEY=value"),
        ("=value\n", "line 1: not KEY=value"),
    ],
)
def test_parse_dotenv_rejects_malformed_lines(text: str, message: str) -> None:
    with pytest.raises(VariableError, match=f"^{message}$"):
        parse_dotenv(text)


# --- quadlet drop-ins and kube files -------------------------------------------------


@pytest.mark.parametrize(
    "drop_in",
    [
        "container.d/50-pin.conf",  # every .container unit
        "web-.container.d/50-pin.conf",  # every web-*.container unit
        "web-api.container.d/50-pin.conf",
        "units/container.d/50-pin.conf",
    ],
)
def test_quadlet_type_wide_and_prefix_drop_ins_are_read(drop_in: str) -> None:
    files = {
        "web-api.container": b"[Container]\nImage=reg.io/web:1\n",
        drop_in: b"[Container]\nImage=reg.io/web:1.0.1-hotfix\n",
    }
    assert quadlet_images(files) == ["reg.io/web:1", "reg.io/web:1.0.1-hotfix"]


@pytest.mark.parametrize(
    "not_a_drop_in",
    ["mycontainer.d/50.conf", "container.d/50.txt", "container.d/sub/50.conf"],
)
def test_quadlet_lookalike_paths_are_not_drop_ins(not_a_drop_in: str) -> None:
    files = {
        "web.container": b"[Container]\nImage=reg.io/web:1\n",
        not_a_drop_in: b"[Container]\nImage=reg.io/other:1\n",
    }
    assert quadlet_images(files) == ["reg.io/web:1"]


def test_quadlet_volume_and_pod_type_wide_drop_ins() -> None:
    files = {
        "data.volume": b"[Volume]\nDriver=image\nImage=reg.io/seed:1\n",
        "volume.d/10.conf": b"[Volume]\nImage=reg.io/seed:2\n",
        "app.pod": b"[Pod]\nPodName=app\n",
        "pod.d/10.conf": b"[Pod]\nImage=reg.io/infra:3\n",
    }
    assert sorted(quadlet_images(files)) == ["reg.io/infra:3", "reg.io/seed:1", "reg.io/seed:2"]


def test_kube_yaml_resolves_against_the_unit_directory_first() -> None:
    files = {
        "pod.yaml": b"containers: [{image: 'reg.io/top:1'}]\n",
        "sub/app.kube": b"[Kube]\nYaml=pod.yaml\n",
        "sub/pod.yaml": b"containers: [{image: 'reg.io/sub:1'}]\n",
    }
    assert quadlet_images(files) == ["reg.io/sub:1"]


def test_kube_yaml_of_a_drop_in_resolves_against_its_unit_directory() -> None:
    files = {
        "sub/app.kube": b"[Kube]\nYaml=pod.yaml\n",
        "sub/app.kube.d/10.conf": b"[Kube]\nYaml=other.yaml\n",
        "sub/pod.yaml": b"containers: [{image: 'reg.io/pod:1'}]\n",
        "sub/other.yaml": b"containers: [{image: 'reg.io/other:1'}]\n",
    }
    assert sorted(quadlet_images(files)) == ["reg.io/other:1", "reg.io/pod:1"]


def test_kube_yaml_is_never_a_same_named_file_elsewhere() -> None:
    files = {
        "sub/app.kube": b"[Kube]\nYaml=pod.yaml\n",
        "other/pod.yaml": b"containers: [{image: 'reg.io/other:1'}]\n",
    }
    with pytest.raises(AppFileError) as caught:
        quadlet_images(files)
    assert str(caught.value) == (
        "inline file 'sub/app.kube': Yaml= names 'pod.yaml', which is not inline"
        " (looked for 'sub/pod.yaml')"
    )


# --- YAML alias bombs ----------------------------------------------------------------


def alias_bomb(leaf: str, levels: int = 30) -> str:
    """~1 KB of YAML that stands for 2**levels leaves (a "billion laughs")."""
    lines = [f"l0: &l0 [{leaf}]"]
    lines += [f"l{n}: &l{n} [*l{n - 1}, *l{n - 1}]" for n in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_kube_alias_bomb_is_read_in_well_under_a_second() -> None:
    bomb = alias_bomb("{containers: [{image: 'reg.io/laugh:1'}]}")
    assert len(bomb) < 1200
    files = {"a.kube": b"[Kube]\nYaml=pod.yaml\n", "pod.yaml": bomb.encode()}
    started = time.monotonic()
    images = quadlet_images(files)
    assert time.monotonic() - started < 0.5
    assert images == ["reg.io/laugh:1"]  # one shared container node, visited once


def test_compose_alias_bomb_is_read_in_well_under_a_second() -> None:
    bomb = alias_bomb("x") + "x-web: &web {image: 'reg.io/web:1', laughs: *l29}\n"
    bomb += "services:\n" + "".join(f"  s{n}: *web\n" for n in range(20))
    started = time.monotonic()
    images = compose_images({"compose.yaml": bomb.encode()})
    assert time.monotonic() - started < 0.5
    assert images == ["reg.io/web:1"]


def test_kube_walk_survives_recursive_and_deep_yaml() -> None:
    files = {
        "a.kube": b"[Kube]\nYaml=pod.yaml\n",
        "pod.yaml": b"&self {me: *self, containers: [{image: 'reg.io/r:1'}]}\n",
    }
    assert quadlet_images(files) == ["reg.io/r:1"]
    deep = "[" * 5000 + "]" * 5000
    files["pod.yaml"] = deep.encode()
    with pytest.raises(AppFileError, match=r"^inline file 'pod\.yaml': YAML too deep"):
        quadlet_images(files)


# --- errors ---------------------------------------------------------------------------

Reader = Callable[[dict[str, bytes]], list[str]]

# (reader, files, start of the message)
ERROR_CASES: dict[str, tuple[Reader, dict[str, bytes], str]] = {
    "undecodable-utf8": (
        compose_images,
        {"docker-compose.yaml": b"services:\xff\xfe"},
        "inline file 'docker-compose.yaml': not UTF-8: ",
    ),
    "bad-compose-yaml": (
        compose_images,
        {"docker-compose.yaml": b"services:\n  web: [unclosed\n"},
        "inline file 'docker-compose.yaml': invalid YAML: ",
    ),
    "compose-several-documents": (
        compose_images,
        {"compose.yaml": b"services: {}\n---\nservices: {}\n"},
        "inline file 'compose.yaml': invalid YAML: a compose file is a single document",
    ),
    "compose-services-list": (
        compose_images,
        {"compose.yml": b"services:\n  - web\n"},
        "inline file 'compose.yml': 'services' is not a mapping",
    ),
    "compose-top-level-list": (
        compose_images,
        {"docker-compose.yaml": b"- services\n"},
        "inline file 'docker-compose.yaml': top level is not a mapping",
    ),
    "compose-image-number": (
        compose_images,
        {"docker-compose.yaml": b"services:\n  web:\n    image: 7\n"},
        "inline file 'docker-compose.yaml': service 'web': 'image' is not a string",
    ),
    "compose-invalid-reference": (
        compose_images,
        {"docker-compose.yaml": b"services:\n  web:\n    image: Shop/Web:1\n"},
        "inline file 'docker-compose.yaml': service 'web': invalid repository",
    ),
    "compose-unresolved-variable": (
        compose_images,
        {"docker-compose.yaml": b"services:\n  web:\n    image: reg.io/web:${TAG}\n"},
        "inline file 'docker-compose.yaml': service 'web': cannot resolve variable",
    ),
    "compose-required-variable": (
        compose_images,
        {"docker-compose.yaml": b"services:\n  web:\n    image: reg.io/web:${TAG:?set TAG}\n"},
        "inline file 'docker-compose.yaml': service 'web': cannot resolve variable",
    ),
    "missing-image-file": (
        quadlet_images,
        {"sensor.container": b"[Container]\nImage=gone.image\n"},
        "inline file 'sensor.container': Image= names 'gone.image', which is not among",
    ),
    "missing-mounted-image-file": (
        quadlet_images,
        {"s.container": b"[Container]\nMount=type=image,src=g.image\n"},
        "inline file 's.container': Mount= names 'g.image', which is not among",
    ),
    "quadlet-invalid-reference": (
        quadlet_images,
        {"s.container": b"[Container]\nImage=reg.io/s:%i\n"},
        "inline file 's.container': Image=: invalid tag",
    ),
    "quadlet-mount-without-source": (
        quadlet_images,
        {"s.container": b"[Container]\nMount=type=image,dst=/x\n"},
        "inline file 's.container': Mount= 'type=image,dst=/x' has no source",
    ),
    "quadlet-unparsable-mount": (
        quadlet_images,
        {"s.container": b"[Container]\nMount=type=image,src='unclosed\n"},
        "inline file 's.container': unparsable Mount= ",
    ),
    "quadlet-archive-without-tag": (
        quadlet_images,
        {"a.image": b"[Image]\nImage=docker-archive:/a.tar\n"},
        "inline file 'a.image': Image= loads 'docker-archive:/a.tar' with no ImageTag=",
    ),
    "kube-yaml-missing": (
        quadlet_images,
        {"a.kube": b"[Kube]\nYaml=pod.yaml\n"},
        "inline file 'a.kube': Yaml= names 'pod.yaml', which is not inline",
    ),
    "kube-invalid-reference": (
        quadlet_images,
        {"a.kube": b"[Kube]\nYaml=pod.yaml\n", "pod.yaml": b"containers: [{image: 'X:1'}]\n"},
        "inline file 'pod.yaml': invalid repository",
    ),
}


@pytest.mark.parametrize(("reader", "files", "message"), ERROR_CASES.values(), ids=ERROR_CASES)
def test_malformed_app_file_is_an_app_file_error(
    reader: Reader, files: dict[str, bytes], message: str
) -> None:
    with pytest.raises(AppFileError) as caught:
        reader(files)
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)
