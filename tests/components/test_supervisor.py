"""The supervisor (syncbus/supervisor.py): start order, change sets, and applying them to a running node.

A real node on the embedded bus: a ``generate`` poll source feeds a route
that writes JSON files through a ``file`` sink, so "started in the right
order" is checked by records actually arriving as files.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from syncbus.bus.embedded import EmbeddedBus
from syncbus.dlq.writer import DeadLetterWriter
from syncbus.metrics import Metrics
from syncbus.project import Project, load_project
from syncbus.router import RouterOptions
from syncbus.state.checkpoints import CheckpointStore
from syncbus.state.store import Store
from syncbus.supervisor import ApplyError, Changes, ChangeSet, Supervisor, diff_projects
from syncbus.tracing import TraceRecorder

MAPPING = """\
    mapping: gen-to-file
    version: {version}
    owner: ops
    source: {{topic: gen.out}}
    target: {{sink: out, format: json}}
    fields:
      N: n
      V: {{const: {version}}}
    """


class NodeStore(Store, CheckpointStore):
    """The node's store with checkpoints (what the lead wires into Store itself)."""


def write_config(root: Path, *, count: int = 3, out: str = "out", version: int = 1, extra_sources: str = "",
                 extra_sinks: str = "") -> Project:
    (root / "mappings").mkdir(parents=True, exist_ok=True)
    (root / "connectors").mkdir(exist_ok=True)
    (root / "mappings" / "gen-to-file.yaml").write_text(textwrap.dedent(MAPPING.format(version=version)))
    (root / "connectors" / "c.yaml").write_text(textwrap.dedent(f"""\
        sources:
          - {{name: gen, type: generate, topic: gen.out, count: {count}, interval: 1h}}
        {extra_sources}
        sinks:
          - {{name: out, type: file, path: "{root / out}"}}
        {extra_sinks}
        """))
    return load_project(root, env={})


def files(folder: Path) -> list[dict[str, Any]]:
    return sorted((json.loads(p.read_text()) for p in folder.glob("*.json")), key=lambda d: (d["V"], d["N"]))


async def until(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Supervisor]:
    bus = EmbeddedBus(str(tmp_path / "bus.db"))
    store = NodeStore(f"sqlite:///{tmp_path / 'state.db'}")
    metrics = Metrics()
    trace = TraceRecorder(store)
    sup = Supervisor(write_config(tmp_path), bus=bus, store=store, metrics=metrics, trace=trace,
                     dead_letters=DeadLetterWriter(store, bus, metrics, trace),
                     options=RouterOptions(commit_interval=0.05, lag_interval=60, shutdown_timeout=5), node="n1")
    await sup.start()
    yield sup
    await sup.stop()


async def test_start_runs_sources_routes_and_sinks_end_to_end(node: Supervisor, tmp_path: Path) -> None:
    await until(lambda: len(files(tmp_path / "out")) == 3)
    assert files(tmp_path / "out") == [{"N": 1, "V": 1}, {"N": 2, "V": 1}, {"N": 3, "V": 1}]
    status = node.status()
    assert status["sources"]["gen"]["up"] is True and status["sinks"] == ["out"]
    assert status["routes"] == ["gen-to-file"]


def test_diff_projects(tmp_path: Path) -> None:
    old = write_config(tmp_path)
    assert diff_projects(old, write_config(tmp_path)).empty
    new = write_config(tmp_path, out="elsewhere", extra_sources="  - {name: more, type: generate, topic: x}")
    changes = diff_projects(old, new)
    assert changes == ChangeSet(sources=Changes(added=("more",)), sinks=Changes(changed=("out",)),
                                routes=Changes(changed=("gen-to-file",)))  # its sink changed
    assert str(changes) == "sources +more; sinks ~out; routes ~gen-to-file"
    assert diff_projects(new, old).sources == Changes(removed=("more",))


async def test_apply_changes_only_what_differs(node: Supervisor, tmp_path: Path) -> None:
    await until(lambda: len(files(tmp_path / "out")) == 3)
    old_sink = node.sinks["out"]
    gen_runner = node.pollers["gen"]

    # a new version of the route and a new poll source; the sink stays as it is
    changes = await node.apply(write_config(tmp_path, version=2, extra_sources=(
        "  - {name: more, type: generate, topic: gen.out, count: 2, interval: 1h, fields: {extra: true}}")))
    assert changes.routes == Changes(changed=("gen-to-file",)) and changes.sources == Changes(added=("more",))
    assert node.sinks["out"] is old_sink and node.pollers["gen"] is gen_runner
    await until(lambda: len([f for f in files(tmp_path / "out") if f["V"] == 2]) == 2)  # "more" via v2

    # the sink moves: the route drains, the old sink closes, the new one takes over
    changes = await node.apply(write_config(tmp_path, version=2, out="moved", extra_sources=(
        "  - {name: third, type: generate, topic: gen.out, count: 1, interval: 1h}")))
    assert changes.sinks == Changes(changed=("out",)) and changes.routes == Changes(changed=("gen-to-file",))
    assert changes.sources == Changes(added=("third",), removed=("more",))
    assert node.sinks["out"] is not old_sink and "more" not in node.pollers
    assert node.pollers["gen"] is gen_runner  # an unchanged source is not touched
    await until(lambda: files(tmp_path / "moved") == [{"N": 1, "V": 2}])  # "third" through the new sink
    assert len(files(tmp_path / "out")) == 5  # nothing more went to the old folder


async def test_a_broken_edit_keeps_the_running_configuration(node: Supervisor, tmp_path: Path) -> None:
    await until(lambda: len(files(tmp_path / "out")) == 3)
    (tmp_path / "blocked").write_text("a file where the sink wants a folder")
    running = node.project
    sink = node.sinks["out"]
    with pytest.raises(ApplyError, match="reload refused, the running configuration stays"):
        await node.apply(write_config(tmp_path, out="blocked/out"))
    assert node.project is running and node.sinks["out"] is sink and node.router is not None
    assert list(node.router.routes) == ["gen-to-file"]
    assert await node.apply(running) == ChangeSet()  # nothing was half-applied


async def test_stop_is_reverse_order_and_idempotent(node: Supervisor) -> None:
    await node.stop()
    assert node.pollers == {} and node.sinks == {} and node.router is None and not node.started
    await node.stop()
