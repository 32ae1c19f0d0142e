"""``file_drop``: a folder another system drops CSV, JSON Lines, JSON or XML files into (DESIGN §5).

The OA exports its employees as a GBK CSV into a shared folder; HR does the
same the other way. This source turns each file into one record per row,
line or element and tells the partner what became of the file.

Lifecycle of a file:

1. **Settle.** A file is read only once its size and mtime have stayed the
   same for ``settle`` seconds *as seen by this process* (two looks at least
   ``settle`` apart), never by its mtime alone: copies that keep the
   original mtime (``cp -p``, rsync, SMB) would otherwise be read half-way.
2. **Read.** The whole file is decoded strictly. A file that cannot be
   decoded at all moves to ``failed/`` with ``<name>.reason``, and none of
   its rows is published. A malformed row is published as a record marked
   ``syncbus-malformed: <file>:<line>: <why>`` whose value is the raw line;
   the router dead-letters it as ``schema`` naming the file and line, and
   the rest of the file goes through.
3. **Publish** (by the poll runner), in pages of ``batch_size`` records.
4. **Done.** Once the cursor saying "all of this file is on the bus" is
   stored, :meth:`FileDropSource.committed` moves the file, bytes
   unchanged, to ``processed/`` with ``<name>.result.json`` beside it.

Crashes: the cursor lists the files (name, size, mtime) being read and the
last line published. A crash after publishing but before the cursor is
stored re-reads the file from its last stored line: duplicates are
possible, losses are not. The re-read records get the SAME ids -- a record
id is derived from source, file name, size, mtime and line -- so the
idempotency key a target sees (``route:key:record id``) is the same and the
target can drop the duplicate. A crash after the cursor is stored but before
the move only moves the file on the next poll; nothing is re-read.
"""

from __future__ import annotations

import asyncio
import codecs
import fnmatch
import hashlib
import logging
import os
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, Literal

import orjson
from pydantic import Field, field_validator, model_validator

from ..record import H_FILE, H_LINE, H_MALFORMED
from ..units import Duration, Size
from .base import NewRecord, PollBatch, PollSource, PollSourceConfig, SourceConfig
from .file_drop_moves import FAILED, PROCESSED, REASON_SUFFIX, RESULT_SUFFIX, move_done
from .file_drop_parse import FileFormat, ParseOptions, Row, Undecodable, parse

log = logging.getLogger(__name__)

# A record the source could not parse: "<file>:<line>: <why>". The router dead-letters such a record
# as `schema` with this text as the error (router.py, Route._dispatch: the same literal).
DEFAULT_FILE_INTERVAL: Final = 5.0  # seconds between looks at the folder when neither schedule nor interval
DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
_REASON_LIMIT: Final = 1000  # characters of a malformed row's reason in its header


class FileDropConfig(PollSourceConfig):
    """Options of ``type: file_drop``."""

    type: Literal["file_drop"] = "file_drop"
    path: str = Field(min_length=1, description="The folder files are dropped into (relative to the working "
                                                "directory); `processed/` and `failed/` are created inside it.")
    pattern: str = Field("*.csv", min_length=1,
                         description="Glob of the file names to read, matched case-insensitively (`*.csv`, "
                                     "`employees_*.txt`); hidden files (`.name`) are never read.")
    format: FileFormat = Field("csv", description="csv (one record per row, keyed by the header's column names), "
                                                  "jsonl (one per line), json (an array: one per element; an "
                                                  "object: one record) or xml (one per child of the root).")
    encoding: str = Field("utf-8", description="Encoding of the files: utf-8, utf-8-sig, gbk, gb18030 or another "
                                               "ASCII-compatible one; a BOM is dropped. XML files may say "
                                               "otherwise in their declaration.")
    delimiter: str = Field(",", description="csv: the cell delimiter, one character (`;`, `\\t`, `|`).")
    key: str | None = Field(None, description="The column (csv) or field (a dotted path) whose value is the "
                                              "record key; csv files without that column go to failed/.")
    settle: Duration = Field(5.0, ge=0, description="A file is read only after its size and mtime stayed the "
                                                    "same this long (duration), so it is never read half-way.")
    max_bytes: Size = Field(DEFAULT_MAX_BYTES, gt=0,
                            description="Largest file read (e.g. 64MiB); a larger one goes to failed/.")

    @model_validator(mode="before")
    @classmethod
    def _default_interval(cls, data: Any) -> Any:
        """A folder is cheap to look at and the OA ↔ HR flow is realtime: 5s, not the poll default of 30s."""
        if isinstance(data, dict) and data.get("schedule") is None and data.get("interval") is None:
            data = {**data, "interval": DEFAULT_FILE_INTERVAL}
        return data

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        if "/" in value or "\\" in value:
            raise ValueError("pattern matches file names in the folder, not paths: no '/'")
        return value

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        try:
            info = codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        try:
            ascii_compatible = "a,\n".encode(info.name) == b"a,\n"
        except (UnicodeError, LookupError):
            ascii_compatible = False
        if not getattr(info, "_is_text_encoding", True) or not ascii_compatible:
            raise ValueError(f"encoding {value!r} is not an ASCII-compatible text encoding "
                             "(utf-8, utf-8-sig, gbk, gb18030, ...)")
        return value

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, value: str) -> str:
        if len(value) != 1 or value in "\r\n\"":
            raise ValueError(f"delimiter must be one character, not a newline or '\"', got {value!r}")
        return value


@dataclass(frozen=True, slots=True)
class Seen:
    """A file as listed: what identifies this version of it."""

    name: str
    size: int
    mtime_ns: int
    ino: int

    def same(self, state: dict[str, Any]) -> bool:
        return state.get("size") == self.size and state.get("mtime_ns") == self.mtime_ns


@dataclass(slots=True)
class Parsed:
    """A file read into rows, kept while its pages are published."""

    seen: Seen
    rows: list[Row]
    sha256: str


class FileDropSource(PollSource):
    """Read the files dropped into a folder: one record per CSV row, JSON Lines line, JSON element or XML element.

    A file is read once it stopped changing for `settle`; every record carries
    the file name and its line (headers `syncbus-file`, `syncbus-line`; a CSV
    header is line 1). A done file moves, bytes unchanged, to `processed/`
    with `<name>.result.json` (rows published, rows refused with line and
    reason); a file that cannot be decoded at all moves to `failed/` with
    `<name>.reason` and none of its rows is published. A malformed row is
    dead-lettered by the routes as `schema`, naming `file:line`; the rest of
    the file goes through. A crash re-reads at most the unstored page of a
    file, with the same record ids (duplicates, never losses).
    """

    Config: ClassVar[type[SourceConfig]] = FileDropConfig
    status: ClassVar[Literal["stable", "beta", "experimental", "deprecated"]] = "beta"
    examples: ClassVar[list[dict[str, Any]]] = [
        {"name": "oa-employees-csv", "type": "file_drop", "path": "/data/oa/outbox", "pattern": "*.csv",
         "format": "csv", "encoding": "gbk", "delimiter": ",", "key": "emp_id", "topic": "oa.employees"},
        {"name": "shop-orders", "type": "file_drop", "path_env": "SHOP_EXPORT_DIR", "pattern": "orders-*.jsonl",
         "format": "jsonl", "key": "order.id", "settle": "10s", "interval": "30s", "topic": "shop.orders"},
    ]
    config: FileDropConfig

    def __init__(self, config: SourceConfig | dict[str, Any]) -> None:
        super().__init__(config)
        cfg = self.config
        self.folder = os.path.abspath(cfg.path)
        self.options = ParseOptions(cfg.format, cfg.encoding, cfg.delimiter, cfg.key)
        self._looks: dict[str, tuple[Seen, float]] = {}  # name -> (version, when first seen unchanged)
        self._parsed: dict[Seen, Parsed] = {}

    async def stop(self) -> None:
        self._looks.clear()
        self._parsed.clear()

    async def check(self) -> bool:
        return await asyncio.to_thread(os.access, self.folder, os.R_OK | os.W_OK | os.X_OK)

    # -- poll ------------------------------------------------------------------------

    async def poll(self, cursor: Any | None, *, full: bool, limit: int) -> PollBatch:
        """The next ``limit`` rows of the settled files, oldest file first; see the module docstring.

        ``full`` changes nothing: every poll reads every file still in the
        folder, and files already moved are never read again.
        """
        listed = await asyncio.to_thread(self._scan)
        present = {s.name: s for s in listed}
        given = _files_of(cursor)
        files = {n: st for n, st in given.items() if n in present and present[n].same(st)}
        for name in [n for n, st in files.items() if st.get("done")]:
            # published and stored, but the move did not happen (a crash, or a caller that never commits)
            await self._finish(present[name])
            del files[name]
        self._forget(present)
        records: list[NewRecord] = []
        more = False
        for seen in listed:
            state = files.get(seen.name)
            if state is None and not self._settled(seen):
                continue
            parsed = await self._read(seen)
            if parsed is None:  # failed/, or changed while being read
                files.pop(seen.name, None)
                continue
            if len(records) >= limit:
                more = True
                break
            after = int(state.get("line", 0)) if state is not None else 0
            todo = [row for row in parsed.rows if row.line > after]
            take = todo[:limit - len(records)]
            records += [self._record(seen, row) for row in take]
            last = take[-1].line if take else after
            done = len(take) == len(todo)
            files[seen.name] = {"size": seen.size, "mtime_ns": seen.mtime_ns, "line": last, "done": done}
            if not done:
                more = True
                break
        if files == given:
            return PollBatch(records, cursor, more)
        return PollBatch(records, {"files": files}, more)

    async def committed(self, batch: PollBatch) -> None:
        """The batch is on the bus and its cursor stored: move every file it finished to processed/."""
        finished = [name for name, st in _files_of(batch.cursor).items() if st.get("done")]
        if not finished:
            return
        present = {s.name: s for s in await asyncio.to_thread(self._scan)}
        state = _files_of(batch.cursor)
        for name in finished:
            seen = present.get(name)
            if seen is not None and seen.same(state[name]):
                await self._finish(seen)

    # -- the folder ----------------------------------------------------------------------

    def _scan(self) -> list[Seen]:
        """Regular, visible files matching ``pattern``, oldest first (a partner's exports keep their order)."""
        pattern = self.config.pattern.lower()
        found: list[Seen] = []
        with os.scandir(self.folder) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not fnmatch.fnmatchcase(entry.name.lower(), pattern):
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(info.st_mode):
                    found.append(Seen(entry.name, info.st_size, info.st_mtime_ns, info.st_ino))
        found.sort(key=lambda s: (s.mtime_ns, s.name))
        return found

    def _settled(self, seen: Seen) -> bool:
        """Unchanged (size, mtime, inode) across looks at least ``settle`` apart."""
        now = time.monotonic()
        look = self._looks.get(seen.name)
        if look is None or look[0] != seen:
            self._looks[seen.name] = (seen, now)
            return self.config.settle <= 0
        return now - look[1] >= self.config.settle

    def _forget(self, present: dict[str, Seen]) -> None:
        for name in [n for n, (s, _t) in self._looks.items() if present.get(n) != s]:
            del self._looks[name]
        live = set(present.values())
        for seen in [s for s in self._parsed if s not in live]:
            del self._parsed[seen]

    async def _read(self, seen: Seen) -> Parsed | None:
        """The file's rows (cached while it is paged); None once it went to failed/ or changed under us."""
        parsed = self._parsed.get(seen)
        if parsed is None:
            parsed = await asyncio.to_thread(self._load, seen)
            if parsed is not None:
                self._parsed[seen] = parsed
        return parsed

    def _load(self, seen: Seen) -> Parsed | None:
        path = os.path.join(self.folder, seen.name)
        if seen.size > self.config.max_bytes:
            self._fail(seen, f"the file is {seen.size} bytes, larger than max_bytes ({self.config.max_bytes})")
            return None
        try:
            with open(path, "rb") as f:
                data = f.read(self.config.max_bytes + 1)
                after = os.fstat(f.fileno())
        except FileNotFoundError:
            return None
        now = Seen(seen.name, after.st_size, after.st_mtime_ns, after.st_ino)
        if now != seen or len(data) != seen.size:
            self._looks.pop(seen.name, None)  # it is still being written: settle again
            log.info("source %s: %s changed while being read; waiting for it to settle", self.name, seen.name)
            return None
        try:
            rows = parse(data, self.options)
        except Undecodable as exc:
            self._fail(seen, exc.reason)
            return None
        return Parsed(seen, rows, hashlib.sha256(data).hexdigest())

    def _fail(self, seen: Seen, reason: str) -> None:
        text = (f"{seen.name}: cannot be read as {self.config.format} in {self.config.encoding}: {reason}\n"
                f"source: {self.name}; nothing of this file was published. Fix the file and drop it again.\n")
        try:
            moved = move_done(self.folder, seen.name, FAILED, REASON_SUFFIX, text.encode("utf-8"))
        except FileNotFoundError:
            return
        log.warning("source %s: %s moved to %s/%s: %s", self.name, seen.name, FAILED, moved, reason)

    async def _finish(self, seen: Seen) -> None:
        parsed = await self._read(seen)
        if parsed is None:
            return
        result = orjson.dumps(self._result(parsed), option=orjson.OPT_INDENT_2) + b"\n"
        try:
            moved = await asyncio.to_thread(move_done, self.folder, seen.name, PROCESSED, RESULT_SUFFIX, result)
        except FileNotFoundError:
            moved = None
        self._parsed.pop(seen, None)
        self._looks.pop(seen.name, None)
        if moved is not None:
            log.info("source %s: %s done, moved to %s/%s", self.name, seen.name, PROCESSED, moved)

    def _result(self, parsed: Parsed) -> dict[str, Any]:
        seen = parsed.seen
        refused = [{"line": r.line, "reason": r.problem} for r in parsed.rows if r.problem is not None]
        return {
            "file": seen.name, "source": self.name, "topic": self.topic, "format": self.config.format,
            "encoding": self.config.encoding, "size": seen.size, "sha256": parsed.sha256,
            "modified_at": datetime.fromtimestamp(seen.mtime_ns / 1e9, UTC).isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "rows": len(parsed.rows), "published": len(parsed.rows) - len(refused), "refused": refused,
        }

    # -- records -------------------------------------------------------------------------

    def _record(self, seen: Seen, row: Row) -> NewRecord:
        headers = {H_FILE: seen.name, H_LINE: str(row.line)}
        if row.problem is not None:
            headers[H_MALFORMED] = f"{seen.name}:{row.line}: {row.problem}"[:_REASON_LIMIT]
        return NewRecord(value=row.value, key=row.key, content_type="application/json", headers=headers,
                         id=record_id(self.name, seen, row.line))


def record_id(source: str, seen: Seen, line: int) -> str:
    """The same id for the same row of the same file version, however often it is read.

    32 hex digits like :func:`syncbus.record.new_id`: the file's mtime (so ids
    sort by when the file was written), a hash of source, name, size and mtime,
    and the line (so a file's records sort by line).
    """
    digest = hashlib.sha256(f"{source}\0{seen.name}\0{seen.size}\0{seen.mtime_ns}".encode()).hexdigest()
    return f"{max(seen.mtime_ns, 0) & (2**64 - 1):016x}{digest[:8]}{line & 0xFFFFFFFF:08x}"


def _files_of(cursor: Any) -> dict[str, dict[str, Any]]:
    """The per-file state of a stored cursor; anything unexpected reads as "nothing in progress"."""
    if not isinstance(cursor, dict) or not isinstance(cursor.get("files"), dict):
        return {}
    return {name: dict(st) for name, st in cursor["files"].items() if isinstance(name, str) and isinstance(st, dict)}
