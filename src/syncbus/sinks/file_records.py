"""What the file sink writes for one record: the route's encoded body, re-encoded for the file.

The route's codec already chose the columns, their order, the XML root, the
delimiter; the sink keeps all of that and only changes what a *file* needs:

* the file's encoding (``utf-8``, ``utf-8-sig`` with a BOM for Excel, ``gbk``,
  ``gb18030`` for the HR side's legacy importers). A character the encoding
  lacks is a permanent error naming the field and value (``gbk`` has no 𠮷),
  never a silent ``?``: a mangled employee name must not reach HR;
* one record after another in one file: a CSV header once per file, JSON as
  one line per record (JSON Lines), XML elements inside one ``<records>`` root;
* every record ends with a line end and, for JSON Lines and XML, is exactly one
  line (line breaks inside become spaces / character references), so a file
  cut short by a crash can be repaired back to its last whole record.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from syncbus.errors import DeliveryError

Format = Literal["csv", "jsonl", "xml"]
BOM: Final = codecs.BOM_UTF8
EXTENSIONS: Final[dict[str, str]] = {"csv": "csv", "jsonl": "jsonl", "json": "json", "xml": "xml"}
_XML_DECLARATION: Final = re.compile(r"\A\s*<\?xml\b.*?\?>\s*", re.DOTALL)
_XML_DECLARED_ENCODING: Final = re.compile(rb"\A\s*<\?xml[^>]{0,200}?encoding\s*=\s*[\"']([A-Za-z][\w.-]{0,40})[\"']")


@dataclass(slots=True)
class Prepared:
    """One record, encoded for its file. ``header`` (CSV) starts a new file; ``data`` is the record itself."""

    fmt: Format
    encoding: str  # the file's encoding, as configured (utf-8-sig keeps its name: it decides the BOM)
    header: bytes | None
    data: bytes


def media_type(content_type: str) -> tuple[str, dict[str, str]]:
    """("text/csv", {"charset": "gbk"}) from "text/csv; charset=GBK"."""
    mime, *params = content_type.split(";")
    out: dict[str, str] = {}
    for param in params:
        name, _, value = param.partition("=")
        out[name.strip().lower()] = value.strip().strip('"')
    return mime.strip().lower(), out


def format_of(content_type: str) -> Literal["csv", "json", "xml"] | None:
    mime, _ = media_type(content_type)
    if mime in ("application/json", "text/json", "application/x-ndjson") or mime.endswith("+json"):
        return "json"
    if mime in ("application/xml", "text/xml") or mime.endswith("+xml"):
        return "xml"
    if mime in ("text/csv", "application/csv", "text/comma-separated-values"):
        return "csv"
    return None


def check_encoding(name: str) -> str:
    """A known, ASCII-compatible encoding (line ends, quotes and tags must be single ASCII bytes)."""
    try:
        info = codecs.lookup(name)
    except LookupError:
        raise ValueError(f"unknown encoding {name!r} (e.g. utf-8, utf-8-sig, gbk, gb18030)") from None
    if not getattr(info, "_is_text_encoding", True) or not ascii_compatible(_codec(info.name)):
        raise ValueError(f"encoding {name!r} cannot be used for files here: line ends are not single bytes "
                         "in it (use utf-8, utf-8-sig, gbk, gb18030, ...)")
    return name


def ascii_compatible(encoding: str) -> bool:
    try:
        return '\r\n",<>/'.encode(encoding) == b'\r\n",<>/'
    except (LookupError, UnicodeError):
        return False


def body_encoding(delivery_body: bytes, content_type: str, fmt: str) -> str:
    """The encoding the route wrote the body in: BOM, XML declaration, charset parameter, else UTF-8."""
    if delivery_body.startswith(BOM):
        return "utf-8"
    if fmt == "xml":
        declared = _XML_DECLARED_ENCODING.match(delivery_body)
        if declared is not None:
            return declared.group(1).decode("ascii")
    return media_type(content_type)[1].get("charset") or "utf-8"


def _codec(encoding: str) -> str:
    """Python codec for the bytes of a record: utf-8-sig writes its BOM once per file, not per record."""
    return "utf-8" if has_bom(encoding) else encoding


def has_bom(encoding: str) -> bool:
    return codecs.lookup(encoding).name == "utf-8-sig"


def declared_name(encoding: str) -> str:
    """The name for an XML declaration: "utf-8" for utf-8-sig (the BOM is not part of the name)."""
    return "utf-8" if has_bom(encoding) else encoding


def decode_body(sink: str, body: bytes, encoding: str) -> str:
    try:
        text = body.decode(encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        raise DeliveryError(f"{sink}: the record is not valid {encoding}: {exc}", retryable=False) from None
    return text.removeprefix("\ufeff")


def encode(sink: str, text: str, encoding: str, payload: Any) -> bytes:
    """Text in the file's encoding, or a permanent error naming the field whose value it cannot hold."""
    try:
        return text.encode(_codec(encoding))
    except UnicodeEncodeError as exc:
        raise unencodable(sink, text[exc.start], encoding, payload) from None


def unencodable(sink: str, char: str, encoding: str, payload: Any) -> DeliveryError:
    where = _find(payload, char, "")
    code = f"U+{ord(char):04X}"
    hint = "; use encoding gb18030 or utf-8" if codecs.lookup(encoding).name in ("gbk", "gb2312") else ""
    if where is None:
        what = f"the record contains {char!r} ({code})"
    else:
        path, value = where
        shown = value if len(value) <= 60 else value[:57] + "..."
        what = f"field {path!r} value {shown!r} contains {char!r} ({code})"
    return DeliveryError(f"{sink}: {what}, which {encoding} cannot encode{hint}", retryable=False)


def _find(node: Any, char: str, path: str) -> tuple[str, str] | None:
    """The first field (dotted path) whose text or name holds ``char``."""
    stack: list[tuple[Any, str]] = [(node, path)]
    while stack:
        value, here = stack.pop()
        if isinstance(value, Mapping):
            items = list(value.items())
            for key, _ in items:
                if isinstance(key, str) and char in key:
                    return (f"{here}.{key}" if here else key), key
            stack.extend((child, f"{here}.{key}" if here else str(key)) for key, child in reversed(items))
        elif isinstance(value, list | tuple):
            stack.extend((child, f"{here}[{i}]") for i, child in reversed(list(enumerate(value))))
        elif isinstance(value, str) and char in value:
            return here or "(record)", value
    return None


# ---------------------------------------------------------------------- one record


def prepare(sink: str, body: bytes, content_type: str, payload: Any, fmt: Format,
            encoding: str | None) -> Prepared | None:
    """The record's bytes for an appended file; None for an empty body (nothing to write)."""
    source = body_encoding(body, content_type, "xml" if fmt == "xml" else "text")
    target = encoding or source
    text = decode_body(sink, body, source)
    if fmt == "jsonl":
        # A raw CR or LF can only be whitespace in valid JSON (inside strings they are escaped).
        line = text.replace("\r", " ").replace("\n", " ").strip()
        return Prepared("jsonl", target, None, encode(sink, line + "\n", target, payload)) if line else None
    if fmt == "xml":
        element = _XML_DECLARATION.sub("", text, count=1).strip()
        if not element:
            return None
        if element.startswith("<!DOCTYPE"):
            raise DeliveryError(f"{sink}: an XML record with a DOCTYPE cannot be collected into a file",
                                retryable=False)
        # One line per record: a line break in text and &#10; are the same to every XML reader.
        element = element.replace("\r", "&#13;").replace("\n", "&#10;")
        return Prepared("xml", target, None, encode(sink, element + "\n", target, payload))
    if not text:
        return None
    newline = "\r\n" if "\r\n" in text else "\n"
    if not text.endswith("\n"):
        text += newline
    if media_type(content_type)[1].get("header", "present").lower() == "absent":
        return Prepared("csv", target, None, encode(sink, text, target, payload))
    end = end_of_first_record(text)
    return Prepared("csv", target, encode(sink, text[:end], target, payload),
                    encode(sink, text[end:], target, payload))


def whole_document(sink: str, body: bytes, content_type: str, payload: Any, fmt: str | None,
                   encoding: str | None) -> bytes:
    """A per-record file: the body as the route wrote it, or re-encoded when the sink sets an encoding."""
    if encoding is None or fmt is None:
        return body
    source = body_encoding(body, content_type, fmt)
    text = decode_body(sink, body, source)
    if fmt == "xml":
        declaration = f'<?xml version="1.0" encoding="{declared_name(encoding)}"?>\n'
        text = declaration + _XML_DECLARATION.sub("", text, count=1)
    data = encode(sink, text, encoding, payload)
    return BOM + data if has_bom(encoding) else data


def end_of_first_record(text: str) -> int:
    """Index just past the line end of the first CSV record (a newline inside quotes does not end it)."""
    quoted = False
    pos = 0
    while True:
        nl = text.find("\n", pos)
        if nl < 0:
            return len(text)
        quoted ^= text.count('"', pos, nl) % 2 == 1
        if not quoted:
            return nl + 1
        pos = nl + 1


def complete_length(data: bytes, fmt: str) -> int:
    """Bytes of ``data`` up to the end of its last whole record (used to repair a file after a crash).

    Works on bytes: in UTF-8 and GBK/GB18030 neither '"' nor LF ever occurs
    inside a multi-byte character.
    """
    if fmt != "csv":
        return data.rfind(b"\n") + 1
    end = 0
    quoted = False
    pos = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            return end
        quoted ^= data.count(b'"', pos, nl) % 2 == 1
        if not quoted:
            end = nl + 1
        pos = nl + 1


# ---------------------------------------------------------------------- framing of a collected file


def file_head(fmt: Format, encoding: str, header: bytes | None, xml_root: str) -> bytes:
    bom = BOM if has_bom(encoding) else b""
    if fmt == "xml":
        return bom + f'<?xml version="1.0" encoding="{declared_name(encoding)}"?>\n<{xml_root}>\n'.encode("ascii")
    if fmt == "csv" and header is not None:
        return bom + header
    return bom


def file_tail(fmt: str, xml_root: str) -> bytes:
    return f"</{xml_root}>\n".encode("ascii") if fmt == "xml" else b""
