"""Backup and restore when things go wrong: a full disk, two restores in one second, stores syncbus can't copy.

Real SQLite files and real ``syncbus backup`` / ``syncbus restore`` processes. A full disk is a
small tmpfs mounted for the test (root only; the test is skipped with the reason otherwise).
Two tests switch off the free-space check made before copying: it is the only way to reach
the failure *during* the copy that the check exists to prevent, and that failure must still
leave nothing changed.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url

from syncbus.state import backup as backup_module
from syncbus.state import restore as restore_module
from syncbus.state.backup import BackupError, Targets, backup
from syncbus.state.restore import restore
from tests.e2e.harness import SYNCBUS
from tests.support.postgres import ci

MB = 1 << 20


def make_db(path: Path, high_water: int, pad: int = 0) -> Path:
    """A WAL database like a node's: a topics table (what ``describe`` reads) and ``pad`` bytes of payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute('CREATE TABLE topics (topic TEXT, "partition" INT, next_offset INT)')
        conn.execute("INSERT INTO topics VALUES ('t', 0, ?)", (high_water,))
        conn.execute("CREATE TABLE pad (b BLOB)")
        for _ in range(pad // (64 * 1024)):
            conn.execute("INSERT INTO pad VALUES (randomblob(65536))")
    conn.close()
    return path


def high_water(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        value = conn.execute("SELECT next_offset FROM topics").fetchone()[0]
    conn.close()
    return int(value)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def targets(data: Path) -> Targets:
    return Targets(bus=data / "bus.db", store=data / "store.db", bus_url=f"embedded://{data}/bus.db",
                   store_url=f"sqlite:///{data}/store.db")


def syncbus(tmp_path: Path, *args: str, bus: str, store: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "cfg").mkdir(exist_ok=True)
    return subprocess.run([SYNCBUS, *args, "--config-dir", str(tmp_path / "cfg"), "--bus", bus, "--store", store],
                          capture_output=True, text=True, timeout=60)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The refusal: exit 1, exactly one ``error:`` line, no traceback."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MB filesystem of its own: writes beyond it fail with ENOSPC as on a full disk."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:  # CI runs as root: there a missing full-disk drill is a failure, not a skip
        (pytest.fail if ci() else pytest.skip)(
            f"cannot mount a 3 MB tmpfs to simulate a full disk (needs root): {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


# -- 1. two restores in the same second ----------------------------------------------------------


def test_two_restores_in_one_second_keep_the_original_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_db(data / "bus.db", 11)
    make_db(data / "store.db", 12)
    source = tmp_path / "src"
    make_db(source / "bus.db", 21)
    make_db(source / "store.db", 22)
    backup(targets(source), tmp_path / "b")

    first = restore(targets(data), tmp_path / "b")
    second = restore(targets(data), tmp_path / "b")                   # well within the same second

    asides = first["set_aside"] + second["set_aside"]
    assert len(asides) == 4 and len(set(asides)) == 4, asides
    assert all(Path(p).exists() for p in asides)
    kept = sorted(high_water(Path(p)) for p in asides)
    assert kept == [11, 12, 21, 22]                                    # the node's originals survive
    assert high_water(data / "bus.db") == 21 and high_water(data / "store.db") == 22


def test_an_existing_aside_name_is_never_overwritten(tmp_path: Path) -> None:
    """The clock giving the same time again (or a stray file under the name) moves on to the next free name."""
    target = tmp_path / "bus.db"
    (tmp_path / "bus.db.before-restore-S-3-shm").write_text("stray")   # a -wal/-shm name counts as taken
    moves: list[tuple[Path, Path]] = []
    names = []
    for content in ("first", "second", "third"):
        target.write_text(content)
        Path(f"{target}-wal").write_text(f"{content} wal")
        names += restore_module._set_aside(target, "S", moves)
    assert [Path(n).name for n in names] == ["bus.db.before-restore-S", "bus.db.before-restore-S-2",
                                             "bus.db.before-restore-S-4"]
    assert [Path(n).read_text() for n in names] == ["first", "second", "third"]
    assert [Path(f"{n}-wal").read_text() for n in names] == ["first wal", "second wal", "third wal"]
    assert (tmp_path / "bus.db.before-restore-S-3-shm").read_text() == "stray" and not target.exists()


# -- 2. restore is all or nothing -----------------------------------------------------------------


def _full_restore_setup(tmp_path: Path, disk: Path) -> tuple[Path, Path]:
    """Live files on the 3 MB disk; a backup (elsewhere) too big to fit beside them, its bus small."""
    data = disk / "data"
    make_db(data / "bus.db", 1, pad=256 * 1024)
    make_db(data / "store.db", 2, pad=256 * 1024)
    source = tmp_path / "src"
    make_db(source / "bus.db", 3, pad=128 * 1024)
    make_db(source / "store.db", 4, pad=2560 * 1024)
    backup(targets(source), tmp_path / "b")
    return data, tmp_path / "b"


def test_restore_onto_a_full_disk_changes_nothing(tmp_path: Path, small_disk: Path) -> None:
    data, src = _full_restore_setup(tmp_path, small_disk)
    before = snapshot(data)
    proc = syncbus(tmp_path, "restore", str(src), bus=f"embedded://{data}/bus.db", store=f"sqlite:///{data}/store.db")
    line = one_error_line(proc)
    assert str(data) in line and "nothing was changed" in line, line
    assert snapshot(data) == before                                    # not moved, not replaced, nothing left over


def test_restore_failing_midway_changes_nothing(tmp_path: Path, small_disk: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    data, src = _full_restore_setup(tmp_path, small_disk)
    before = snapshot(data)
    monkeypatch.setattr(backup_module, "_check_space", lambda *a, **k: None, raising=False)  # reach the copy
    with pytest.raises(BackupError) as caught:
        restore(targets(data), src)
    message = str(caught.value)
    assert "store.db.restoring" in message and "No space left" in message, message
    assert "nothing was changed" in message and "\n" not in message
    assert snapshot(data) == before                                    # the bus was not replaced either


# -- 3. a failed backup leaves nothing behind -----------------------------------------------------


def _full_backup_setup(tmp_path: Path, disk: Path) -> tuple[Path, Path]:
    """A node (on the big disk) whose copy does not fit on the 3 MB disk beside a 1 MB file."""
    source = tmp_path / "node"
    make_db(source / "bus.db", 5, pad=640 * 1024)
    make_db(source / "store.db", 6, pad=1536 * 1024)
    (disk / "other-data").write_bytes(os.urandom(MB))
    return source, disk / "backups" / "tonight"


def test_backup_onto_a_full_disk_leaves_nothing_and_can_be_rerun(tmp_path: Path, small_disk: Path) -> None:
    source, dest = _full_backup_setup(tmp_path, small_disk)
    urls = {"bus": f"embedded://{source}/bus.db", "store": f"sqlite:///{source}/store.db"}
    line = one_error_line(syncbus(tmp_path, "backup", str(dest), **urls))
    assert str(dest) in line and str(source / "store.db") not in line, line
    assert sorted(p.name for p in small_disk.iterdir()) == ["other-data"]   # not even the folders it made
    (small_disk / "other-data").unlink()                               # make room; the same command now works
    again = syncbus(tmp_path, "backup", str(dest), **urls)
    assert again.returncode == 0, again.stderr
    assert (dest / "manifest.json").is_file()


def test_backup_failing_midway_removes_what_it_wrote(tmp_path: Path, small_disk: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    source, dest = _full_backup_setup(tmp_path, small_disk)
    dest.mkdir(parents=True)                                           # an empty folder given by the user stays
    monkeypatch.setattr(backup_module, "_check_space", lambda *a, **k: None, raising=False)  # reach the copy
    with pytest.raises(BackupError) as caught:
        backup(targets(source), dest)
    message = str(caught.value)
    assert str(dest) in message and "full" in message and str(source) not in message, message
    assert dest.is_dir() and list(dest.iterdir()) == []
    (small_disk / "other-data").unlink()
    assert backup(targets(source), dest)["store"]["high_water"] == {"t": 6}


# -- 4. PostgreSQL stores and Kafka buses ---------------------------------------------------------

PG = "postgresql+psycopg://app%40ops:s3cret@db.example:5433/syncbus?sslmode=verify-full&sslrootcert=/etc/ca.pem"


def _libpq_urls(text: str) -> list[str]:
    return re.findall(r"--dbname '?(\S+?)'?(?:\s|$)", text)


def test_backup_with_a_postgresql_store_prints_usable_pg_dump_commands(tmp_path: Path) -> None:
    bus = make_db(tmp_path / "node" / "bus.db", 7)
    proc = syncbus(tmp_path, "backup", str(tmp_path / "b"), bus=f"embedded://{bus}", store=PG)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout + proc.stderr
    assert "pg_dump" in text and "pg_restore" in text and "PGPASSWORD" in text
    assert "s3cret" not in text and "+psycopg" not in text
    assert "s3cret" not in (tmp_path / "b" / "manifest.json").read_text()
    urls = _libpq_urls(text)
    assert len(urls) == 2 and urls[0] == urls[1], text
    assert conninfo_to_dict(urls[0]) == {"user": "app@ops", "host": "db.example", "port": "5433",
                                         "dbname": "syncbus", "sslmode": "verify-full",
                                         "sslrootcert": "/etc/ca.pem"}   # what libpq itself reads


def test_backup_with_kafka_and_postgresql_prints_the_guidance_and_exits_1(tmp_path: Path) -> None:
    dest = tmp_path / "b"
    proc = syncbus(tmp_path, "backup", str(dest), bus="kafka://broker:9092", store=PG.replace("+psycopg", ""))
    line = one_error_line(proc)
    assert "nothing" in line and "Kafka" in line, line
    assert "pg_dump" in proc.stderr and "Kafka's" in proc.stderr and "s3cret" not in proc.stderr
    [url, _] = _libpq_urls(proc.stderr)
    assert conninfo_to_dict(url)["host"] == "db.example"
    assert not dest.exists()                                          # no folder that looks like a backup


def test_the_printed_pg_dump_and_pg_restore_commands_work(tmp_path: Path, pg_url: str, pg_engine: Engine) -> None:
    """The guidance run as printed, against a real server: the dump is made and restores what was lost."""
    if not (shutil.which("pg_dump") and shutil.which("pg_restore")):
        (pytest.fail if ci() else pytest.skip)("pg_dump / pg_restore are not installed (deploy/setup.sh installs "
                                               "postgresql)")
    with pg_engine.begin() as conn:
        conn.execute(text("CREATE TABLE marker (v TEXT)"))
        conn.execute(text("INSERT INTO marker VALUES ('kept')"))
    bus = make_db(tmp_path / "node" / "bus.db", 7)
    proc = syncbus(tmp_path, "backup", str(tmp_path / "b"), bus=f"embedded://{bus}", store=pg_url)
    assert proc.returncode == 0, proc.stderr
    commands = [line.strip() for line in proc.stderr.splitlines() if line.startswith(("  pg_dump", "  pg_restore"))]
    assert len(commands) == 2, proc.stderr
    env = {**os.environ, "PGPASSWORD": make_url(pg_url).password or ""}   # as the guidance says
    dumped = subprocess.run(["bash", "-c", commands[0]], capture_output=True, text=True, env=env, timeout=120)
    assert dumped.returncode == 0 and (tmp_path / "b" / "store.pgdump").is_file(), dumped.stderr
    with pg_engine.begin() as conn:
        conn.execute(text("DELETE FROM marker"))                        # the loss the dump is for
    restored = subprocess.run(["bash", "-c", commands[1]], capture_output=True, text=True, env=env, timeout=120)
    assert restored.returncode == 0, restored.stderr
    with pg_engine.connect() as conn:
        assert conn.execute(text("SELECT v FROM marker")).scalars().all() == ["kept"]
