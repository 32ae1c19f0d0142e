"""The file sink's disk work (blocking; runs on the sink's threads): in-progress files, publishing, repair.

The contract with the partner polling the folder: a file under its final name
is complete. Records are appended to a hidden ``.<final name>.part`` and
fsynced before their send returns; publishing writes the closing bytes (XML's
``</records>``), fsyncs, and gives the file its final name in one atomic step
that never replaces another file (``link`` + ``unlink``; ``rename`` after an
existence check where the filesystem has no hard links, e.g. SMB shares).

A part file is created with O_EXCL and held under an exclusive ``flock`` for
as long as it is written, so another syncbus process sharing the folder can
neither claim the same name nor "repair" a file that is still being written.
After a crash the lock is gone: :func:`recover` cuts the file back to its last
whole record (only an unacknowledged record can be torn) and publishes it —
its records were acknowledged, so they must reach the partner.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from syncbus.sinks.file_naming import final_of_part, part_name
from syncbus.sinks.file_records import BOM, complete_length, file_tail

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: one process per drop folder
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

_OPEN_FLAGS = os.O_RDWR | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
# link() is refused by filesystems without hard links; then fall back to rename.
_NO_LINK = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS})


@dataclass(slots=True)
class PartFile:
    """An in-progress file: open, locked, appended to, published once."""

    folder: str
    final: str
    fd: int
    fmt: str
    xml_root: str
    opened: datetime
    period: int | None
    size: int = 0
    records: int = 0
    header: bytes | None = None
    tail_written: bool = False

    @property
    def path(self) -> str:
        return os.path.join(self.folder, part_name(self.final))

    def append(self, data: bytes) -> None:
        """Write and fsync; on failure cut the file back, so it never holds half a record."""
        try:
            _write_all(self.fd, data)
            os.fsync(self.fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.size)
            raise
        self.size += len(data)

    def ensure_present(self) -> None:
        """Put the file back at its path if it was deleted or moved away while in progress.

        Its records were acknowledged and the descriptor still holds them, so
        they are copied into a new file of the same name rather than lost.
        """
        if _same_file(self.fd, self.path):
            return
        data = os.pread(self.fd, self.size, 0)
        os.makedirs(self.folder, exist_ok=True)
        fd = os.open(self.path, _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            if not _lock(fd):
                raise BlockingIOError(errno.EAGAIN, "another process locked the re-created file", self.path)
            _write_all(fd, data)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        log.warning("%s vanished while in progress; re-created it from the open file", self.path)
        os.close(self.fd)
        self.fd = fd

    def publish(self, names: Iterable[str]) -> str:
        """Close the document, give it the first free final name of ``names``, release it; return that name."""
        self.ensure_present()
        if not self.tail_written:
            tail = file_tail(self.fmt, self.xml_root)
            if tail:
                self.append(tail)
            self.tail_written = True
        final = publish_path(self.folder, self.path, names)
        self.final = final
        os.close(self.fd)  # also releases the flock
        self.fd = -1
        return final

    def discard(self) -> None:
        """Drop an in-progress file that never got a record."""
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def create_part(folder: str, names: Iterator[tuple[str, int]], fmt: str, xml_root: str, opened: datetime,
                period: int | None) -> tuple[PartFile, int]:
    """Claim the first name of ``names`` that is free both as a final and as an in-progress file.

    Returns the part file and the seq to start from next time.
    """
    for final, next_seq in names:
        if os.path.lexists(os.path.join(folder, final)):
            continue
        path = os.path.join(folder, part_name(final))
        try:
            fd = os.open(path, _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, 0o666)  # 0666 & umask: the reader is another user
        except FileExistsError:
            continue
        except FileNotFoundError:  # the folder was removed under us: recreate it once
            os.makedirs(folder, exist_ok=True)
            fd = os.open(path, _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, 0o666)
        if not _lock(fd) or not _same_file(fd, path):
            os.close(fd)  # another process got to it between create and lock: take the next name
            continue
        return PartFile(folder, final, fd, fmt, xml_root, opened, period), next_seq
    raise FileExistsError(errno.EEXIST, "no free file name left for this template", folder)


def publish_path(folder: str, part: str, names: Iterable[str]) -> str:
    """Give ``part`` the first of ``names`` that does not exist yet, atomically and without replacing anything."""
    for final in names:
        target = os.path.join(folder, final)
        try:
            os.link(part, target)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
            if os.path.lexists(target):
                continue
            os.rename(part, target)
        else:
            os.unlink(part)
        fsync_dir(folder)
        return final
    raise FileExistsError(errno.EEXIST, "no free file name left to publish", part)


def recover(folder: str, pattern: re.Pattern[str], fmt: str | None, xml_root: str,
            names_for: Callable[[str], Iterable[str]]) -> list[str]:
    """Publish in-progress files left by a process that died; return the names they got.

    ``names_for(final)`` yields the names to try for a part that was meant to be
    ``final``. ``fmt`` None: each file's format is told from its first bytes.
    """
    published: list[str] = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return published
    for entry in entries:
        final = final_of_part(entry.name)
        if final is None or not pattern.fullmatch(final) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            name = _recover_one(folder, entry.path, final, fmt, xml_root, names_for)
        except OSError as exc:
            log.warning("cannot recover %s: %s", entry.path, exc)
            continue
        if name is not None:
            published.append(name)
    return published


def _recover_one(folder: str, path: str, final: str, fmt: str | None, xml_root: str,
                 names_for: Callable[[str], Iterable[str]]) -> str | None:
    fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    try:
        if not _lock(fd) or not _same_file(fd, path):
            return None  # still being written by a live process
        if os.fstat(fd).st_nlink > 1:  # died between link and unlink: it is already published
            os.unlink(path)
            return None
        data = os.pread(fd, os.fstat(fd).st_size, 0)
        fmt = fmt or sniff(data)
        tail = file_tail(fmt, xml_root)
        if tail and data.endswith(tail):
            keep = len(data)
        else:
            keep = complete_length(data, fmt)
        body = data[:keep]
        if not body or (fmt == "xml" and body.rstrip().endswith(f"<{xml_root}>".encode("ascii"))):
            os.unlink(path)  # no whole record in it
            return None
        if keep < len(data):
            os.ftruncate(fd, keep)
        if tail and not body.endswith(tail):
            os.lseek(fd, 0, os.SEEK_END)
            _write_all(fd, tail)
        os.fsync(fd)
        return publish_path(folder, path, names_for(final))
    finally:
        os.close(fd)


def sniff(data: bytes) -> str:
    """The format of a collected file, from how it starts (for a sink that takes whatever routes send)."""
    start = data.removeprefix(BOM).lstrip()
    if start.startswith(b"<"):
        return "xml"
    if start.startswith((b"{", b"[")):
        return "jsonl"
    return "csv"


# ---------------------------------------------------------------------- one file per record


def write_atomic(folder: str, path: str, body: bytes) -> None:
    """Temp file in the same folder, fsync, rename over the target, fsync the folder."""
    tmp = os.path.join(folder, f".syncbus-{secrets.token_hex(8)}.tmp")  # hidden: pollers skip it
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmp, flags, 0o666)
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
        fd = os.open(tmp, flags, 0o666)
    try:
        try:
            _write_all(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(folder)


def fsync_dir(folder: str) -> None:
    """Make a rename durable; some filesystems cannot fsync a directory, which is fine."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _lock(fd: int) -> bool:
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _same_file(fd: int, path: str) -> bool:
    """The locked descriptor is still the file at ``path`` (not one recovered and replaced meanwhile)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
