"""Batches at the HTTP ingress: CSV files, JSON arrays and JSON Lines become one record per row.

A client that posts an export wants to know which rows failed, so a row
that cannot be read is refused on its own -- with its line (CSV and JSON
Lines, counting the CSV header as line 1, as a spreadsheet does) or its index
(JSON arrays) -- and the rest of the batch goes through.
"""

from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import DecodeError
from ..formats import Codec

CSV_TYPES = ("text/csv", "application/csv")
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/json-lines", "application/x-jsonlines")


@dataclass(frozen=True, slots=True)
class Row:
    """One record of a batch: where it was in the body and the object it decoded to."""

    where: dict[str, int]   # {"line": n} or {"index": i}
    obj: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Refused:
    where: dict[str, int]
    error: str

    def to_json(self) -> dict[str, Any]:
        return {**self.where, "error": self.error}


def charset_of(header: str | None, default: str = "utf-8") -> str:
    for part in (header or "").split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"')
    return default


def split_csv(body: bytes, charset: str, delimiter: str = ",") -> tuple[list[Row], list[Refused]]:
    """Rows keyed by the header's column names, in column order; a row with the wrong field count is refused."""
    try:
        codecs.lookup(charset)
        text = body.decode(charset)
    except LookupError:
        raise DecodeError("csv", f"unknown charset {charset!r}") from None
    except UnicodeDecodeError as exc:
        raise DecodeError("csv", f"byte {exc.start} is not valid {charset}: send the right charset parameter "
                                 "(e.g. text/csv; charset=gbk)") from None
    text = text.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[Row] = []
    refused: list[Refused] = []
    names: list[str] | None = None
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            refused.append(Refused({"line": reader.line_num}, f"malformed CSV: {exc}"))
            continue
        line = reader.line_num
        if not fields or fields == [""]:
            continue
        if names is None:
            names = [f.strip() for f in fields]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if not all(names) or dupes:
                raise DecodeError("csv", f"line {line}: the header needs unique, non-empty column names"
                                         + (f" (repeated: {', '.join(dupes)})" if dupes else ""))
            continue
        if len(fields) != len(names):
            refused.append(Refused({"line": line}, f"{len(fields)} fields, the header has {len(names)}"))
            continue
        rows.append(Row({"line": line}, dict(zip(names, fields, strict=True))))
    if names is None:
        raise DecodeError("csv", "no header row")
    return rows, refused


def split_ndjson(body: bytes, json_codec: Codec) -> tuple[list[Row], list[Refused]]:
    rows: list[Row] = []
    refused: list[Refused] = []
    for n, raw in enumerate(body.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            obj = json_codec.decode(raw)
        except DecodeError as exc:
            refused.append(Refused({"line": n}, exc.message))
            continue
        if isinstance(obj, dict):
            rows.append(Row({"line": n}, obj))
        else:
            refused.append(Refused({"line": n}, f"expected a JSON object, got {type(obj).__name__}"))
    return rows, refused


def split_array(items: list[Any]) -> tuple[list[Row], list[Refused]]:
    rows: list[Row] = []
    refused: list[Refused] = []
    for i, obj in enumerate(items):
        if isinstance(obj, dict):
            rows.append(Row({"index": i}, obj))
        else:
            refused.append(Refused({"index": i}, f"expected a JSON object, got {type(obj).__name__}"))
    return rows, refused


def row_value(row: Row) -> bytes:
    """What goes on the bus for a row: the row as a JSON object (column order kept)."""
    return orjson.dumps(row.obj)
