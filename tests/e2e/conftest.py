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

    def restart(node: Node) -> Node:
        """A new process on the same config, bus, store and port (after a kill -9 or a stop)."""
        fresh = Node(node.config_dir, node.bus, node.store, port=node.port, extra_args=node.extra_args)
        nodes.append(fresh)
        return fresh.start()

    make.restart = restart  # type: ignore[attr-defined]
    yield make
    failures = []
    for node in nodes:
        if node.proc is None or node.proc.poll() is not None:
            continue  # never started, killed on purpose, or stopped by the test (which checks the code)
        try:
            code = node.stop(timeout=30)
        except Exception as exc:
            failures.append(f"{node.url}: stop failed: {exc}\n{node.tail()}")
            continue
        if code != 0:
            failures.append(f"{node.url}: SIGTERM exit code {code}\n{node.tail()}")
    if failures:
        pytest.fail("node(s) did not stop cleanly:\n" + "\n".join(failures))
