"""The file sink: drops delivered records into a folder that another system picks up (the HR drop folder).

Two ways to fill the folder, because file-exchange partners want one or the other:

* ``per_record``: one file per record, written to a hidden temp file in the
  same folder, fsynced, then renamed over the final name. A replay of the same
  record overwrites the same file (with the default name), so at-least-once
  delivery stays harmless.
* ``append``: records are collected into files — CSV with one header, JSON
  Lines, or XML inside one root element. A file is written as a hidden
  ``.<name>.part``; each record is fsynced there before its send returns, and
  the file gets its final name only when it is rotated (``rotate.every``, on
  the clock; ``rotate.max_bytes``; a changed CSV header) or the sink closes.
  Appends to one file are group-committed: whatever queued up while the
  previous write was on disk goes out in ONE write and one fsync.

Either way a reader listing the folder never sees a partial file under a final
name. Names come from the ``filename`` template (:mod:`syncbus.sinks.file_naming`),
records are re-encoded for the file by :mod:`syncbus.sinks.file_records`, and
the disk work is :mod:`syncbus.sinks.file_writer`.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from syncbus.errors import ConfigError, DeliveryError
from syncbus.sinks.base import BaseSink, Delivery
from syncbus.sinks.file_config import FORMAT_OF_MEDIA, FileSinkConfig, RotateSpec
from syncbus.sinks.file_naming import candidates, check_length, pattern, record_values, series
from syncbus.sinks.file_records import Format, Prepared, file_head, format_of, media_type, prepare, whole_document
from syncbus.sinks.file_writer import PartFile, create_part, recover, write_atomic
from syncbus.units import format_duration

__all__ = ["FileSink", "FileSinkConfig", "RotateSpec"]

log = logging.getLogger(__name__)

# Errors that repeating will not fix; everything else (ENOSPC, EIO, ESTALE, EAGAIN...) is retried.
_PERMANENT_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR,
                               errno.ENAMETOOLONG, errno.ELOOP, errno.EINVAL, errno.EFBIG, errno.EEXIST})
_PUBLISH_RETRY = 5.0  # seconds between tries to publish a file whose rename failed


@dataclass(slots=True)
class _Series:
    """One stream of rotated files: the names that differ only in date, time and seq."""

    values: dict[str, str]
    fmt: Format
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: list[tuple[Prepared, asyncio.Future[None]]] = field(default_factory=list)
    flusher: asyncio.Task[None] | None = None
    part: PartFile | None = None
    next_seq: int = 1


class FileSink(BaseSink):
    """Delivers into a folder; see :class:`FileSinkConfig`."""

    Config: ClassVar[type[FileSinkConfig]] = FileSinkConfig
    config: FileSinkConfig
    examples: ClassVar[list[dict[str, Any]]] = [
        {"name": "hr-drop", "type": "file", "path_env": "HR_DROP_DIR", "mode": "append", "format": "csv",
         "encoding": "gb18030", "filename": "employees-{date:%Y%m%d-%H%M%S}-{seq}.csv",
         "rotate": {"max_bytes": "10MiB", "every": "1h"}, "retry": {"attempts": 4, "initial": "1s", "max": "60s"}},
        {"name": "erp-order-files", "type": "file", "path": "/data/erp/inbox", "mode": "per_record",
         "filename": "{route}-{key}.{ext}"},
    ]

    def __init__(self, config: FileSinkConfig | Mapping[str, Any], *,
                 clock: Callable[[], datetime] | None = None) -> None:
        super().__init__(config)
        config = self.config  # validated
        self.folder = os.path.abspath(config.path)
        self._clock = clock if clock is not None else datetime.now
        self._executor: ThreadPoolExecutor | None = None
        self._series: dict[tuple[str, str, str], _Series] = {}
        self._unpublished: list[tuple[_Series, PartFile]] = []
        self._timer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        assert config.filename is not None
        self._template = config.filename
        self._pattern = pattern(config.filename)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Create the folder and publish files a crashed run left in progress.

        A folder we may not create is a configuration error, reported now.
        """
        try:
            await asyncio.to_thread(os.makedirs, self.folder, exist_ok=True)
        except OSError as exc:
            err = self._os_error(exc, self.folder)
            if not err.retryable:
                raise ConfigError(str(err)) from None
            return
        if self.config.mode == "append":
            await self._recover()
            self._start_timer()

    async def close(self) -> None:
        """Finish queued appends, publish every file in progress, then stop the threads."""
        flushers = [s.flusher for s in self._series.values() if s.flusher is not None]
        if flushers:
            await asyncio.gather(*flushers, return_exceptions=True)
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            await asyncio.gather(timer, return_exceptions=True)
        await self.rotate_due(force=True)
        for _, part in self._unpublished:  # still in progress: the next start publishes it (see recover)
            log.error("sink %s: %s could not be published; it stays in progress until the next start",
                      self.name, part.path)
            part.close()
        self._unpublished.clear()
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, True)

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.config.workers,
                                                thread_name_prefix=f"syncbus-file-{self.name}")
        return self._executor

    async def _run(self, path: str, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.config.timeout):
                return await loop.run_in_executor(self._pool(), fn, *args)
        except TimeoutError:
            raise DeliveryError(f"{self.name}: timeout after {format_duration(self.config.timeout)} "
                                f"writing {path}", retryable=True) from None
        except OSError as exc:
            raise self._os_error(exc, path) from exc

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Disk work on a series, without a time limit: abandoning it would let two threads write one file.

        The send waiting for it has its own timeout.
        """
        return await asyncio.get_running_loop().run_in_executor(self._pool(), fn, *args)

    def _os_error(self, exc: OSError, path: str) -> DeliveryError:
        code = exc.errno
        name = errno.errorcode.get(code, str(code)) if code is not None else "?"
        reason = exc.strerror or str(exc)
        return DeliveryError(f"{self.name}: cannot write {path}: {reason} [{name}]",
                             retryable=code not in _PERMANENT_ERRNOS)

    # ------------------------------------------------------------------ delivery

    def _format(self, delivery: Delivery) -> Format | None:
        """csv / jsonl / xml for the delivery, or None for other content (per_record mode only)."""
        media = format_of(delivery.content_type)
        fmt = FORMAT_OF_MEDIA.get(media) if media is not None else None
        wanted = self.config.format
        if fmt is None and (wanted is not None or self.config.mode == "append"):
            raise DeliveryError(
                f"{self.name}: mode {self.config.mode} needs csv, json or xml, not "
                f"{delivery.content_type or 'no content type'} (route {delivery.route})", retryable=False)
        if wanted is not None and fmt != wanted:
            raise DeliveryError(f"{self.name}: the sink writes {wanted}, the route sends "
                                f"{delivery.content_type} (route {delivery.route})", retryable=False)
        return fmt

    def filename(self, delivery: Delivery) -> str:
        """The per_record file name of this delivery (record values sanitised, never a path)."""
        fmt = self._format(delivery)
        ext: str
        if fmt is not None:
            ext = "json" if fmt == "jsonl" else fmt
        else:
            ext = "txt" if media_type(delivery.content_type)[0].startswith("text/") else "bin"
        values = record_values(delivery.route, delivery.sink, delivery.record_id, delivery.key, ext)
        name = next(candidates(self._template, values, self._clock(), 1))[0]
        problem = check_length(name, self.name)
        if problem:
            raise DeliveryError(problem, retryable=False)
        return name

    async def send(self, delivery: Delivery) -> None:
        """One attempt: the record is on disk (fsynced) when this returns."""
        if self.config.mode == "per_record":
            path = os.path.join(self.folder, self.filename(delivery))
            body = whole_document(self.name, delivery.body, delivery.content_type, delivery.payload,
                                  format_of(delivery.content_type), self.config.encoding)
            await self._run(path, write_atomic, self.folder, path, body)
            return
        fmt = self._format(delivery)
        assert fmt is not None
        item = prepare(self.name, delivery.body, delivery.content_type, delivery.payload, fmt, self.config.encoding)
        if item is None:
            return
        values = record_values(delivery.route, delivery.sink, delivery.record_id, delivery.key, fmt)
        key = (series(self._template, values), fmt, item.encoding)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = _Series(values, fmt)
        future = self._enqueue(found, item)
        self._start_timer()
        try:
            async with asyncio.timeout(self.config.timeout):
                await asyncio.shield(future)  # the batch carries other records: never cancel it
        except TimeoutError:
            raise DeliveryError(f"{self.name}: timeout after {format_duration(self.config.timeout)} "
                                f"appending to a file in {self.folder}", retryable=True) from None

    def _enqueue(self, target: _Series, item: Prepared) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        # If the waiter timed out, nobody reads the outcome: mark it read so asyncio does not log it.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        target.pending.append((item, future))
        if target.flusher is None or target.flusher.done():
            target.flusher = loop.create_task(self._flush(target), name=f"syncbus-file-append:{self.name}")
        return future

    async def _flush(self, target: _Series) -> None:
        """The only writer of the series in this process: writes whatever is queued, batch after batch."""
        while target.pending:
            batch, target.pending = target.pending, []
            items = [item for item, _ in batch]
            try:
                async with target.lock:
                    results = await self._blocking(self._write_batch, target, items, self._clock())
            except asyncio.CancelledError:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(DeliveryError(f"{self.name}: append interrupted", retryable=True))
                raise
            except Exception as exc:  # a bug: fail the batch, keep the sink alive
                results = [DeliveryError(f"{self.name}: append failed: {type(exc).__name__}: {exc}",
                                         retryable=False)] * len(batch)
            for (_, future), error in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(None) if error is None else future.set_exception(error)
        self._wake.set()  # a file may have been opened: the timer recomputes its deadline

    # ------------------------------------------------------------------ the blocking part

    def _write_batch(self, target: _Series, items: list[Prepared], now: datetime) -> list[DeliveryError | None]:
        """Append a batch (rotating where due) with one write and fsync per file; per record: its outcome."""
        results: list[DeliveryError | None] = [None] * len(items)
        chunks: list[bytes] = []
        waiting: list[int] = []  # items in `chunks`, not yet on disk

        def write_out() -> DeliveryError | None:
            part = target.part
            if part is None or not chunks:
                return None
            try:
                part.append(b"".join(chunks))
            except OSError as exc:
                if part.size == 0:  # not even its head made it: forget the file
                    part.discard()
                    target.part = None
                return self._os_error(exc, part.path)
            part.records += len(waiting)
            chunks.clear()
            waiting.clear()
            return None

        if target.part is not None:
            try:
                target.part.ensure_present()
            except OSError as exc:
                return self._fail_from(results, waiting, 0, self._os_error(exc, target.part.path))
        for index, item in enumerate(items):
            part = target.part
            if part is not None and self._must_rotate(part, item, now, chunks, len(waiting)):
                error = write_out()
                if error is not None:
                    return self._fail_from(results, waiting, index, error)
                self._publish(target, part)
            if target.part is None:
                try:
                    target.part, target.next_seq = create_part(
                        self.folder, self._new_names(target, now), target.fmt, self.config.xml_root, now,
                        self._period(now))
                except OSError as exc:
                    return self._fail_from(results, waiting, index, self._os_error(exc, self.folder))
                target.part.header = item.header
                chunks.append(file_head(target.fmt, item.encoding, item.header, self.config.xml_root))
            chunks.append(item.data)
            waiting.append(index)
        error = write_out()
        if error is not None:
            return self._fail_from(results, waiting, len(items), error)
        return results

    @staticmethod
    def _fail_from(results: list[DeliveryError | None], waiting: list[int], index: int,
                   error: DeliveryError) -> list[DeliveryError | None]:
        """``error`` for the records not on disk: those waiting in the buffer and all from ``index`` on."""
        for i in [*waiting, *range(index, len(results))]:
            results[i] = error
        return results

    def _must_rotate(self, part: PartFile, item: Prepared, now: datetime, chunks: list[bytes], queued: int) -> bool:
        spec = self.config.rotate
        if spec.every is not None and self._period(now) != part.period:
            return True
        if item.header is not None and part.header is not None and \
                item.header.rstrip(b"\r\n") != part.header.rstrip(b"\r\n"):
            return True  # the columns changed (a new mapping version): a new file with the new header
        if spec.max_bytes is not None and part.records + queued > 0:
            size = part.size + sum(len(c) for c in chunks) + len(item.data)
            return size > spec.max_bytes
        return False

    def _period(self, now: datetime) -> int | None:
        """Which ``every``-long slice of the local clock ``now`` is in (1h: the hour; 1d: the day)."""
        every = self.config.rotate.every
        if every is None:
            return None
        local = (now.replace(tzinfo=None) - datetime(1970, 1, 1)).total_seconds()
        return int(local // every)

    def _new_names(self, target: _Series, when: datetime) -> Iterator[tuple[str, int]]:
        for name, next_seq in candidates(self._template, target.values, when, target.next_seq):
            problem = check_length(name, self.name)
            if problem:
                raise OSError(errno.ENAMETOOLONG, problem)
            yield name, next_seq

    def _publish(self, target: _Series, part: PartFile) -> None:
        """Give a finished file its final name (thread side); a failure is retried by the timer."""
        if target.part is part:
            target.part = None
        names = itertools.chain([part.final], (n for n, _ in candidates(self._template, target.values,
                                                                           part.opened, target.next_seq)))
        try:
            part.publish(names)
        except OSError as exc:
            log.warning("sink %s: cannot publish %s yet (will retry): %s", self.name, part.path, exc)
            self._unpublished.append((target, part))

    # ------------------------------------------------------------------ rotation on the clock

    def _start_timer(self) -> None:
        if self.config.mode == "append" and (self._timer is None or self._timer.done()):
            self._timer = asyncio.get_running_loop().create_task(self._tick(), name=f"syncbus-file-rotate:{self.name}")

    async def _tick(self) -> None:
        """Publish files when their period ends, even if no record comes to trigger it."""
        while True:
            self._wake.clear()
            delay = self._next_due()
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
                continue
            except TimeoutError:
                pass
            try:
                await self.rotate_due()
            except Exception:  # a broken disk must not stop the timer; sends report it
                log.exception("sink %s: rotating files failed", self.name)

    def _next_due(self) -> float | None:
        every = self.config.rotate.every
        open_parts = [s.part for s in self._series.values() if s.part is not None]
        waits: list[float] = [_PUBLISH_RETRY] if self._unpublished else []
        if every is not None and open_parts:
            now = self._clock()
            local = (now.replace(tzinfo=None) - datetime(1970, 1, 1)).total_seconds()
            for part in open_parts:
                end = ((part.period if part.period is not None else 0) + 1) * every
                waits.append(max(0.0, end - local) + 0.001)
        return min(waits) if waits else None

    async def rotate_due(self, *, force: bool = False) -> None:
        """Publish every file whose period is over (all of them with ``force``), and retry failed publishes."""
        now = self._clock()
        period = self._period(now)
        for key, target in list(self._series.items()):
            part = target.part
            if part is not None and (force or (self.config.rotate.every is not None and part.period != period)):
                async with target.lock:
                    if target.part is part:
                        await self._blocking(self._publish, target, part)
            if target.part is None and not target.pending and (target.flusher is None or target.flusher.done()):
                self._series.pop(key, None)
        retry, self._unpublished = self._unpublished, []
        for target, part in retry:
            async with target.lock:
                await self._blocking(self._publish, target, part)

    async def _recover(self) -> None:
        def names_for(final: str) -> Iterator[str]:
            yield final
            stem, ext = os.path.splitext(final)
            yield from (f"{stem}-{n}{ext}" for n in range(1, 100_000))

        try:
            published = await self._blocking(recover, self.folder, self._pattern, self.config.format,
                                             self.config.xml_root, names_for)
        except OSError as exc:  # reported, not fatal: the next start tries again
            log.error("sink %s: cannot publish files left in progress in %s: %s", self.name, self.folder, exc)
            return
        for name in published:
            log.warning("sink %s: published %s, left in progress by an earlier run", self.name, name)
