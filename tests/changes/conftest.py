"""Fixtures of the change-management tests: a target system and a node running the reference CRM flow."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.changes.flow import write_flow
from tests.e2e.harness import Node
from tests.sinks.target_server import TargetServer


@pytest.fixture
def target() -> Iterator[TargetServer]:
    with TargetServer() as server:
        yield server


@pytest.fixture
def crm_node(tmp_path: Path, target: TargetServer) -> Iterator[Callable[..., Node]]:
    """make(start=True): a `syncbus run` of the reference flow; stopped (and checked for a clean exit) after."""
    nodes: list[Node] = []

    def make(start: bool = True) -> Node:
        cfg = tmp_path / "config"
        if not (cfg / "mappings").exists():
            write_flow(cfg, target.url)
        node = Node(cfg, f"embedded://{tmp_path}/bus.db", f"sqlite:///{tmp_path}/store.db")
        nodes.append(node)
        return node.start() if start else node

    yield make
    problems = []
    for node in nodes:
        if node.proc is not None and node.proc.poll() is None:
            code = node.stop(timeout=30)
            if code != 0:
                problems.append(f"{node.url}: exit code {code}\n{node.tail()}")
    if problems:
        pytest.fail("\n".join(problems))
