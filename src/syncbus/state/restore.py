"""``syncbus restore``: a backup (``backup.py``) brought back over a node's files, all or nothing.

It refuses while a node has the files open -- every SQLite connection in WAL mode holds a
shared lock on the "DMS" byte of the ``-shm`` file, which a probe can test without touching
the database (``backup.in_use``). Every file is first copied next to its target
(``<file>.restoring``); only when all copies are complete are the current files moved aside
(under names never used before: they are never deleted nor overwritten) and the copies
renamed into place. Any failure removes the copies and undoes the renames (only a crash
between two renames can leave the ``.before-restore-`` and ``.restoring`` files to sort out).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import backup as _backup
from .backup import SIDE_FILES, BackupError, Moves, NodeRunning, Targets, in_use, read_manifest

__all__ = ["restore"]

def _verify(src: Path, entry: dict[str, Any]) -> Path:
    path = src / str(entry.get("file", ""))
    if not path.is_file():
        raise BackupError(f"the backup lacks {path.name}")
    if _backup._sha256(path) != entry.get("sha256"):
        raise BackupError(f"{path} does not match its checksum in the manifest: the backup is damaged")
    return path


def _stamp() -> str:
    """The time in aside names, to the microsecond (uniqueness is ``_aside_name``'s job, not the clock's)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def _aside_name(target: Path, stamp: str) -> Path:
    """``<file>.before-restore-<stamp>[-n]``: the first name that is free together with its -wal/-shm names."""
    n = 1
    while True:
        aside = target.with_name(f"{target.name}.before-restore-{stamp}" + (f"-{n}" if n > 1 else ""))
        if not any(os.path.lexists(f"{aside}{suffix}") for suffix in ("", *SIDE_FILES)):
            return aside
        n += 1


def _move(src: Path, dst: Path, moves: Moves) -> None:
    """Rename ``src`` to ``dst`` but never over an existing file (os.replace would overwrite it)."""
    try:
        os.link(src, dst, follow_symlinks=False)  # atomic, and refused if dst exists
    except FileExistsError:
        raise
    except OSError:  # a filesystem without hard links: look, then rename
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst)) from None
        os.replace(src, dst)
    else:
        os.unlink(src)
    moves.append((src, dst))


def _set_aside(target: Path, stamp: str, moves: Moves) -> list[str]:
    """Move ``target`` and its -wal/-shm out of the way, kept together so the moved database still opens.

    Side files without their database (leftovers of a destroyed file) are moved aside too:
    applied to the restored file they would corrupt it.
    """
    aside, had_file = _aside_name(target, stamp), os.path.lexists(target)
    moved = [str(aside)] if had_file else []
    if had_file:
        _move(target, aside, moves)
    for suffix in SIDE_FILES:
        if os.path.lexists(f"{target}{suffix}"):
            _move(Path(f"{target}{suffix}"), Path(f"{aside}{suffix}"), moves)
            moved += [] if had_file else [f"{aside}{suffix}"]
    return moved


def _copy_synced(src: Path, dst: Path) -> None:
    with src.open("rb") as reader, dst.open("wb") as writer:
        shutil.copyfileobj(reader, writer, 1 << 20)
        writer.flush()
        os.fsync(writer.fileno())


def _sync_dir(folder: Path) -> None:
    """Make the renames durable: a crash right after restore must not bring the old files back."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # not every filesystem syncs folders
            os.fsync(fd)
    finally:
        os.close(fd)


def _undo(moves: Moves) -> list[str]:
    """Put every renamed file back; returns what could not be (named in the error)."""
    stuck: list[str] = []
    for src, dst in reversed(moves):
        try:
            os.replace(dst, src)
        except OSError:
            stuck.append(f"{src} is at {dst}")
    return stuck


def _plan(targets: Targets, src: Path, manifest: dict[str, Any]) -> list[tuple[Path, Path]]:
    """(file in the backup, target) pairs, checksums verified; refuses a backup that does not fit the node."""
    plan: list[tuple[Path, Path]] = []
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
    return plan


def restore(targets: Targets, src: Path, *, force: bool = False) -> dict[str, Any]:
    """Put the backup in ``src`` back in place of the node's files, all or nothing; returns what was done."""
    manifest = read_manifest(src)
    plan = _plan(targets, src, manifest)
    for _, target in plan:
        if in_use(target) and not force:
            raise NodeRunning(f"{target} is open in another process (a running `syncbus run`?): stop it first, "
                              "or pass --force if you are sure nothing uses it")
    _backup._check_space([(target.parent, copy.stat().st_size) for copy, target in plan], "the restore",
                 "nothing was changed")
    created: list[Path] = []
    for _, target in plan:
        created += _backup._missing_dirs(target.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
    staged: list[Path] = []

    def discard() -> None:
        for partial in staged:
            partial.unlink(missing_ok=True)
        _backup._remove_dirs(created)

    try:  # 1. every copy next to its target; the node's files are not touched yet
        for copy, target in plan:
            staged.append(target.with_name(target.name + ".restoring"))
            _copy_synced(copy, staged[-1])
    except BaseException as exc:
        discard()
        if isinstance(exc, OSError):
            raise BackupError(f"cannot restore: copying {copy} to {staged[-1]} failed: {exc.strerror or exc}; "
                              "nothing was changed") from None
        raise
    done: dict[str, Any] = {"restored": [], "set_aside": [], "created_at": manifest.get("created_at")}
    moves: Moves = []
    stamp = _stamp()
    try:  # 2. only renames: the current files aside, the copies in
        for (_, target), partial in zip(plan, staged, strict=True):
            done["set_aside"] += _set_aside(target, stamp, moves)
            _move(partial, target, moves)
            done["restored"].append(str(target))
        for folder in {target.parent for _, target in plan}:
            _sync_dir(folder)
    except BaseException as exc:
        stuck = _undo(moves)
        discard()
        if stuck or isinstance(exc, OSError):
            after = f"could not move back: {'; '.join(stuck)}" if stuck else "the node's files were put back: " \
                "nothing was changed"
            raise BackupError(f"cannot restore: moving the copies into place failed ({exc}); {after}") from None
        raise
    done["high_water"] = (manifest.get("bus") or {}).get("high_water", {})
    return done
