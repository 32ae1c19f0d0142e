"""Turning one message of a foreign Kafka topic into the records syncbus publishes.

* ``json`` and ``xml``: the message value is one record, published byte for
  byte with its content type; the route decodes it, so a broken document is
  dead-lettered there with the parser's own words.
* ``csv``: a message holds CSV *lines without a header* (one line per
  message is the common case, a few lines per message are fine), named by
  ``columns``. Each line becomes one record, a JSON object in column order
  -- as a CSV row from the HTTP ingress or a file drop does -- so the routes
  see the same shape whichever way a row arrived. Kafka producers of CSV
  (``kafka-console-producer < file.csv``, spool-dir connectors) put a line
  per message and never repeat the header, which is why the columns are
  configured rather than read.

A CSV message that cannot be read entirely (bytes invalid in ``encoding``,
a line with more cells than ``columns``, broken quoting) is published
unchanged, as one record, with the ``syncbus-malformed`` header naming its
place (``topic[partition]@offset:line``) and the reason, and none of its
lines is published on its own: every route of the topic dead-letters it as
``schema`` (router.py), so it is never skipped silently, never half-read
and never blocks the topic. Lines with fewer cells than ``columns`` get
``""`` for the missing trailing ones (as the CSV codec does).

Tombstones (a message without a value: "delete this key" in a compacted
topic) carry no record and are skipped.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from typing import Final, Literal

import orjson

from .base import NewRecord

# The router's literal (router.py, Route._dispatch; file_drop uses the same): "<where>: <why>".
H_MALFORMED: Final = "syncbus-malformed"
H_ORIGIN: Final = "syncbus-kafka-origin"  # "<topic>[<partition>]@<offset>": where the record was read
REASON_LIMIT: Final = 1000

Format = Literal["json", "xml", "csv"]
CONTENT_TYPES: Final[dict[str, str]] = {"json": "application/json", "xml": "application/xml",
                                        "csv": "text/csv"}


@dataclass(frozen=True, slots=True)
class Message:
    """What the decoder needs of one consumed message (aiokafka's ConsumerRecord, reduced)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Decoder:
    """Options of the decoding, from the source's config."""

    source: str
    format: Format
    columns: tuple[str, ...] = ()
    delimiter: str = ","
    encoding: str = "utf-8"

    def records(self, msg: Message) -> list[NewRecord]:
        """The records of one message (none for a tombstone)."""
        if msg.value is None:
            return []
        key = None if msg.key is None else msg.key.decode("utf-8", errors="replace")
        where = f"{msg.topic}[{msg.partition}]@{msg.offset}"
        if self.format != "csv":
            return [self._record(msg, 0, msg.value, key, CONTENT_TYPES[self.format], {H_ORIGIN: where})]
        try:
            text = msg.value.decode(self.encoding).removeprefix("\ufeff")
        except UnicodeDecodeError as exc:
            why = f"byte {exc.start} is not valid {self.encoding}"
            return [self._malformed(msg, key, where, why)]
        rows: list[tuple[int, list[str]]] = []
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=self.delimiter, strict=True)
        line = 0
        while True:  # read every line first: a message is published whole or not at all
            start = line + 1
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                return [self._malformed(msg, key, f"{where}:{reader.line_num}", f"malformed CSV: {exc}")]
            line = reader.line_num
            if not cells or cells == [""]:
                continue
            if len(cells) > len(self.columns):
                why = f"{len(cells)} cells but {len(self.columns)} columns"
                return [self._malformed(msg, key, f"{where}:{start}", why)]
            rows.append((start, cells + [""] * (len(self.columns) - len(cells))))
        return [self._record(msg, n, orjson.dumps(dict(zip(self.columns, cells, strict=True))), key,
                             "application/json", {H_ORIGIN: f"{where}:{n}"}) for n, cells in rows]

    def _malformed(self, msg: Message, key: str | None, where: str, why: str) -> NewRecord:
        assert msg.value is not None
        headers = {H_ORIGIN: where, H_MALFORMED: f"{where}: {why}"[:REASON_LIMIT]}
        return self._record(msg, 0, msg.value, key, CONTENT_TYPES[self.format], headers)

    def _record(self, msg: Message, line: int, value: bytes, key: str | None, content_type: str,
                headers: dict[str, str]) -> NewRecord:
        return NewRecord(value=value, key=key, content_type=content_type, headers=headers,
                         id=record_id(self.source, msg, line))


def record_id(source: str, msg: Message, line: int) -> str:
    """The same id every time this message (line) is read: a re-read after a crash is recognisably the same.

    Its delivery then carries the same idempotency key, so targets that drop
    duplicates drop the copy the at-least-once hand-over between the two
    clusters can make. Shaped like :func:`syncbus.record.new_id` (time first,
    32 hex digits) so ids still sort by time.
    """
    digest = hashlib.blake2b(f"{source}\0{msg.topic}\0{msg.partition}\0{msg.offset}\0{line}".encode(),
                             digest_size=8).hexdigest()
    return f"{max(msg.timestamp_ms, 0) * 1_000_000:016x}{digest}"
