"""The hardened XML decoder: expat with every DTD amplification and fetch refused.

Split out of :mod:`syncbus.formats.xml` (see its docstring for what is refused
and the tree it builds, the same as ``xmltodict.parse``): this module only
reads -- the document's encoding, the expat guards, and the tree builder. It
depends on nothing of the encoder; the encoder's rare non-UTF-8 path calls
``_parse`` (through the codec) to check what it wrote.
"""

from __future__ import annotations

import codecs
import re
from typing import Any, Final, NoReturn
from xml.parsers import expat

from syncbus.errors import DecodeError
from syncbus.formats.limits import line_col
from syncbus.formats.xml_names import _FMT, _TEXT


class _Refused(Exception):
    """Raised from expat callbacks; turned into a DecodeError with the position it was raised at."""

    def __init__(self, reason: str, line: int, column: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line
        self.column = column


_MISSING: Final = object()
# Codecs that are "text encodings" to Python but make no sense for a document.
_NOT_DOCUMENT_ENCODINGS: Final = frozenset({"unicode-escape", "raw-unicode-escape", "idna", "punycode"})
_XML_DECL_ENCODING: Final = re.compile(
    rb"<\?xml[^>]{0,200}?encoding\s*=\s*[\"']([A-Za-z][A-Za-z0-9._-]{0,40})[\"']"
)
_INVALID_TOKEN: Final = expat.errors.codes[expat.errors.XML_ERROR_INVALID_TOKEN]
_TRUNCATION_ERRORS: Final = frozenset(
    expat.errors.codes[msg] for msg in (
        expat.errors.XML_ERROR_NO_ELEMENTS, expat.errors.XML_ERROR_UNCLOSED_TOKEN,
        expat.errors.XML_ERROR_PARTIAL_CHAR, expat.errors.XML_ERROR_UNCLOSED_CDATA_SECTION,
    )
)


def _normal_encoding(name: str) -> str | None:
    try:
        info = codecs.lookup(name)
    except LookupError:
        return None
    if info.name in _NOT_DOCUMENT_ENCODINGS or not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def _document_encoding(raw: bytes, fallback: str) -> str:
    """BOM, then the XML declaration, then the codec's configured encoding."""
    if raw.startswith(b"\xef\xbb\xbf"):
        return "utf-8"
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    m = _XML_DECL_ENCODING.match(raw, 0, 300)
    if m is not None:
        declared = m.group(1).decode("ascii")
        normal = _normal_encoding(declared)
        if normal is None:
            raise DecodeError(_FMT, f"line 1: unknown or unsupported encoding {declared!r} declared")
        return normal
    return fallback


def _install_guards(parser: Any) -> None:
    """Refuse every DTD feature that can amplify input or reach outside the document.

    Each guard records the parser position *before* raising: once a handler
    raises, expat's notion of "current position" moves on.
    """

    def refuse(message: str) -> NoReturn:
        raise _Refused(message, parser.CurrentLineNumber, parser.CurrentColumnNumber + 1)

    def entity(name: str, is_parameter: bool, value: str | None, base: str | None,
               system_id: str | None, public_id: str | None, notation: str | None) -> None:
        kind = "parameter entity" if is_parameter else "entity"
        where = f" (external: {system_id!r})" if system_id else ""
        refuse(f"{kind} declaration {name!r}{where} refused: DTD entities are not allowed")

    def unparsed(name: str, base: str | None, system_id: str, public_id: str | None, notation: str) -> None:
        refuse(f"unparsed entity declaration {name!r} refused: DTD entities are not allowed")

    def external(context: str, base: str | None, system_id: str | None, public_id: str | None) -> None:
        refuse(f"external entity {system_id!r} refused: nothing is fetched")

    def skipped(name: str, is_parameter: bool) -> None:
        refuse(f"reference to undeclared entity {name!r}")

    def attlist(element: str, attribute: str, type_: str | None, default: str | None, required: int) -> None:
        if default is not None:
            refuse(f"DTD default value for attribute {attribute!r} of <{element}> refused")

    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.EntityDeclHandler = entity
    parser.UnparsedEntityDeclHandler = unparsed
    parser.ExternalEntityRefHandler = external
    parser.SkippedEntityHandler = skipped
    parser.AttlistDeclHandler = attlist


def _parse(raw: bytes, max_depth: int, fallback_encoding: str, is_text: bool = False) -> Any:
    # Decoded text (a str) was re-encoded as UTF-8 by the caller: its declaration no longer applies.
    encoding = "utf-8" if is_text else _document_encoding(raw, fallback_encoding)
    if encoding != "utf-8":
        # expat only knows UTF-8/16, Latin-1 and ASCII, and no multi-byte legacy
        # encodings (GBK, GB18030, Shift-JIS): transcode strictly, then parse as UTF-8.
        try:
            raw = raw.decode(encoding).encode("utf-8", errors="surrogatepass")
        except UnicodeDecodeError as exc:
            line, col = line_col(raw, exc.start, encoding)
            bad = raw[exc.start:exc.end]
            raise DecodeError(_FMT, f"line {line}, column {col} (byte {exc.start}): "
                                    f"invalid {encoding} byte sequence {bad!r}") from None
    # Always UTF-8 by now; as the protocol encoding it overrides whatever the
    # declaration says, so expat never consults its unknown-encoding hook.
    parser = expat.ParserCreate("utf-8", None)

    parser.ordered_attributes = True
    parser.buffer_text = True
    parser.buffer_size = 65536
    _install_guards(parser)

    # Same tree as xmltodict's _DictSAXHandler with default options, without its
    # per-call option checks.
    stack: list[tuple[Any, list[str]]] = []
    item: Any = None
    data: list[str] = []

    def start(name: str, attrs: list[str]) -> None:
        nonlocal item, data
        if len(stack) >= max_depth:
            raise _Refused(f"nesting deeper than {max_depth} elements",
                           parser.CurrentLineNumber, parser.CurrentColumnNumber + 1)
        stack.append((item, data))
        if attrs:
            it = iter(attrs)
            item = {"@" + k: v for k, v in zip(it, it, strict=True)}
        else:
            item = None
        data = []

    def end(name: str) -> None:
        nonlocal item, data
        text = ("".join(data).strip() or None) if data else None
        current = item
        item, data = stack.pop()
        if current is not None:
            if text:
                current[_TEXT] = text
            value = current
        else:
            value = text
        if item is None:
            item = {name: value}
        else:
            old = item.get(name, _MISSING)
            if old is _MISSING:
                item[name] = value
            elif type(old) is list:
                old.append(value)
            else:
                item[name] = [old, value]

    def characters(chunk: str) -> None:
        data.append(chunk)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = characters
    try:
        parser.Parse(raw, True)
    except _Refused as exc:
        raise DecodeError(_FMT, f"line {exc.line}, column {exc.column}: {exc.reason}") from None
    except expat.ExpatError as exc:
        message = expat.ErrorString(exc.code)
        if exc.code == _INVALID_TOKEN and encoding == "utf-8":
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as uexc:
                line, col = line_col(raw, uexc.start)
                raise DecodeError(_FMT, f"line {line}, column {col} (byte {uexc.start}): invalid UTF-8 "
                                        f"byte sequence {raw[uexc.start:uexc.end]!r}") from None
        if exc.code in _TRUNCATION_ERRORS and raw.strip():
            message += " (truncated document?)"
        raise DecodeError(_FMT, f"line {exc.lineno}, column {exc.offset + 1}: {message}") from None
    return item
