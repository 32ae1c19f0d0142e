"""CSV codec: a payload is a whole file, decoded to one dict per data row.

Chinese OA/HR systems still export GBK or GB18030, and Excel writes UTF-8 with a
BOM, so the encoding is configurable and a leading BOM is dropped for every
encoding. Bytes that are invalid in the declared encoding are an error with the
line number, never silently replaced: a mangled name must not reach the target.

Rows with more cells than the header are refused (data would be lost or land
in the wrong column); rows with fewer cells get ``""`` for the missing trailing
columns (common in hand-edited and spreadsheet-exported files). Blank lines are
skipped. Quoting is RFC 4180 with ``strict`` parsing: a stray character after
a closing quote or an unterminated quoted field is an error with its line.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, Final

from syncbus.errors import ConfigError, DecodeError, EncodeError
from syncbus.formats.limits import (
    DEFAULT_CSV_MAX_BYTES,
    BytesLike,
    as_bytes,
    check_limit_options,
    check_size,
    line_col,
)

_FMT: Final = "csv"


class CsvCodec:
    """Configure once (dialect, encoding, columns), then decode/encode whole files.

    ``columns``: on encode, the columns and their order (keys not listed are
    left out); without it, the first record's key order, and a later record
    with a key the first did not have is an error. On decode with
    ``header=False`` it names the columns (required then); with ``header=True``
    the file's header row names them.
    """

    name: str = "csv"

    def __init__(self, delimiter: str = ",", encoding: str = "utf-8", quotechar: str = '"',
                 columns: list[str] | None = None, header: bool = True, *,
                 lineterminator: str = "\r\n", max_bytes: int = DEFAULT_CSV_MAX_BYTES) -> None:
        check_limit_options(_FMT, max_bytes)
        for option, value in (("delimiter", delimiter), ("quotechar", quotechar)):
            if not isinstance(value, str) or len(value) != 1 or value in "\r\n":
                raise ConfigError(f"csv codec: {option} must be one character (not a newline), got {value!r}")
        if delimiter == quotechar:
            raise ConfigError(f"csv codec: delimiter and quotechar are both {delimiter!r}")
        try:
            info = codecs.lookup(encoding)
        except (LookupError, TypeError):
            raise ConfigError(f"csv codec: unknown encoding {encoding!r}") from None
        if not getattr(info, "_is_text_encoding", True):
            raise ConfigError(f"csv codec: {encoding!r} is not a text encoding")
        if columns is not None:
            columns = list(columns)
            if not columns or not all(isinstance(c, str) and c for c in columns):
                raise ConfigError("csv codec: columns must be a non-empty list of non-empty strings")
            dupes = sorted({c for c in columns if columns.count(c) > 1})
            if dupes:
                raise ConfigError(f"csv codec: duplicate columns {dupes}")
        if not header and columns is None:
            raise ConfigError("csv codec: header=False needs columns to name the fields")
        if lineterminator not in ("\r\n", "\n"):
            raise ConfigError(f"csv codec: lineterminator must be '\\r\\n' or '\\n', got {lineterminator!r}")
        self.delimiter = delimiter
        self.encoding = encoding
        self.quotechar = quotechar
        self.columns = columns
        self.header = header
        self.lineterminator = lineterminator
        self.max_bytes = max_bytes
        self._codec_name = info.name
        self.content_type = "text/csv" if info.name in ("utf-8", "utf-8-sig") else f"text/csv; charset={encoding}"
        self._reader_options: dict[str, Any] = {
            "delimiter": delimiter, "quotechar": quotechar, "strict": True, "doublequote": True,
        }

    def __repr__(self) -> str:
        return (f"CsvCodec(delimiter={self.delimiter!r}, encoding={self.encoding!r}, quotechar={self.quotechar!r}, "
                f"columns={self.columns!r}, header={self.header}, max_bytes={self.max_bytes})")

    # ------------------------------------------------------------------ decode

    def decode(self, data: BytesLike) -> list[dict[str, str]]:
        raw = as_bytes(_FMT, data)
        check_size(_FMT, raw, self.max_bytes)
        try:
            text = raw.decode(self._codec_name)
        except UnicodeDecodeError as exc:
            line, col = line_col(raw, exc.start, self._codec_name)
            bad = raw[exc.start:exc.end]
            raise DecodeError(_FMT, f"line {line}, column {col} (byte {exc.start}): "
                                    f"invalid {self.encoding} byte sequence {bad!r}") from None
        if text.startswith("\ufeff"):
            text = text[1:]
        reader = csv.reader(io.StringIO(text, newline=""), **self._reader_options)
        records: list[dict[str, str]] = []
        names: list[str] | None = None if self.header else self.columns
        line = 0
        try:
            for row in reader:
                start, line = line + 1, reader.line_num
                if not row:
                    continue
                if names is None:
                    names = self._header(row, start)
                    continue
                if len(row) > len(names):
                    raise DecodeError(_FMT, f"line {start}: {len(row)} cells but {len(names)} columns "
                                            f"({self._extra(row, names)})")
                if len(row) < len(names):
                    row = row + [""] * (len(names) - len(row))
                records.append(dict(zip(names, row, strict=True)))
        except csv.Error as exc:
            hint = " (unterminated quoted field?)" if str(exc) == "unexpected end of data" else ""
            raise DecodeError(_FMT, f"line {reader.line_num or 1}: {exc}{hint}") from None
        return records

    def _header(self, row: list[str], line: int) -> list[str]:
        names = [cell.strip() for cell in row]
        for i, name in enumerate(names, 1):
            if not name:
                raise DecodeError(_FMT, f"line {line}: header column {i} is empty")
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise DecodeError(_FMT, f"line {line}: header names column {name!r} twice")
            seen.add(name)
        return names

    @staticmethod
    def _extra(row: list[str], names: list[str]) -> str:
        extra = row[len(names):]
        shown = ", ".join(repr(c[:20]) for c in extra[:3]) + (", ..." if len(extra) > 3 else "")
        return f"extra: {shown}"

    # ------------------------------------------------------------------ encode

    def encode(self, obj: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> bytes:
        records = self._records(obj)
        columns = self.columns
        strict_keys = columns is None
        if columns is None:
            columns = [str(k) for k in records[0]] if records else []
            if not columns:
                raise EncodeError(_FMT, "no columns: configure columns, or give at least one non-empty record")
        buf = io.StringIO()
        writer = csv.writer(buf, delimiter=self.delimiter, quotechar=self.quotechar,
                            lineterminator=self.lineterminator, quoting=csv.QUOTE_MINIMAL, doublequote=True)
        if self.header:
            writer.writerow(columns)
        known = set(columns)
        for index, record in enumerate(records, 1):
            if strict_keys:
                for key in record:
                    if key not in known:
                        raise EncodeError(_FMT, f"record {index} has field {key!r}, which is not a column "
                                                f"(columns come from the first record: {columns})")
            writer.writerow([_cell(record.get(name), name, index) for name in columns])
        text = buf.getvalue()
        try:
            return text.encode(self._codec_name)
        except UnicodeEncodeError as exc:
            line = text.count("\n", 0, exc.start) + 1
            bad = text[exc.start:exc.end]
            raise EncodeError(_FMT, f"line {line}: {bad!r} cannot be written in {self.encoding}") from None

    @staticmethod
    def _records(obj: Any) -> list[Mapping[str, Any]]:
        if isinstance(obj, Mapping):
            return [obj]
        if isinstance(obj, str | bytes) or not isinstance(obj, Iterable):
            raise EncodeError(_FMT, f"expected a dict or a list of dicts, got {type(obj).__name__}")
        records = list(obj)
        for index, record in enumerate(records, 1):
            if not isinstance(record, Mapping):
                raise EncodeError(_FMT, f"record {index} is a {type(record).__name__}, not a dict")
        return records


def _cell(value: Any, name: str, index: int) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        raise EncodeError(_FMT, f"record {index}, field {name!r}: a {type(value).__name__} cannot be a CSV "
                                "cell (flatten it in the mapping)")
    if isinstance(value, bytes | bytearray):
        raise EncodeError(_FMT, f"record {index}, field {name!r}: bytes cannot be a CSV cell")
    return str(value)
