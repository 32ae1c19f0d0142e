"""Backup and restore of a node's files: the embedded bus and a SQLite state store.

``backup`` runs beside a live node: SQLite's online backup API copies each database in one
read transaction, so the copy is a consistent snapshot while ``syncbus run`` keeps writing
(WAL readers never block writers). With a separate store file the bus is copied FIRST and
the store second: the store then knows at least every record of the copied bus, and a
record that moves on after the bus copy is simply redelivered after a restore (targets
drop the duplicate by idempotency key) -- nothing accepted before the backup is lost. The
copy is checked (``PRAGMA quick_check``) and described by ``manifest.json`` (time, sizes,
SHA-256, high-water mark per topic, committed offsets per route), written last: a folder
without a manifest is not a finished backup. A backup that fails (a full destination)
removes what it wrote, so the same command can simply be run again.

PostgreSQL stores and Kafka buses have their own, better tools (``pg_dump``, replication);
for them the manifest says so and the command prints how (cli/security.py).

``restore`` (``restore.py``) brings a backup back, all or nothing.
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
OURS = (BUS_FILE, STORE_FILE, MANIFEST)   # every name a backup writes starts with one of these
Moves = list[tuple[Path, Path]]           # renames done so far, (from, to): undone in reverse on failure


class BackupError(SyncbusError):
    """A backup or restore cannot be made as asked; nothing was changed (restore) or left behind (backup)."""


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


def _missing_dirs(path: Path) -> list[Path]:
    """The folders ``mkdir(parents=True)`` would create for ``path``, outermost first (to remove on failure)."""
    missing: list[Path] = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing[::-1]


def _remove_dirs(created: list[Path]) -> None:
    for folder in reversed(created):
        with contextlib.suppress(OSError):  # not empty: something else lives there now
            folder.rmdir()


def _check_space(needs: list[tuple[Path, int]], what: str, outcome: str) -> None:
    """Refuse before writing anything when a filesystem has less room than the copies about to go there.

    A full disk found halfway costs a cleanup (before: half a restore); asking first names
    the place and the sizes. Copies headed for the same filesystem are added up.
    """
    per_device: dict[int, tuple[Path, Path, int]] = {}
    for place, size in needs:
        existing = place
        while not existing.exists():  # a folder still to be made: its filesystem is its parent's
            existing = existing.parent
        first, _, total = per_device.setdefault(existing.stat().st_dev, (place, existing, 0))
        per_device[existing.stat().st_dev] = (first, existing, total + size)
    for place, existing, total in per_device.values():
        free = shutil.disk_usage(existing).free
        if total > free:
            raise BackupError(f"not enough free space in {place}: {what} needs {total / 2**20:.1f} MB, only "
                              f"{free / 2**20:.1f} MB free; {outcome}")


# -- backup --------------------------------------------------------------------------------------


def _db_bytes(path: Path) -> int:
    """How big a copy of the database will be (its pages, those still in the WAL too); 0 if unreadable."""
    try:
        with _connect(path) as conn:
            return int(conn.execute("SELECT page_count * page_size FROM pragma_page_count, pragma_page_size")
                       .fetchone()[0])
    except sqlite3.Error:
        return 0  # copy_database says what is wrong with it


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
        for leftover in (partial, Path(f"{partial}-journal")):
            leftover.unlink(missing_ok=True)
        if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_FULL:
            raise BackupError(f"the backup destination {dest.parent} is full: {dest.name} could not be written "
                              "there") from None
        raise BackupError(f"cannot copy {source} to {dest.parent}: {exc}") from None
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


def backup(targets: Targets, dest: Path, *, store_hint: str | None = None) -> dict[str, Any]:
    """Copy the node's local databases into the new folder ``dest``; returns the manifest written there.

    On failure everything this attempt wrote is removed -- the folder too if it made it --
    so a rerun is not refused for a non-empty folder and no half backup is mistaken for one.
    """
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest} exists and is not an empty folder: back up into a new folder")
    if targets.bus is None and targets.store is None:
        raise BackupError("nothing for syncbus to copy here: the bus is Kafka (kept by Kafka's own replication) "
                          "and the store is not a SQLite file (back it up with its own tools, e.g. pg_dump); no "
                          "backup folder was made")
    sources = [p for p in (targets.bus, targets.store if targets.store_separate else None) if p is not None]
    if missing := [source for source in sources if not source.is_file()]:
        raise BackupError(f"{missing[0]}: no such database file")
    _check_space([(dest, sum(_db_bytes(s) for s in sources))], "the backup", "nothing was written")
    created = _missing_dirs(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        return _write_backup(targets, dest, store_hint)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            for entry in dest.iterdir():
                if entry.name.startswith(OURS):
                    entry.unlink(missing_ok=True)
        _remove_dirs(created)
        removed = "the folder was removed" if created else "what it had written there was removed"
        if isinstance(exc, BackupError):
            raise BackupError(f"{exc}; {removed}") from None
        if isinstance(exc, OSError | sqlite3.Error):
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise BackupError(f"cannot write the backup to {dest}: {reason}; {removed}") from None
        raise


def _write_backup(targets: Targets, dest: Path, store_hint: str | None) -> dict[str, Any]:
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


# -- restore -------------------------------------------------------------------------------------


def read_manifest(src: Path) -> dict[str, Any]:
    path = src / MANIFEST
    if not src.is_dir():
        raise BackupError(f"{src}: no such folder (a backup is the folder `syncbus backup` wrote)")
    if not path.is_file():
        raise BackupError(f"{src} is not a finished syncbus backup: it has no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackupError(f"{path}: cannot be read: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path}: not a backup format this syncbus reads (format {FORMAT})")
    return manifest
