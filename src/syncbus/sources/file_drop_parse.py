"""Reading one dropped file into rows for ``file_drop``: CSV, JSON Lines, JSON, XML.

The codecs in :mod:`syncbus.formats` decode a payload as a whole and refuse it
at the first bad row. A drop folder needs two levels of failure instead,
because a file exchange partner needs to know *which* row to fix:

* :class:`Undecodable` -- the file as a whole cannot be read (wrong encoding,
  a JSON or XML document that does not parse, a CSV header that names no
  columns, too large). Nothing of it is published; it goes to ``failed/``.
* a malformed row -- one CSV row with the wrong number of cells, one JSON
  Lines line that is not a JSON object. The row becomes a :class:`Row` with
  a ``problem`` and its raw text; the rest of the file goes through.

Every row carries its 1-based line (a CSV header is line 1; a row or element
spanning several lines has the line it starts on), so a dead letter can name
``employees.csv:8``. Values are JSON objects (bytes): CSV rows keyed by the
header's column names in column order, XML elements in xmltodict's model.
"""

from __future__ import annotations

import bisect
import codecs
import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal
from xml.parsers import expat

import orjson

from ..errors import DecodeError, SyncbusError
from ..formats.json import JsonCodec
from ..formats.xml import XmlCodec

FileFormat = Literal["csv", "jsonl", "json", "xml"]
RAW_LIMIT: Final = 64 * 1024  # characters of a malformed row kept as its dead letter's value

_BOM: Final = "\ufeff"
_XML_DECL: Final = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
# Tokens that matter for finding the elements of a top-level JSON array: whole strings (so brackets
# and commas inside them do not count), brackets and commas.
_JSON_TOKEN: Final = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{},]', re.DOTALL)
_NON_SPACE: Final = re.compile(r"\S")


class Undecodable(SyncbusError):
    """The file as a whole cannot be read; ``reason`` says what and where, for ``<name>.reason``."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class Row:
    """One record of a file: its line, its value, its key; or, with ``problem``, a malformed row's raw text."""

    line: int
    value: bytes
    key: str | None = None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class ParseOptions:
    """How to read the files of one source (from its config)."""

    format: FileFormat
    encoding: str = "utf-8"
    delimiter: str = ","
    key: str | None = None


def parse(data: bytes, options: ParseOptions) -> list[Row]:
    """Every row of ``data`` in file order; raises :class:`Undecodable` when the file cannot be read at all."""
    if options.format == "xml":
        return _xml(data, options)
    text = _text(data, options.encoding)
    if options.format == "csv":
        return _csv(text, options)
    if options.format == "jsonl":
        return _jsonl(text, options.key)
    return _json(text, options.key)


def _text(data: bytes, encoding: str) -> str:
    """Strictly decoded text without a BOM: a byte that is invalid in ``encoding`` fails the whole file.

    Replacing it would send a mangled name to the target; a file in the wrong
    encoding is a wrong file, not a few bad rows.
    """
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        head = data[:exc.start]
        line = head.count(b"\n") + 1
        column = exc.start - (head.rfind(b"\n") + 1) + 1
        bad = data[exc.start:exc.end]
        raise Undecodable(f"not {encoding}: line {line}, byte {column} of the line (offset {exc.start}): "
                          f"invalid byte sequence {bad!r}") from None
    return text[1:] if text.startswith(_BOM) else text


def _lines(text: str) -> list[str]:
    """Physical lines with their endings, split the way the csv module counts them (\\n, \\r\\n, \\r)."""
    return io.StringIO(text, newline="").readlines()


def _raw(lines: list[str], first: int, last: int) -> bytes:
    """The text of lines ``first``..``last`` (1-based) without the final line ending, as UTF-8."""
    text = "".join(lines[first - 1:last]).rstrip("\r\n")
    return text[:RAW_LIMIT].encode("utf-8", "surrogatepass")


def _key_of(obj: Any, path: str | None) -> str | None:
    """The record key: the value at the dotted ``path`` when it is a non-empty scalar."""
    if path is None:
        return None
    node = obj
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if isinstance(node, bool) or node is None or isinstance(node, dict | list):
        return None
    text = str(node)
    return text if text else None


def _is_blank(row: list[str]) -> bool:
    return not row or (len(row) == 1 and not row[0].strip())


# --------------------------------------------------------------------------- CSV


def _csv(text: str, options: ParseOptions) -> list[Row]:
    lines = _lines(text)
    reader = csv.reader(iter(lines), delimiter=options.delimiter, quotechar='"', strict=True, doublequote=True)
    names: list[str] | None = None
    rows: list[Row] = []
    end = 0
    for cells, error in _csv_rows(reader):
        first, end = end + 1, reader.line_num
        if error is None and _is_blank(cells):
            continue
        if names is None:
            if error is not None:
                raise Undecodable(f"line {first}: the header cannot be read: {error}")
            names = _header(cells, first, options)
            continue
        if error is not None:
            rows.append(Row(first, _raw(lines, first, end), None, f"malformed CSV: {error}"))
        elif len(cells) != len(names):
            rows.append(Row(first, _raw(lines, first, end), None,
                            f"{len(cells)} cells but the header has {len(names)} columns"))
        else:
            obj = dict(zip(names, cells, strict=True))
            rows.append(Row(first, orjson.dumps(obj), _key_of(obj, options.key)))
    return rows


def _csv_rows(reader: Any) -> Iterator[tuple[list[str], str | None]]:
    """(cells, error) per row; a row the csv module refuses is reported and reading goes on after it."""
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            hint = " (unterminated quoted field?)" if str(exc) == "unexpected end of data" else ""
            yield [], f"{exc}{hint}"
            continue
        yield cells, None


def _header(cells: list[str], line: int, options: ParseOptions) -> list[str]:
    names = [cell.strip() for cell in cells]
    for i, name in enumerate(names, 1):
        if not name:
            raise Undecodable(f"line {line}: header column {i} is empty (is the delimiter "
                              f"{options.delimiter!r} right?)")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise Undecodable(f"line {line}: the header names column {name!r} twice")
        seen.add(name)
    if options.key is not None and options.key not in seen:
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        raise Undecodable(f"line {line}: no key column {options.key!r} in the header ({shown}); is the "
                          f"delimiter {options.delimiter!r} right?")
    return names


# --------------------------------------------------------------------------- JSON Lines and JSON

_JSON = JsonCodec()


def _jsonl(text: str, key: str | None) -> list[Row]:
    lines = _lines(text)
    rows: list[Row] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = _JSON.decode(line.encode("utf-8", "surrogatepass"))
        except DecodeError as exc:
            rows.append(Row(number, _raw(lines, number, number), None, f"invalid JSON: {exc.message}"))
            continue
        if not isinstance(obj, dict):
            rows.append(Row(number, _raw(lines, number, number), None,
                            f"a JSON Lines record must be an object, not {_json_type(obj)}"))
            continue
        rows.append(Row(number, orjson.dumps(obj), _key_of(obj, key)))
    return rows


def _json(text: str, key: str | None) -> list[Row]:
    try:
        doc = _JSON.decode(text.encode("utf-8", "surrogatepass"))
    except DecodeError as exc:
        raise Undecodable(f"not a JSON document: {exc.message}") from None
    newlines = [m.start() for m in re.finditer("\n", text)]

    def line_at(offset: int) -> int:
        return bisect.bisect_left(newlines, offset) + 1

    if isinstance(doc, dict):
        start = _NON_SPACE.search(text)
        return [Row(line_at(start.start()) if start else 1, orjson.dumps(doc), _key_of(doc, key))]
    if not isinstance(doc, list):
        raise Undecodable(f"a JSON file must hold an object or an array of objects, not {_json_type(doc)}")
    starts = _array_starts(text)
    if len(starts) != len(doc):  # cannot happen for a document orjson accepted; never guess a line
        starts = [0] * len(doc)
    rows: list[Row] = []
    for index, (element, offset) in enumerate(zip(doc, starts, strict=True)):
        line = line_at(offset)
        if isinstance(element, dict):
            rows.append(Row(line, orjson.dumps(element), _key_of(element, key)))
        else:
            rows.append(Row(line, orjson.dumps(element)[:RAW_LIMIT], None,
                            f"element {index} of the array is {_json_type(element)}, not an object"))
    return rows


def _array_starts(text: str) -> list[int]:
    """Character offsets where the elements of the top-level array start."""
    starts: list[int] = []
    depth = 0
    for m in _JSON_TOKEN.finditer(text):
        ch = text[m.start()]
        if ch == '"':
            continue
        if ch in "[{":
            depth += 1
            if ch == "[" and depth == 1:
                _next_element(text, m.end(), starts)
        elif ch in "]}":
            depth -= 1
        elif depth == 1:  # a comma between elements
            _next_element(text, m.end(), starts)
    return starts


def _next_element(text: str, pos: int, starts: list[int]) -> None:
    found = _NON_SPACE.search(text, pos)
    if found is not None and text[found.start()] != "]":
        starts.append(found.start())


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


# --------------------------------------------------------------------------- XML


def _xml(data: bytes, options: ParseOptions) -> list[Row]:
    """One record per child element of the root, in document order, in xmltodict's model.

    The hardened :class:`XmlCodec` parses (entities, depth and size limits);
    a second expat pass over the same, already-accepted text only notes where
    each child element starts.
    """
    text = _xml_text(data, options.encoding)
    utf8 = text.encode("utf-8", "surrogatepass")
    try:
        doc = XmlCodec(encoding="utf-8").decode(text)
    except DecodeError as exc:
        raise Undecodable(f"not an XML document: {exc.message}") from None
    ((_root, content),) = doc.items()
    children = content if isinstance(content, dict) else {}
    taken: dict[str, int] = {}
    rows: list[Row] = []
    for name, line in _child_lines(utf8):
        value = children.get(name)
        items = value if isinstance(value, list) else [value]
        index = taken.get(name, 0)
        taken[name] = index + 1
        element = items[index] if index < len(items) else None
        obj = element if isinstance(element, dict) else ({} if element is None else {"#text": element})
        rows.append(Row(line, orjson.dumps(obj), _key_of(obj, options.key)))
    return rows


def _xml_text(data: bytes, fallback: str) -> str:
    """The document as text: its BOM, else its declared encoding, else the configured one."""
    if data.startswith(codecs.BOM_UTF8):
        encoding = "utf-8-sig"
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    else:
        m = _XML_DECL.match(data[:300])
        encoding = m.group(1).decode("ascii") if m else fallback
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise Undecodable(f"line 1: unknown encoding {encoding!r} declared") from None
    text = _text(data, encoding)
    # the declaration no longer describes the text; XmlCodec.decode(str) ignores it
    return text


def _child_lines(utf8: bytes) -> list[tuple[str, int]]:
    """(name, line) of every child element of the root, in document order."""
    parser = expat.ParserCreate("utf-8")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    found: list[tuple[str, int]] = []
    depth = 0

    def start(name: str, _attrs: Any) -> None:
        nonlocal depth
        depth += 1
        if depth == 2:
            found.append((name, parser.CurrentLineNumber))

    def end(_name: str) -> None:
        nonlocal depth
        depth -= 1

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(utf8, True)
    except expat.ExpatError as exc:  # accepted by the hardened parser a moment ago: cannot happen
        raise Undecodable(f"not an XML document: line {exc.lineno}: {expat.ErrorString(exc.code)}") from None
    return found
