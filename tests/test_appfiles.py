"""Image references in compose and quadlet files, read directly from a files mapping."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from controller.appfiles import AppFileError, compose_images, quadlet_images

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
        ".env": b"not: [yaml",  # not a compose file: ignored
    }
    assert compose_images(files) == [
        "quay.io/shop/web:1.0",
        "docker.io/library/redis:7.2",
        "quay.io/shop/web:1.1",
    ]


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
