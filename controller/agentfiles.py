"""Write spec files the way the flightctl agent does (for the demo, tests, examples).

The agent's update protocol (design.md section 2): while an update runs,
desired.json holds the new spec and rollback.json only the current OS image;
after success current.json becomes the new spec and rollback.json is cleared.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

RENDERED = "device-controller/renderedVersion"


def _document(
    generation: str,
    spec: dict[str, Any],
    annotations: dict[str, str] | None = None,
    name: str = "demo-device",
) -> dict[str, Any]:
    return {
        "apiVersion": "flightctl.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "annotations": {RENDERED: generation, **(annotations or {})}},
        "spec": spec,
    }


def device_spec(
    os_image: str | None, applications: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = dict(extra)
    if os_image:
        spec["os"] = {"image": os_image}
    if applications:
        spec["applications"] = applications
    return spec


def container_app(name: str, image: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "appType": "container", "image": image, **extra}


def compose_app(name: str, services: dict[str, str]) -> dict[str, Any]:
    lines = ["services:"]
    for service, image in services.items():
        lines += [f"  {service}:", f"    image: {image}"]
    content = "\n".join(lines) + "\n"
    return {
        "name": name,
        "appType": "compose",
        "inline": [{"path": "docker-compose.yaml", "content": content}],
    }


def _write(path: Path, document: dict[str, Any]) -> None:
    # The agent writes compact JSON; write atomically like it does.
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(document, separators=(",", ":")))
    os.replace(tmp, path)


def bootstrap(spec_dir: Path) -> None:
    spec_dir.mkdir(parents=True, exist_ok=True)
    empty = {"apiVersion": "", "kind": "", "metadata": {"annotations": {RENDERED: "0"}}, "spec": {}}
    for name in ("desired.json", "current.json", "rollback.json"):
        _write(spec_dir / name, empty)


def begin_update(spec_dir: Path, generation: str, spec: dict[str, Any]) -> None:
    """The agent starts applying `spec`: desired changes, rollback keeps the OS."""
    current = json.loads((spec_dir / "current.json").read_text())
    _write(spec_dir / "desired.json", _document(generation, spec))
    rollback_spec: dict[str, Any] = {}
    if current.get("spec", {}).get("os"):
        rollback_spec["os"] = current["spec"]["os"]
    current_gen = current.get("metadata", {}).get("annotations", {}).get(RENDERED, "")
    _write(
        spec_dir / "rollback.json",
        {
            "apiVersion": "",
            "kind": "",
            "metadata": {
                "annotations": {RENDERED: current_gen, "agent/desiredVersion": generation}
            },
            "spec": rollback_spec,
        },
    )


def finish_update(spec_dir: Path) -> None:
    """The update succeeded: desired becomes current, rollback is cleared."""
    desired = json.loads((spec_dir / "desired.json").read_text())
    _write(spec_dir / "current.json", desired)
    _write(
        spec_dir / "rollback.json",
        {"apiVersion": "", "kind": "", "metadata": {"annotations": {RENDERED: ""}}, "spec": {}},
    )


def apply(spec_dir: Path, generation: str, spec: dict[str, Any]) -> None:
    """A whole successful update in one step."""
    if not (spec_dir / "current.json").exists():
        bootstrap(spec_dir)
    begin_update(spec_dir, generation, spec)
    finish_update(spec_dir)


def rollback(spec_dir: Path) -> None:
    """A failed update: the agent copies current over desired."""
    _write(spec_dir / "desired.json", json.loads((spec_dir / "current.json").read_text()))
