import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Node, write_config
from tests.sinks.target_server import TargetServer

_counter = itertools.count(1)


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
def bus_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def bus_url(bus_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if bus_kind == "kafka":
        return "kafka://" + request.getfixturevalue("kafka_bootstrap")
    return f"embedded://{tmp_path}/syncbus.db"


@pytest.fixture
def target() -> Iterator[TargetServer]:
    with TargetServer() as server:
        yield server


@pytest.fixture
def suffix() -> str:
    return f"-{next(_counter)}-{id(object()) % 10_000}"


@pytest.fixture
def make_node(tmp_path: Path, bus_url: str, target: TargetServer, suffix: str) -> Iterator:
    nodes: list[Node] = []

    def make(start: bool = True, target_url: str | None = None, extra_args: list[str] | None = None,
             **config: object) -> Node:
        cfg = tmp_path / "config"
        write_config(cfg, target_url or target.url_for("/erp/orders"), suffix=suffix, **config)  # type: ignore[arg-type]
        node = Node(cfg, bus_url, f"sqlite:///{tmp_path}/store.db", extra_args=extra_args or [])
        nodes.append(node)
        return node.start() if start else node

    yield make
    for node in nodes:
        with contextlib.suppress(Exception):
            node.stop(timeout=20)
