"""metrics.py: what a scrape of a node with workers shows of its routes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from syncbus.metrics import RouteInfo


def _versions(info: RouteInfo) -> set[tuple[str, str]]:
    family = next(iter(info.collect()))
    assert {s.value for s in family.samples} <= {1.0}
    return {(s.labels["route"], s.labels["version"]) for s in family.samples}


@pytest.fixture
def other_worker() -> Iterator[int]:
    """The pid of a running process standing in for another worker."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_half_done_reload_shows_both_versions_and_a_finished_one_only_the_new(
        tmp_path: Path, other_worker: int) -> None:
    routes: dict[str, tuple[str, str, str]] = {"orders": ("orders", "5", "sales")}
    mine = RouteInfo(routes, str(tmp_path))
    mine.changed()
    assert orjson.loads((tmp_path / f"route_info_{os.getpid()}.json").read_bytes()) == [["orders", "5", "sales"]]
    # the other worker has not swapped yet; a dead worker's file is ignored
    (tmp_path / f"route_info_{other_worker}.json").write_bytes(orjson.dumps([["orders", "4", "sales"]]))
    (tmp_path / f"route_info_{_dead_pid()}.json").write_bytes(orjson.dumps([["orders", "3", "sales"]]))
    (tmp_path / "route_info_garbage.json").write_bytes(b"{not json")
    assert _versions(mine) == {("orders", "4"), ("orders", "5")}
    (tmp_path / f"route_info_{other_worker}.json").write_bytes(orjson.dumps([["orders", "5", "sales"]]))
    assert _versions(mine) == {("orders", "5")}
    # a half-written file of another worker is skipped, not an error
    (tmp_path / f"route_info_{other_worker}.json").write_bytes(b'[["orders", "6"')
    assert _versions(mine) == {("orders", "5")}


def test_one_process_shows_its_own_routes() -> None:
    routes = {"orders": ("orders", "2", "sales")}
    info = RouteInfo(routes)
    info.changed()
    assert _versions(info) == {("orders", "2")}
