"""Hot reload in one process (syncbus/reload.py): the file watcher, the fingerprint, the reloader.

Real files in a temporary config dir, a real runtime on the embedded bus and a
real HTTP target (tests/sinks/target_server.py); records go onto the bus and
are counted where they arrive. The same behaviour through a real
``syncbus run`` is in tests/e2e/test_reload.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from syncbus.config import Settings
from syncbus.mapping.loader import load_mapping
from syncbus.project import load_project
from syncbus.reload import FileWatcher, Reloader, ReloadFailed, ReloadRefused, ReloadSetupError, watch_interval
from syncbus.runtime import Runtime
from tests.sinks.target_server import TargetServer

MAPPING = """\
    mapping: orders
    version: {version}
    owner: ops
    source: {{topic: orders.in}}
    key: id
    target: {{sink: {sink}, format: json}}
    fields:
      ID: id
      TAG: {{const: v{version}}}
      DEPT: {{from: dept, transform: "lookup(depts)", default: none}}
    """
CONNECTORS = """\
    sinks:
      - name: erp
        type: http
        url: {url}
        retry: {{attempts: 2, initial: 10ms, max: 20ms}}
    """


def write_mapping(root: Path, *, version: int = 1, sink: str = "erp") -> None:
    (root / "mappings").mkdir(parents=True, exist_ok=True)
    (root / "mappings" / "orders.yaml").write_text(textwrap.dedent(MAPPING.format(version=version, sink=sink)))


def write_lookup(root: Path, rows: dict[str, str]) -> None:
    (root / "mappings" / "lookups").mkdir(parents=True, exist_ok=True)
    (root / "mappings" / "lookups" / "depts.yaml").write_text("".join(f"{k}: {v}\n" for k, v in rows.items()))


def write_config(root: Path, url: str, *, version: int = 1) -> Path:
    write_mapping(root, version=version)
    write_lookup(root, {"sales": "D100"})
    (root / "connectors").mkdir(exist_ok=True)
    (root / "connectors" / "c.yaml").write_text(textwrap.dedent(CONNECTORS.format(url=url)))
    return root


async def until(cond: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# --------------------------------------------------------------------------- the file watcher


def test_watcher_sees_content_not_timestamps(tmp_path: Path) -> None:
    write_config(tmp_path, "http://127.0.0.1:9/")
    watcher = FileWatcher(tmp_path)
    seen = watcher.snapshot()
    mapping = tmp_path / "mappings" / "orders.yaml"
    lookup = tmp_path / "mappings" / "lookups" / "depts.yaml"
    assert {str(mapping), str(lookup), str(tmp_path / "connectors" / "c.yaml")} <= set(seen)

    os.utime(mapping, ns=(time.time_ns() + 5_000_000_000,) * 2)  # touched, content the same
    assert FileWatcher.same(watcher.snapshot(), seen)

    # Same size, and the old mtime put back (a coarse-mtime filesystem, or an edit in the same tick):
    # the file was looked at moments ago, so it is hashed again and the edit is seen.
    before = lookup.stat()
    lookup.write_text(lookup.read_text().replace("D100", "D200"))
    os.utime(lookup, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert lookup.stat().st_size == before.st_size
    assert not FileWatcher.same(watcher.snapshot(), seen)


def test_watcher_ignores_editor_files_and_mapping_tests(tmp_path: Path) -> None:
    write_config(tmp_path, "http://127.0.0.1:9/")
    watcher = FileWatcher(tmp_path)
    seen = watcher.snapshot()
    (tmp_path / "mappings" / ".orders.yaml.swp").write_bytes(b"vim")
    (tmp_path / "mappings" / "orders.yaml~").write_text("backup")
    (tmp_path / "mappings" / "tests").mkdir()
    (tmp_path / "mappings" / "tests" / "orders.yaml").write_text("cases: []\n")
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "syncbus.json").write_text("{}")  # state, not config
    assert FileWatcher.same(watcher.snapshot(), seen)
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "new.schema.json").write_text("{}")
    assert not FileWatcher.same(watcher.snapshot(), seen)


def test_watch_interval_setting() -> None:
    assert watch_interval({}) == 2.0
    assert watch_interval({"SYNCBUS_RELOAD_INTERVAL": "500ms"}) == 0.5
    assert watch_interval({"SYNCBUS_RELOAD_INTERVAL": "off"}) == 0.0
    with pytest.raises(ReloadSetupError, match="SYNCBUS_RELOAD_INTERVAL"):
        watch_interval({"SYNCBUS_RELOAD_INTERVAL": "soon"})


# --------------------------------------------------------------------------- the fingerprint


def test_fingerprint_covers_the_lookup_tables_and_schemas_a_mapping_uses(tmp_path: Path) -> None:
    write_config(tmp_path, "http://127.0.0.1:9/")
    path = tmp_path / "mappings" / "orders.yaml"
    first = load_mapping(path)
    assert str(tmp_path / "mappings" / "lookups" / "depts.yaml") in first.files
    assert load_mapping(path).fingerprint == first.fingerprint  # deterministic

    write_lookup(tmp_path, {"sales": "D100", "other": "D900"})  # a table the route uses
    changed = load_mapping(path)
    assert changed.fingerprint != first.fingerprint

    (tmp_path / "mappings" / "lookups" / "unused.yaml").write_text("a: b\n")  # a table nobody uses
    assert load_mapping(path).fingerprint == changed.fingerprint
    (tmp_path / "mappings" / "lookups" / "depts.yaml").write_text("# a comment\nsales: D100\nother: D900\n")
    assert load_mapping(path).fingerprint == changed.fingerprint  # same table, other formatting

    (tmp_path / "schemas").mkdir()
    schema = tmp_path / "schemas" / "in.json"
    schema.write_text(json.dumps({"type": "object", "required": ["id"]}))
    path.write_text(path.read_text().replace("source: {topic: orders.in}",
                                             "source: {topic: orders.in, schema: schemas/in.json}"))
    with_schema = load_mapping(path)
    assert str(schema) in with_schema.files
    schema.write_text(json.dumps({"type": "object", "required": ["id", "dept"]}))
    assert load_mapping(path).fingerprint != with_schema.fingerprint


# --------------------------------------------------------------------------- the reloader on a running node


class Node:
    """A runtime (bus, store, sinks, routes; no HTTP) and its reloader, fed straight through the bus."""

    def __init__(self, root: Path, target: TargetServer, interval: float = 0.0) -> None:
        self.root = root
        self.target = target
        settings = Settings(root, f"embedded://{root}/bus.db", f"sqlite:///{root}/store.db")
        self.runtime = Runtime(settings, load_project(root, env={}), env={})
        self.reloader: Reloader = self.runtime.reloader
        self.reloader.interval, self.reloader.settle = interval, 0.05
        self.sent = 0

    async def send(self, n: int = 1, **fields: Any) -> None:
        for _ in range(n):
            self.sent += 1
            body = json.dumps({"id": f"R{self.sent:05d}", **fields}).encode()
            await self.runtime.bus.publish("orders.in", body, key=f"R{self.sent:05d}",
                                           headers={"content-type": "application/json"})

    def bodies(self) -> list[dict[str, Any]]:
        return [r.json() for r in self.target.requests if r.status < 300]

    def info(self) -> dict[str, float]:
        """syncbus_route_info series now: {version: value}."""
        out = {}
        for metric in self.runtime.metrics.registry.collect():
            if metric.name == "syncbus_route_info":
                out.update({s.labels["version"]: s.value for s in metric.samples})
        return out


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    async with TargetServer() as target:
        write_config(tmp_path, target.url_for("/erp"))
        n = Node(tmp_path, target)
        await n.runtime.start()
        try:
            yield n
        finally:
            await n.reloader.stop()
            await n.runtime.stop()


async def test_a_broken_edit_keeps_the_old_version_until_fixed(node: Node) -> None:
    await node.send(dept="sales")
    await until(lambda: len(node.bodies()) == 1, what="first delivery")
    def failures() -> float:
        return node.runtime.metrics.value("syncbus_config_reload_failures_total")

    mapping = node.root / "mappings" / "orders.yaml"
    mapping.write_text(mapping.read_text().replace("fields:", "fields: [broken"))
    with pytest.raises(ReloadRefused) as refused:
        await node.reloader.reload("test")
    assert all(line.startswith(f"{mapping}:") for line in refused.value.errors), refused.value.errors
    assert any("invalid YAML" in line for line in refused.value.errors)
    assert failures() == 1
    with pytest.raises(ReloadRefused):  # the same broken files again: still one broken edit
        await node.reloader.reload("test")
    assert failures() == 1
    status = node.reloader.status()
    assert status["ok"] is False and status["errors"] == refused.value.errors and status["since"]

    write_mapping(node.root, version=2, sink="nowhere")  # valid YAML, unknown sink
    with pytest.raises(ReloadRefused, match="unknown sink 'nowhere'"):
        await node.reloader.reload("test")
    assert failures() == 2
    assert node.reloader.status()["since"] == status["since"]  # still the same bad spell

    await node.send(dept="sales")  # the old version still runs
    await until(lambda: len(node.bodies()) == 2, what="delivery by the old version")
    assert node.bodies()[-1]["TAG"] == "v1"
    assert node.info() == {"1": 1.0}

    write_mapping(node.root, version=2)
    changes = await node.reloader.reload("test")
    assert changes.routes.changed == ("orders",)
    assert node.reloader.status()["ok"] is True and node.reloader.status()["errors"] == []
    assert node.info() == {"2": 1.0}
    await node.send(dept="sales")
    await until(lambda: len(node.bodies()) == 3, what="delivery by the new version")
    assert node.bodies()[-1]["TAG"] == "v2"
    assert failures() == 2


async def test_a_lookup_change_alone_swaps_the_route(node: Node) -> None:
    write_lookup(node.root, {"sales": "D777"})
    changes = await node.reloader.reload("test")
    assert changes.routes.changed == ("orders",) and not changes.sinks
    await node.send(dept="sales")
    await until(lambda: len(node.bodies()) == 1, what="delivery")
    assert node.bodies()[0]["DEPT"] == "D777"
    assert (await node.reloader.reload("test")).empty  # nothing changed since


async def test_the_watcher_reloads_on_its_own_and_counts_a_broken_edit_once(node: Node) -> None:
    reloader = node.reloader
    reloader.interval = 0.1
    looks = 0
    look = reloader.watcher.snapshot

    def counting() -> Any:
        nonlocal looks
        looks += 1
        return look()

    reloader.watcher.snapshot = counting  # type: ignore[method-assign]
    await reloader.start()
    def failures() -> float:
        return node.runtime.metrics.value("syncbus_config_reload_failures_total")

    write_mapping(node.root, version=3)
    await until(lambda: node.info() == {"3": 1.0}, what="the watcher's swap")

    mapping = node.root / "mappings" / "orders.yaml"
    mapping.write_text("mapping: [\n")
    await until(lambda: failures() == 1, what="the refused reload")
    seen = looks
    await until(lambda: looks >= seen + 10, what="ten more looks at the files")
    assert failures() == 1  # not retried (and counted) on every look
    assert node.info() == {"3": 1.0}

    write_mapping(node.root, version=4)
    await until(lambda: reloader.status()["ok"], what="the fixed edit swapped in")
    assert node.info() == {"4": 1.0}


async def test_a_new_route_and_sink_start_and_a_removed_route_stops(node: Node) -> None:
    second = node.target.url_for("/second")
    connectors = textwrap.dedent(CONNECTORS.format(url=node.target.url_for("/erp")))
    (node.root / "connectors" / "c.yaml").write_text(connectors + f"  - {{name: second, type: http, url: {second}}}\n")
    (node.root / "mappings" / "copy.yaml").write_text(textwrap.dedent("""\
        mapping: copy
        version: 1
        owner: ops
        source: {topic: orders.in}
        target: {sink: second, format: json}
        fields: {COPY: id}
        """))
    changes = await node.reloader.reload("test")
    assert changes.routes.added == ("copy",) and changes.sinks.added == ("second",)
    await node.send()
    await until(lambda: any(r.path == "/second" for r in node.target.requests), what="the new route's delivery")

    (node.root / "mappings" / "copy.yaml").unlink()
    changes = await node.reloader.reload("test")
    assert changes.routes.removed == ("copy",) and changes.sinks.removed == ("second",)
    assert "copy" not in node.runtime.router.routes  # type: ignore[union-attr]
    await node.send()
    await until(lambda: len([r for r in node.target.requests if r.path == "/erp"]) == 2, what="orders route")
    assert len([r for r in node.target.requests if r.path == "/second"]) == 1


async def test_an_apply_that_fails_half_way_is_retried_until_it_completes(node: Node) -> None:
    """The bus went away while the route restarted: the reloader tries again by itself, backing off."""
    reloader, runtime = node.reloader, node.runtime
    reloader.interval = 0.05
    real_apply = runtime.apply
    calls = 0

    async def flaky_apply(project: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("bus unreachable")
        return await real_apply(project)

    runtime.apply = flaky_apply  # type: ignore[method-assign]
    write_mapping(node.root, version=5)
    with pytest.raises(ReloadFailed):
        await reloader.reload("test")
    assert reloader.status()["last_reload"]["outcome"] == "failed"
    assert runtime.metrics.value("syncbus_config_reload_failures_total") == 1
    await reloader.start()  # no further edit: the watcher's retry completes the swap
    await until(lambda: reloader.status()["ok"], what="the retried reload")
    assert reloader.status()["last_reload"]["trigger"] == "retry" and calls == 2
    assert node.info() == {"5": 1.0}
