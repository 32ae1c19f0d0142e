"""The file sink: drops delivered records into a folder that another system picks up (the HR drop folder).

Two ways to fill the folder, because file-exchange partners want one or the other:

* ``per_record``: one file per record, written to a hidden temp file in the
  same folder, fsynced, then renamed over the final name. A reader never sees
  a half-written file, and a replay of the same record overwrites the same file
  (with the default name), so at-least-once delivery stays harmless.
* ``append``: records are appended to one file per name (by default per route
  and day). CSV gets its header once, when the file is new; JSON becomes JSON
  Lines. Appends to one file are group-committed: whatever queued up while the
  previous write was on disk goes out in ONE write call and one fsync, under
  an exclusive ``flock`` so two syncbus processes cannot interleave. A failed
  write is truncated back, so the file never holds half a record.

Bodies are written as the codec encoded them (GBK stays GBK); only the CSV
header line is cut off when appending to a file that already has one.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import errno
import os
import secrets
import string
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from syncbus.errors import ConfigError, DeliveryError
from syncbus.sinks.base import BaseSink, Delivery, SinkConfig
from syncbus.units import format_duration

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: one process per drop folder
    fcntl = None  # type: ignore[assignment]

Format = Literal["csv", "json", "xml"]

TEMPLATE_FIELDS = ("route", "sink", "record_id", "key", "date", "time", "ext")
DEFAULT_FILENAMES = {"per_record": "{route}-{record_id}.{ext}", "append": "{route}-{date}.{ext}"}
_MAX_NAME_BYTES = 240  # leaves room below the usual 255-byte limit
_MAX_VALUE_CHARS = 80
_SAMPLE = {"route": "r", "sink": "s", "record_id": "1", "key": "k", "date": "2026-01-01",
           "time": "000000", "ext": "csv"}
# Errors that repeating will not fix; everything else (ENOSPC, EIO, ESTALE, EAGAIN...) is retried.
_PERMANENT_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR,
                               errno.ENAMETOOLONG, errno.ELOOP, errno.EINVAL, errno.EFBIG, errno.EEXIST})
_BOM = codecs.BOM_UTF8
_HEADER_READ = 1024 * 1024


class FileSinkConfig(SinkConfig):
    """``type: file`` — write each mapped record into a folder, as its own file or appended to one."""

    type: Literal["file"] = "file"
    path: str = Field(min_length=1, description="The folder to write into (created if missing).")
    mode: Literal["per_record", "append"] = Field(
        "per_record",
        description="per_record: one file per record, replaced atomically; append: add records to one "
                    "file per name (CSV header written once; JSON as JSON Lines; XML cannot be appended).")
    filename: str | None = Field(
        None,
        description="File name template with {route} {sink} {record_id} {key} {date} {time} {ext}. "
                    "Default: {route}-{record_id}.{ext} (per_record), {route}-{date}.{ext} (append). "
                    "{date} is YYYY-MM-DD and {time} HHMMSS, local time of delivery; {ext} comes from the "
                    "content type (csv, json, xml; jsonl when appending JSON).")
    workers: int = Field(4, ge=1, le=64, description="Threads doing the blocking file writes.")

    @field_validator("filename")
    @classmethod
    def _check_template(cls, value: str | None) -> str | None:
        if value is None:
            return None
        check_template(value)
        return value

    @model_validator(mode="after")
    def _default_filename(self) -> FileSinkConfig:
        if self.filename is None:
            self.filename = DEFAULT_FILENAMES[self.mode]
        return self

    def format_problem(self, fmt: str) -> str | None:
        """Why records of target format ``fmt`` cannot go to this sink, or None.

        For the route loader: lets ``format: xml`` with an appending file sink
        fail at load instead of dead-lettering every record.
        """
        if self.mode == "append" and fmt not in ("csv", "json"):
            return f"mode append needs csv or json, not {fmt} (use mode per_record for {fmt})"
        return None


def check_template(template: str) -> None:
    """Refuse templates that are paths, hidden names, or use unknown or computed fields."""
    if not template.strip():
        raise ValueError("filename must not be empty")
    if any(c in template for c in "/\\\0"):
        raise ValueError(f"filename {template!r} must be a file name, not a path (put folders in path)")
    if template.startswith("."):
        raise ValueError(f"filename {template!r} must not start with '.' (hidden names are temp files)")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"filename {template!r}: {exc}") from None
    for _literal, name, _spec, conversion in parsed:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS or conversion is not None:
            raise ValueError(f"filename {template!r}: unknown field {{{name}}} "
                             f"(known: {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)})")
    try:
        template.format_map(_SAMPLE)
    except (ValueError, KeyError, IndexError) as exc:
        raise ValueError(f"filename {template!r}: {exc}") from None


def media_type(content_type: str) -> tuple[str, dict[str, str]]:
    """("text/csv", {"charset": "gbk"}) from "text/csv; charset=GBK"."""
    mime, *params = content_type.split(";")
    out: dict[str, str] = {}
    for param in params:
        name, _, value = param.partition("=")
        out[name.strip().lower()] = value.strip().strip('"')
    return mime.strip().lower(), out


def format_of(content_type: str) -> Format | None:
    mime, _ = media_type(content_type)
    if mime in ("application/json", "text/json", "application/x-ndjson") or mime.endswith("+json"):
        return "json"
    if mime in ("application/xml", "text/xml") or mime.endswith("+xml"):
        return "xml"
    if mime in ("text/csv", "application/csv", "text/comma-separated-values"):
        return "csv"
    return None


def safe_part(value: str) -> str:
    """A record-supplied value made harmless in a file name (keys like "../../etc" or "a/b")."""
    cleaned = "".join(c if c.isalnum() or c in "-_.@+=" else "_" for c in value)[:_MAX_VALUE_CHARS]
    if cleaned.startswith("."):
        cleaned = "_" + cleaned[1:]
    return cleaned or "_"


@dataclass(slots=True)
class _Append:
    """One record's bytes for an appended file, prepared on the event loop."""

    kind: Format
    full: bytes  # written when the file is new or empty (CSV: header + rows)
    rows: bytes  # written when the file already has content
    header: bytes | None  # CSV header without BOM and line end, to compare with the file's
    newline: bytes


@dataclass(slots=True)
class _Queue:
    pending: list[tuple[_Append, asyncio.Future[None]]] = field(default_factory=list)
    flusher: asyncio.Task[None] | None = None


class FileSink(BaseSink):
    """Delivers into a folder; see :class:`FileSinkConfig`."""

    Config: ClassVar[type[FileSinkConfig]] = FileSinkConfig
    config: FileSinkConfig

    def __init__(self, config: FileSinkConfig | Mapping[str, Any], *,
                 clock: Callable[[], datetime] | None = None) -> None:
        super().__init__(config)
        config = self.config  # validated
        self.folder = os.path.abspath(config.path)
        self._clock = clock if clock is not None else datetime.now
        self._executor: ThreadPoolExecutor | None = None
        self._queues: dict[str, _Queue] = {}

    async def start(self) -> None:
        """Create the folder; a folder we may not create is a configuration error, reported now."""
        self._pool()
        try:
            await asyncio.to_thread(os.makedirs, self.folder, exist_ok=True)
        except OSError as exc:
            err = self._os_error(exc, self.folder)
            if not err.retryable:
                raise ConfigError(str(err)) from None

    async def close(self) -> None:
        """Finish queued appends, then stop the threads."""
        flushers = [q.flusher for q in self._queues.values() if q.flusher is not None]
        if flushers:
            await asyncio.gather(*flushers, return_exceptions=True)
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, True)

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.config.workers,
                                                thread_name_prefix=f"syncbus-file-{self.name}")
        return self._executor

    def filename(self, delivery: Delivery) -> str:
        """The file name this delivery goes to (record values sanitised, never a path)."""
        fmt = format_of(delivery.content_type)
        if fmt == "json" and self.config.mode == "append":
            ext = "jsonl"
        elif fmt is not None:
            ext = fmt
        else:
            ext = "txt" if media_type(delivery.content_type)[0].startswith("text/") else "bin"
        now = self._clock()
        values = {
            "route": safe_part(delivery.route), "sink": safe_part(delivery.sink),
            "record_id": safe_part(delivery.record_id),
            "key": safe_part(delivery.key) if delivery.key is not None else "_",
            "date": now.strftime("%Y-%m-%d"), "time": now.strftime("%H%M%S"), "ext": ext,
        }
        assert self.config.filename is not None
        name = self.config.filename.format_map(values)
        if len(name.encode()) > _MAX_NAME_BYTES:
            raise DeliveryError(f"{self.name}: file name {name[:60]!r}... is longer than {_MAX_NAME_BYTES} "
                                "bytes; shorten the filename template", retryable=False)
        return name

    async def send(self, delivery: Delivery) -> None:
        """One attempt: the record is on disk (fsynced) when this returns."""
        path = os.path.join(self.folder, self.filename(delivery))
        if self.config.mode == "per_record":
            await self._run(path, _write_atomic, self.folder, path, delivery.body)
            return
        item = self._prepare_append(delivery)
        if item is None:
            return
        future = self._enqueue(path, item)
        try:
            async with asyncio.timeout(self.config.timeout):
                await asyncio.shield(future)  # the batch carries other records: never cancel it
        except TimeoutError:
            raise DeliveryError(f"{self.name}: timeout after {format_duration(self.config.timeout)} "
                                f"appending to {path}", retryable=True) from None

    async def _run(self, path: str, fn: Callable[..., None], *args: Any) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.config.timeout):
                await loop.run_in_executor(self._pool(), fn, *args)
        except TimeoutError:
            raise DeliveryError(f"{self.name}: timeout after {format_duration(self.config.timeout)} "
                                f"writing {path}", retryable=True) from None
        except OSError as exc:
            raise self._os_error(exc, path) from exc

    def _os_error(self, exc: OSError, path: str) -> DeliveryError:
        code = exc.errno
        name = errno.errorcode.get(code, str(code)) if code is not None else "?"
        reason = exc.strerror or str(exc)
        return DeliveryError(f"{self.name}: cannot write {path}: {reason} [{name}]",
                             retryable=code not in _PERMANENT_ERRNOS)

    # ------------------------------------------------------------------ append

    def _prepare_append(self, delivery: Delivery) -> _Append | None:
        fmt = format_of(delivery.content_type)
        body = delivery.body
        if fmt == "json":
            # A raw CR or LF can only be whitespace in valid JSON (inside strings they are escaped),
            # so flattening them keeps the document and makes it one JSON Lines line.
            line = body.removeprefix(_BOM).replace(b"\r", b" ").replace(b"\n", b" ").strip()
            if not line:
                return None
            line += b"\n"
            return _Append("json", line, line, None, b"\n")
        if fmt != "csv":
            raise DeliveryError(
                f"{self.name}: mode append needs csv or json, not {delivery.content_type or 'no content type'} "
                f"(route {delivery.route}); use mode per_record for it", retryable=False)
        _, params = media_type(delivery.content_type)
        charset = params.get("charset", "utf-8")
        if not _ascii_compatible(charset):
            raise DeliveryError(f"{self.name}: cannot append CSV in charset {charset!r}: line ends are not "
                                "single bytes in it; use an ASCII-compatible charset (utf-8, gbk, ...)",
                                retryable=False)
        if not body:
            return None
        newline = b"\r\n" if b"\r\n" in body else b"\n"
        if not body.endswith(b"\n"):
            body += newline
        if params.get("header", "present").lower() == "absent":
            return _Append("csv", body, body, None, newline)
        end = _end_of_first_record(body)
        header = body[:end].removeprefix(_BOM).rstrip(b"\r\n")
        return _Append("csv", body, body[end:], header, newline)

    def _enqueue(self, path: str, item: _Append) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        # If the waiter timed out, nobody reads the outcome: mark it read so asyncio does not log it.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        queue = self._queues.setdefault(path, _Queue())
        queue.pending.append((item, future))
        if queue.flusher is None or queue.flusher.done():
            queue.flusher = loop.create_task(self._flush(path, queue), name=f"syncbus-file-append:{path}")
        return future

    async def _flush(self, path: str, queue: _Queue) -> None:
        """The only writer of ``path`` in this process: writes whatever is queued, batch after batch."""
        loop = asyncio.get_running_loop()
        try:
            while queue.pending:
                batch, queue.pending = queue.pending, []
                items = [item for item, _ in batch]
                try:
                    results = await loop.run_in_executor(
                        self._pool(), _append_batch, self.folder, path, items, self.name)
                except OSError as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(self._os_error(exc, path))
                except asyncio.CancelledError:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(DeliveryError(
                                f"{self.name}: append to {path} interrupted", retryable=True))
                    raise
                except Exception as exc:  # a bug: fail the batch, keep the sink alive
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(DeliveryError(
                                f"{self.name}: append to {path} failed: {type(exc).__name__}: {exc}",
                                retryable=False))
                else:
                    for (_, future), error in zip(batch, results, strict=True):
                        if future.done():
                            continue
                        if error is None:
                            future.set_result(None)
                        else:
                            future.set_exception(error)
        finally:
            if not queue.pending and self._queues.get(path) is queue:
                del self._queues[path]


def _ascii_compatible(charset: str) -> bool:
    try:
        return '\r\n",'.encode(codecs.lookup(charset).name) == b'\r\n",'
    except (LookupError, UnicodeError):
        return False


def _end_of_first_record(data: bytes) -> int:
    """Index just past the line end of the first CSV record (a newline inside quotes does not end it).

    Works on the bytes: in UTF-8 and the usual legacy charsets (GBK, Big5,
    Shift-JIS) neither '"' nor LF ever occurs inside a multi-byte character.
    """
    quoted = False
    pos = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            return len(data)
        quoted ^= data.count(b'"', pos, nl) % 2 == 1
        if not quoted:
            return nl + 1
        pos = nl + 1


def _append_batch(folder: str, path: str, items: list[_Append], sink: str) -> list[DeliveryError | None]:
    """Append a batch with one write and one fsync; per-record problems fail only that record.

    Raises OSError when the file cannot be written at all; the file is then
    truncated back to where it was, so no record is left half-written.
    """
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except FileNotFoundError:  # the folder was removed under us: recreate it once
        os.makedirs(folder, exist_ok=True)
        fd = os.open(path, flags, 0o666)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)  # another syncbus process may append to the same file
        size = os.fstat(fd).st_size
        results: list[DeliveryError | None] = [None] * len(items)
        chunks: list[bytes] = []
        empty = size == 0
        ends_line = empty or os.pread(fd, 1, size - 1) == b"\n"
        file_header: bytes | None = None
        for i, item in enumerate(items):
            if item.kind == "csv" and empty:
                chunk = item.full
                file_header = item.header
            else:
                chunk = item.rows
                if item.header is not None:
                    if file_header is None:
                        file_header = _read_header(fd)
                    if file_header != item.header:
                        results[i] = DeliveryError(
                            f"{sink}: the CSV header of {path} ({_show(file_header)}) differs from this "
                            f"record's ({_show(item.header)}); the columns changed: move the file away "
                            "or change the filename template", retryable=False)
                        continue
            if not chunk:
                continue
            if not ends_line:
                chunk = item.newline + chunk
            chunks.append(chunk)
            empty = False
            ends_line = chunk.endswith(b"\n")
        data = b"".join(chunks)
        if data:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        return results
    finally:
        os.close(fd)  # also releases the flock


def _read_header(fd: int) -> bytes:
    data = os.pread(fd, _HEADER_READ, 0)
    return data[:_end_of_first_record(data)].removeprefix(_BOM).rstrip(b"\r\n")


def _show(header: bytes | None) -> str:
    text = (header or b"").decode("utf-8", "replace")
    return text if len(text) <= 120 else text[:117] + "..."


# ---------------------------------------------------------------------- per record


def _write_atomic(folder: str, path: str, body: bytes) -> None:
    """Temp file in the same folder, fsync, rename over the target, fsync the folder."""
    tmp = os.path.join(folder, f".syncbus-{secrets.token_hex(8)}.tmp")  # hidden: pollers skip it
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmp, flags, 0o666)  # 0666 & umask, like any file: the reader is another user
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
        fd = os.open(tmp, flags, 0o666)
    try:
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def _fsync_dir(folder: str) -> None:
    """Make the rename durable; some filesystems cannot fsync a directory, which is fine."""
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
