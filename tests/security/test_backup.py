"""Backup and restore drills on a real node: back up mid-stream, kill -9, destroy the files, restore, go on.

The oracle is what clients were told (202 with a record id and offset), the target's
deliveries, the backup's manifest and `syncbus ledger --json`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncbus.state.backup import BackupError, Targets, backup, in_use
from syncbus.state.restore import restore
from tests.e2e.harness import Node, order, wait_until, write_config
from tests.sinks.target_server import Reply, TargetServer

TOPIC = "e2e.orders"


@pytest.fixture
def target() -> Iterator[TargetServer]:
    with TargetServer(default=Reply(200, {"ok": True}, delay=0.03)) as server:
        yield server


class Poster:
    """Posts orders in a thread until stopped; keeps (record id, offset, acknowledged at) of every 202."""

    def __init__(self, node: Node, start: int = 0) -> None:
        self.node = node
        self.next = start
        self.acked: list[tuple[str, int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                try:
                    response = self.node.post(client, order(self.next))
                except httpx.HTTPError:
                    return   # the node was killed
                if response.status_code == 202:
                    body = response.json()
                    self.acked.append((body["id"], body["offset"], time.monotonic()))
                self.next += 1

    def __enter__(self) -> Poster:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def wait_for(self, count: int) -> None:
        wait_until(lambda: len(self.acked) >= count, timeout=30, what=f"{count} accepted records")


def ledger(node: Node) -> dict[str, Any]:
    proc = node.cli("ledger", "--json", "--since", "1h", "--grace", "5m", check=False)
    assert proc.stdout.startswith("{"), proc.stdout + proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def delivered(target: TargetServer) -> set[str]:
    return {(r.header("idempotency-key") or "").rsplit(":", 1)[-1] for r in target.requests if r.status < 300}


@pytest.mark.parametrize("layout", ["store-in-bus-file", "separate-store"])
def test_backup_drill(tmp_path: Path, target: TargetServer, layout: str) -> None:
    config = write_config(tmp_path / "config", target.url_for("/erp/orders"))
    data = tmp_path / "data"
    bus = f"embedded://{data}/bus.db"
    store = f"sqlite:///{data}/bus.db" if layout == "store-in-bus-file" else f"sqlite:///{data}/store.db"
    node = Node(config, bus, store).start()
    dest = tmp_path / "backup"
    with Poster(node) as poster:
        poster.wait_for(60)
        accepted_before = {rid for rid, _, _ in poster.acked}           # answered 202 before the backup began
        made = node.cli("backup", str(dest), "--json")                   # while records keep coming
        poster.wait_for(len(poster.acked) + 20)
        refused = node.cli("restore", str(dest), check=False)            # the node has the files open
        node.kill9()
    assert refused.returncode == 1 and "open in another process" in refused.stderr, refused.stderr
    manifest = json.loads(made.stdout)
    high_water = manifest["bus"]["high_water"][TOPIC]
    assert high_water >= len(accepted_before)
    assert (layout == "separate-store") == ("store" in manifest and "file" in manifest["store"])

    shutil.rmtree(data)                                                  # the disk is gone
    done = node.cli("restore", str(dest), "--json")
    assert json.loads(done.stdout)["set_aside"] == []

    report = ledger(node)                                                # before the restart
    assert report["accepted"] == high_water and report["no_fate"] == 0, report
    in_backup = {rid for rid, offset, _ in poster.acked if offset < high_water}
    assert accepted_before <= in_backup
    print(f"\n{layout}: {len(poster.acked)} accepted, {high_water} in the backup, "
          f"{report['in_flight']} in flight at the backup, {report['delivered']} delivered")

    node = Node(config, bus, store, port=node.port).start()             # restart and continue
    try:
        with httpx.Client(timeout=5) as client:
            for i in range(20):
                assert node.post(client, order(100_000 + i)).status_code == 202
        wait_until(lambda: ledger(node)["in_flight"] == 0, timeout=60, what="everything settled after the restore")
        final = ledger(node)
        assert final["ok"] and final["accepted"] == high_water + 20 and final["delivered"] == final["accepted"]
        assert in_backup <= delivered(target)                           # nothing of the backup is lost
    finally:
        assert node.stop() == 0, node.tail()


def test_backup_and_restore_refusals(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "node" / "bus.db"
    db.parent.mkdir()
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE topics (topic TEXT, \"partition\" INT, next_offset INT)")
        conn.execute("INSERT INTO topics VALUES ('t', 0, 7)")
    targets = Targets(bus=db, store=db, bus_url=f"embedded://{db}", store_url=f"sqlite:///{db}")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(BackupError, match="not an empty folder"):
        backup(targets, tmp_path / "full")
    manifest = backup(targets, tmp_path / "b1")
    assert manifest["bus"]["high_water"] == {"t": 7} and manifest["bus"]["store_included"]
    with pytest.raises(BackupError, match=r"no manifest\.json"):
        restore(targets, tmp_path / "full")
    with pytest.raises(BackupError, match="no such folder"):
        restore(targets, tmp_path / "never-made")
    # Locks are per process: the node is another process.
    script = ("import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1]); "
              "c.execute('SELECT * FROM topics').fetchall(); print('open', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", script, str(db)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"open\n"
        assert in_use(db)
        with pytest.raises(BackupError, match="open in another process"):
            restore(targets, tmp_path / "b1")
    finally:
        holder.kill()
        holder.wait()
    assert not in_use(db)                                                # a killed node holds nothing
    (tmp_path / "b1" / "bus.db").write_bytes(b"damaged")
    with pytest.raises(BackupError, match="does not match its checksum"):
        restore(targets, tmp_path / "b1")
    assert db.exists()                                                   # nothing was touched
    backup(targets, tmp_path / "b2")
    done = restore(targets, tmp_path / "b2")
    [aside] = done["set_aside"]
    assert Path(aside).exists() and db.exists()                          # the old file is kept, not deleted
