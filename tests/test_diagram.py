"""The diagrams are generated from the machine and the committed ones match the code."""

from __future__ import annotations

import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from conftest import edgeprune

from controller.diagram import FILES, Edge, machine_graph, render_all, stale_diagrams
from controller.machine import STATES, TRANSITIONS

REPO = Path(__file__).resolve().parents[1]
DIAGRAMS = REPO / "diagrams"


def table_edges() -> set[Edge]:
    """The transition table as written in controller/machine.py."""
    edges = set()
    for row in TRANSITIONS:
        sources = row["source"] if isinstance(row["source"], list) else [row["source"]]
        edges |= {Edge(source, row["dest"], row["trigger"]) for source in sources}
    return edges


def test_committed_diagrams_match_the_code() -> None:
    stale = stale_diagrams(DIAGRAMS)
    assert stale == [], f"diagrams/{stale} differ from the code: run `edgeprune diagram`"


def test_the_graph_is_the_machine_transitions_built() -> None:
    graph = machine_graph()
    assert graph.states == STATES
    assert graph.initial == "Idle"
    assert set(graph.edges) == table_edges()
    assert len(graph.edges) == len(table_edges())  # no edge twice


def test_every_format_shows_every_state_and_transition() -> None:
    mermaid, dot, svg = (render_all()[name] for name in FILES)
    for edge in table_edges():
        assert f"    {edge.source} --> {edge.dest}: {edge.trigger}\n" in mermaid
        assert f'    {edge.source} -> {edge.dest} [label="{edge.trigger}"];\n' in dot
    assert "[*] --> Idle" in mermaid and "__start__ -> Idle;" in dot

    root = ET.fromstring(svg)  # well-formed XML
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert sorted(t for t in texts if t in STATES) == sorted(STATES)
    triggers = [t for t in texts if t not in STATES]
    assert sorted(triggers) == sorted(edge.trigger for edge in table_edges())
    arrows = [
        element
        for element in root.iter()
        if element.get("marker-end") == "url(#arrow)" and element.get("class") == "e"
    ]
    assert len(arrows) == len(table_edges()) + 1  # every transition and the initial arrow


def test_generation_is_deterministic() -> None:
    assert render_all() == render_all()


def test_readme_shows_the_generated_mermaid_diagram() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```mermaid\n(.*?)```", readme, flags=re.DOTALL)
    assert render_all()["pruner.mmd"] in blocks


def test_diagram_command_writes_and_checks(tmp_path: Path) -> None:
    def diagram(*args: str) -> subprocess.CompletedProcess[str]:
        return edgeprune("diagram", *args, timeout=60)

    out = tmp_path / "out"
    stale = diagram("--check", "--output-dir", str(out))
    assert stale.returncode == 1 and "pruner.svg is stale" in stale.stdout
    written = diagram("--output-dir", str(out))
    assert written.returncode == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    assert diagram("--check", "--output-dir", str(out)).returncode == 0
    (out / "pruner.dot").write_text("digraph hand_drawn {}\n")
    assert stale_diagrams(out) == ["pruner.dot"]
