"""Backup and restore of a node's files: the embedded bus and a SQLite state store.

``backup`` runs beside a live node: SQLite's online backup API copies each database in one
read transaction, so the copy is a consistent snapshot while ``syncbus run`` keeps writing
(WAL readers never block writers). With a separate store file the bus is copied FIRST and
the store second: the store then knows at least every record of the copied bus, and a
record that moves on after the bus copy is simply redelivered after a restore (targets
drop the duplicate by idempotency key) -- nothing accepted before the backup is lost. The
copy is checked (``PRAGMA quick_check``) and described by ``manifest.json`` (time, sizes,
SHA-256, high-water mark per topic, committed offsets per route), written last: a folder
without a manifest is not a finished backup.

PostgreSQL stores and Kafka buses have their own, better tools (``pg_dump``, replication);
for them the manifest says so and the command prints how.

``restore`` refuses while a node has the files open -- every SQLite connection in WAL mode
holds a shared lock on the "DMS" byte of the ``-shm`` file, which a probe can test without
touching the database -- and moves the current files aside (never deletes them).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import SyncbusError

MANIFEST = "manifest.json"
FORMAT = 1
BUS_FILE = "bus.db"
STORE_FILE = "store.db"
WAL_DMS_BYTE = 128          # SQLite unix VFS: (22 + 8) * 4 + 8, the byte every WAL connection share-locks
SIDE_FILES = ("-wal", "-shm", "-journal")


class BackupError(SyncbusError):
    """A backup or restore cannot be made as asked; nothing was changed (restore) or finished (backup)."""


class NodeRunning(BackupError):
    """A process has the database open: restoring under it would corrupt both."""


@dataclass(frozen=True)
class Targets:
    """The files of a node: the embedded bus file and the SQLite store file (None: not a local SQLite file)."""

    bus: Path | None
    store: Path | None
    bus_url: str
    store_url: str

    @property
    def store_separate(self) -> bool:
        return self.store is not None and (self.bus is None or self.store.resolve() != self.bus.resolve())


def in_use(path: Path) -> bool:
    """True while any process has the SQLite database ``path`` open in WAL mode (a live node, a CLI command)."""
    shm = Path(str(path) + "-shm")
    try:
        fd = os.open(shm, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, WAL_DMS_BYTE)
        except OSError:
            return True
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, WAL_DMS_BYTE)
        return False
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def copy_database(source: Path, dest: Path) -> None:
    """A consistent copy of a live SQLite database (online backup API, one step), checked, as one file."""
    if not source.is_file():
        raise BackupError(f"{source}: no such database file")
    partial = dest.with_name(dest.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        with _connect(source) as src, _connect(partial) as dst:
            src.backup(dst)  # pages=-1: the whole database inside one read transaction
            dst.execute("PRAGMA journal_mode=DELETE")  # a self-contained file; the node turns WAL on again
            check = dst.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise BackupError(f"the copy of {source} fails its integrity check: {check}")
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"cannot copy {source}: {exc}") from None
    os.replace(partial, dest)


def describe(path: Path) -> dict[str, Any]:
    """Size, checksum and what is inside a copied database (topics, offsets, dead letters)."""
    info: dict[str, Any] = {"file": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path)}
    with _connect(path) as conn:
        tables = _tables(conn)
        if "topics" in tables:
            info["high_water"] = {t: o for t, o in conn.execute("SELECT topic, next_offset FROM topics "
                                                                 "ORDER BY topic")}
        if "offsets" in tables:
            committed: dict[str, dict[str, int]] = {}
            for group, topic, offset in conn.execute('SELECT "group", topic, next_offset FROM offsets'):
                committed.setdefault(group, {})[topic] = offset
            info["committed"] = committed
        if "dead_letters" in tables:
            info["dead_letters"] = dict(conn.execute("SELECT status, COUNT(*) FROM dead_letters GROUP BY status"))
    return info


def pg_dump_hint(safe_url: str, dest: Path) -> str:
    return (f"The state store is PostgreSQL ({safe_url}): back it up with its own tool, e.g.\n"
            f"  pg_dump --format=custom --file {dest / 'store.pgdump'} '<the store URL>'\n"
            "and restore with\n"
            "  pg_restore --clean --if-exists --dbname '<the store URL>' store.pgdump\n"
            "(run pg_dump right after this backup: the store may then know a few records the bus copy does "
            "not -- they were accepted after the bus copy and are reported by `syncbus ledger`).")


def backup(targets: Targets, dest: Path, *, store_hint: str | None = None) -> dict[str, Any]:
    """Copy the node's local databases into the new folder ``dest``; returns the manifest written there."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest} exists and is not an empty folder: back up into a new folder")
    if targets.bus is None and targets.store is None:
        raise BackupError("nothing to back up here: the bus is Kafka and the store is not a SQLite file")
    dest.mkdir(parents=True, exist_ok=True)
    started = time.time()
    manifest: dict[str, Any] = {"format": FORMAT, "syncbus_version": __version__,
                                "created_at": datetime.fromtimestamp(started, UTC).isoformat(),
                                "bus_url": targets.bus_url}
    if targets.bus is not None:
        copy_database(targets.bus, dest / BUS_FILE)
        manifest["bus"] = describe(dest / BUS_FILE)
        manifest["bus"]["store_included"] = not targets.store_separate and targets.store is not None
    else:
        manifest["bus"] = {"kind": "kafka", "note": "Kafka keeps its own replicas; not copied"}
    if targets.store_separate:
        assert targets.store is not None
        copy_database(targets.store, dest / STORE_FILE)
        manifest["store"] = describe(dest / STORE_FILE)
    elif targets.store is None:
        manifest["store"] = {"kind": "external", "note": store_hint or "back up the store with its own tools"}
    manifest["seconds"] = round(time.time() - started, 3)
    tmp = dest / (MANIFEST + ".partial")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, dest / MANIFEST)
    return manifest


def read_manifest(src: Path) -> dict[str, Any]:
    path = src / MANIFEST
    if not path.is_file():
        raise BackupError(f"{src} is not a finished syncbus backup: it has no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackupError(f"{path}: cannot be read: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path}: not a backup format this syncbus reads (format {FORMAT})")
    return manifest


def _verify(src: Path, entry: dict[str, Any]) -> Path:
    path = src / str(entry.get("file", ""))
    if not path.is_file():
        raise BackupError(f"the backup lacks {path.name}")
    if _sha256(path) != entry.get("sha256"):
        raise BackupError(f"{path} does not match its checksum in the manifest: the backup is damaged")
    return path


def _set_aside(target: Path, stamp: str) -> Path | None:
    """Move ``target`` and its -wal/-shm out of the way, kept together so the moved database still opens."""
    if not target.exists():
        for suffix in SIDE_FILES:
            Path(str(target) + suffix).unlink(missing_ok=True)  # leftovers of a destroyed file: never apply them
        return None
    aside = target.with_name(f"{target.name}.before-restore-{stamp}")
    os.replace(target, aside)
    for suffix in SIDE_FILES:
        side = Path(str(target) + suffix)
        if side.exists():
            os.replace(side, Path(str(aside) + suffix))
    return aside


def restore(targets: Targets, src: Path, *, force: bool = False) -> dict[str, Any]:
    """Put the backup in ``src`` back in place of the node's files; returns what was done."""
    manifest = read_manifest(src)
    plan: list[tuple[Path, Path]] = []   # (file in the backup, target)
    bus_entry = manifest.get("bus") or {}
    if "file" in bus_entry:
        if targets.bus is None:
            raise BackupError("the backup holds an embedded bus, but this node's bus is not embedded (--bus)")
        plan.append((_verify(src, bus_entry), targets.bus))
        if bus_entry.get("store_included") and targets.store_separate:
            raise BackupError("the backup's store is inside its bus file, but this node has a separate store "
                              "(--store): restore with the settings the backup was made with")
    store_entry = manifest.get("store") or {}
    if "file" in store_entry:
        if targets.store is None or not targets.store_separate:
            raise BackupError("the backup holds a separate SQLite store; give its place with --store sqlite:///…")
        plan.append((_verify(src, store_entry), targets.store))
    if not plan:
        raise BackupError(f"{src}: the backup holds no database file to restore")
    for _, target in plan:
        if in_use(target) and not force:
            raise NodeRunning(f"{target} is open in another process (a running `syncbus run`?): stop it first, "
                              "or pass --force if you are sure nothing uses it")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    done: dict[str, Any] = {"restored": [], "set_aside": [], "created_at": manifest.get("created_at")}
    for backup_file, target in plan:
        target.parent.mkdir(parents=True, exist_ok=True)
        aside = _set_aside(target, stamp)
        if aside is not None:
            done["set_aside"].append(str(aside))
        partial = target.with_name(target.name + ".restoring")
        shutil.copyfile(backup_file, partial)
        os.replace(partial, target)
        done["restored"].append(str(target))
    done["high_water"] = bus_entry.get("high_water", {})
    return done
