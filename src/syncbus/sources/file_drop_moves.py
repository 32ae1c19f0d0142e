"""Where a dropped file goes when ``file_drop`` is done with it: ``processed/`` or ``failed/``.

The partner that drops files looks into these folders to learn what became
of an export, so the rules are strict:

* the file moves with its bytes unchanged (a rename inside the same folder
  tree, never a rewrite), so it can be dropped again as it is;
* nothing already there is ever replaced: a second ``employees.csv`` becomes
  ``employees-1.csv`` (and its companion file follows that name);
* the companion -- ``<name>.result.json`` (what was published, which rows were
  refused and why) or ``<name>.reason`` (why the file could not be read) --
  is written atomically *before* the move, so a file in ``processed/`` or
  ``failed/`` always has its companion beside it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from typing import Final

PROCESSED: Final = "processed"
FAILED: Final = "failed"
RESULT_SUFFIX: Final = ".result.json"
REASON_SUFFIX: Final = ".reason"

# link() is refused by filesystems without hard links (SMB shares): then rename after an existence check.
_NO_LINK: Final = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK,
                             errno.ENOSYS})


def _names(name: str) -> Iterator[str]:
    """``name``, then ``stem-1.ext``, ``stem-2.ext``, ... (``stem`` keeps every dot but the last)."""
    yield name
    stem, dot, ext = name.rpartition(".")
    if not stem:  # no extension (or a leading dot only)
        stem, dot, ext = name, "", ""
    for n in range(1, 1_000_000):
        yield f"{stem}-{n}{dot}{ext}"


def move_done(folder: str, name: str, subfolder: str, companion_suffix: str, companion: bytes) -> str:
    """Move ``folder/name`` into ``folder/subfolder`` with its companion file; return the name it got there.

    Raises ``FileNotFoundError`` when the file is gone (someone took it away):
    the caller treats that as done.
    """
    target_dir = os.path.join(folder, subfolder)
    os.makedirs(target_dir, exist_ok=True)
    source = os.path.join(folder, name)
    if not os.path.lexists(source):
        raise FileNotFoundError(errno.ENOENT, "file vanished before it could be moved", source)
    for candidate in _names(name):
        target = os.path.join(target_dir, candidate)
        side = target + companion_suffix
        if os.path.lexists(target) or os.path.lexists(side):
            continue
        if not _write_new(target_dir, side, companion):
            continue  # another process took the companion's name meanwhile
        try:
            moved = _move_no_replace(source, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(side)
            raise
        if moved:
            _fsync_dir(target_dir)
            _fsync_dir(folder)
            return candidate
        with contextlib.suppress(OSError):
            os.unlink(side)
    raise FileExistsError(errno.EEXIST, "no free name left", target_dir)


def _write_new(folder: str, path: str, data: bytes) -> bool:
    """Write ``path`` atomically (hidden temp file, fsync, link); False if the name is taken."""
    tmp = os.path.join(folder, f".syncbus-{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        return _move_no_replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _move_no_replace(source: str, target: str) -> bool:
    """Rename ``source`` to ``target`` unless ``target`` exists (False then); atomic where links exist."""
    try:
        os.link(source, target)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
        if os.path.lexists(target):
            return False
        os.rename(source, target)
        return True
    os.unlink(source)
    return True


def _fsync_dir(folder: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
