"""XML codec in xmltodict's dict model, both ways: safe to decode, fast to encode.

Decode produces exactly what ``xmltodict.parse(data)`` produces with its
defaults (``@name`` attributes, ``#text`` beside attributes or children,
repeated elements become lists, whitespace-only text dropped, text stripped,
namespaces not processed: prefixes stay in names and ``xmlns`` declarations are
plain ``@xmlns`` attributes, comments and processing instructions ignored).
The parser is expat, hardened beyond xmltodict's ``disable_entities`` (which
only rejects entity declarations, with a bare ValueError and no position):

* any entity declaration (general or parameter, internal or external) is
  refused: billion laughs, quadratic blowup, XXE, parameter entities;
* attribute defaults declared in a DTD are refused (they can amplify the input
  quadratically, one copy per element);
* a reference to an entity that was not declared is refused (expat would
  otherwise skip it silently when a DTD is not read);
* nothing is ever fetched: external DTDs are not read, external entity
  references raise. A plain ``<!DOCTYPE x>`` (or one naming an external DTD,
  which is ignored) is allowed, as defusedxml does with ``forbid_dtd=False``;
* size is checked before parsing and element nesting is capped.

Encode follows ``xmltodict.unparse``'s conventions so that for any dict,
``xmltodict.parse(encode(d)) == xmltodict.parse(xmltodict.unparse(d))``, but it is
a dedicated single-pass writer, many times faster. Where xmltodict would write
a document that does not parse (bad names, control characters, nested lists),
we raise EncodeError instead. Like xmltodict, a ``\\r`` in element text is
written literally, so an XML reader will see it as ``\\n``; leading/trailing
whitespace of text is not significant in this model (parse strips it).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final, NoReturn
from xml.parsers import expat

from syncbus.errors import ConfigError, DecodeError, EncodeError
from syncbus.formats.limits import (
    DEFAULT_MAX_BYTES,
    DEFAULT_XML_MAX_DEPTH,
    BytesLike,
    as_bytes,
    check_limit_options,
    check_size,
    line_col,
)

_FMT: Final = "xml"
_TEXT: Final = "#text"
_COMMENT: Final = "#comment"
_INDENT: Final = "\t"
_NEWLINE: Final = "\n"

# --------------------------------------------------------------------------- names

# XML 1.0 (5th edition) Name production; expat (which decides in the end) is
# asked too, once per distinct name, because it still uses older tables.
_NAME_START = (
    ":A-Z_a-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u02ff\u0370-\u037d\u037f-\u1fff\u200c-\u200d"
    "\u2070-\u218f\u2c00-\u2fef\u3001-\ud7ff\uf900-\ufdcf\ufdf0-\ufffd\U00010000-\U000effff"
)
_NAME_RE: Final = re.compile(f"[{_NAME_START}][{_NAME_START}\\-.0-9\u00b7\u0300-\u036f\u203f-\u2040]*")
_CACHE_MAX: Final = 8192

# element name -> ("<n>", "</n>", "<n"); attribute key "@n" -> ' n="'.
# Global caches: names repeat across records, so validation runs once per name.
_ELEMENTS: dict[str, tuple[str, str, str]] = {}
_ATTRS: dict[str, str] = {}


def _name_problem(name: Any) -> str | None:
    if not isinstance(name, str):
        return f"must be a string, got {type(name).__name__} {name!r}"
    if not name:
        return "is empty"
    if name[0].isdigit() or name[0] in "-.":
        return f"cannot start with {name[0]!r}"
    if any(ch.isspace() for ch in name):
        return "contains whitespace"
    if _NAME_RE.fullmatch(name) is None:
        bad = next((ch for ch in name if _NAME_RE.fullmatch("a" + ch) is None), name[0])
        return f"contains {bad!r}, which is not allowed in an XML name"
    return None


def _expat_accepts(snippet: str) -> bool:
    try:
        expat.ParserCreate().Parse(snippet.encode("utf-8"), True)
    except (expat.ExpatError, UnicodeEncodeError):
        return False
    return True


def _element_tags(key: Any) -> tuple[str, str, str]:
    tags = _ELEMENTS.get(key) if isinstance(key, str) else None
    if tags is not None:
        return tags
    problem = _name_problem(key)
    if problem is None and not _expat_accepts(f"<{key}/>"):
        problem = "is not accepted by XML parsers"
    if problem is not None:
        raise EncodeError(_FMT, f"invalid element name {key!r}: {problem}")
    if len(_ELEMENTS) >= _CACHE_MAX:
        _ELEMENTS.clear()
    tags = (f"<{key}>", f"</{key}>", f"<{key}")
    _ELEMENTS[key] = tags
    return tags


def _attr_prefix(key: str) -> str:
    """' name="' for an ``@name`` key."""
    prefix = _ATTRS.get(key)
    if prefix is not None:
        return prefix
    name = key[1:]
    problem = _name_problem(name)
    if problem is None and not _expat_accepts(f'<a {name}=""/>'):
        problem = "is not accepted by XML parsers"
    if problem is not None:
        raise EncodeError(_FMT, f"invalid attribute name {key!r}: {problem}")
    if len(_ATTRS) >= _CACHE_MAX:
        _ATTRS.clear()
    prefix = f' {name}="'
    _ATTRS[key] = prefix
    return prefix


# ------------------------------------------------------------------ text and escaping

_ATTR_ESCAPES: Final = str.maketrans({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;",
})
_ATTR_SPECIAL: Final = re.compile('[&<>"\n\r\t]')
# Characters XML 1.0 does not allow anywhere (not even as character references).
_INVALID_CHAR: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_CONTROL_BYTES: Final = bytes(
    0 if (b < 0x20 and b not in (0x09, 0x0A, 0x0D)) else 1 for b in range(256)
)


def _esc(s: str) -> str:
    if "&" in s:
        s = s.replace("&", "&amp;")
    if "<" in s:
        s = s.replace("<", "&lt;")
    if ">" in s:
        s = s.replace(">", "&gt;")
    return s


def _esc_attr(s: str) -> str:
    if _ATTR_SPECIAL.search(s) is None:
        return s
    return s.translate(_ATTR_ESCAPES)


def _scalar_text(value: Any, encoding: str, where: str) -> str:
    """xmltodict's ``_convert_value_to_string``; a container here is an EncodeError, not its repr()."""
    if isinstance(value, str):
        return value if type(value) is str else str.__str__(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode(encoding, errors="replace")
    if _is_container(value):
        raise EncodeError(_FMT, f"{where}: a {type(value).__name__} cannot be written as text here "
                                "(a list inside a list, or a container as #text or attribute value)")
    return str(value)


def _is_container(value: Any) -> bool:
    return isinstance(value, Mapping) or (
        hasattr(value, "__iter__") and not isinstance(value, str | bytes | bytearray | memoryview)
    )


def _is_sequence(value: Any) -> bool:
    """What xmltodict writes as repeated elements: any iterable but text, bytes and dicts."""
    return type(value) is list or (
        hasattr(value, "__iter__") and not isinstance(value, str | bytes | bytearray | memoryview | Mapping)
    )


# ------------------------------------------------------------------ compact encoder


def _emit_dict(out: list[str], tags: tuple[str, str, str], node: Mapping[Any, Any], enc: str) -> None:
    """Write one element whose value is a dict. The hot path: flat, few calls, no concatenation.

    The opening tag goes into a reserved slot and is rewritten if attributes
    turn up, so attributes may come anywhere in the dict (as in xmltodict) and
    the dict is still walked once. ``#text`` is written after the children, as
    xmltodict does. Anything unusual falls through to the general helpers.
    """
    extend = out.extend
    slot = len(out)
    out.append(tags[0])
    attrs: list[str] | None = None
    text: Any = None
    elements = _ELEMENTS
    for key, value in node.items():
        child = elements.get(key)
        if child is not None:
            vt = type(value)
            if vt is str:
                if "&" in value or "<" in value or ">" in value:
                    value = _esc(value)
                extend((child[0], value, child[1]))
            elif vt is dict:
                _emit_dict(out, child, value, enc)
            elif vt is list:
                for item in value:
                    it = type(item)
                    if it is dict:
                        _emit_dict(out, child, item, enc)
                    elif it is str:
                        if "&" in item or "<" in item or ">" in item:
                            item = _esc(item)
                        extend((child[0], item, child[1]))
                    else:
                        _emit_one(out, child, item, enc)
            elif value is None:
                extend((child[0], child[1]))
            elif vt is int or vt is float or vt is Decimal:
                extend((child[0], str(value), child[1]))
            else:
                _emit_value(out, child, value, enc)
            continue
        if not isinstance(key, str) or not key:
            _element_tags(key)  # raises, naming the key
        if key[0] == "@":
            if attrs is None:
                attrs = []
            prefix = _ATTRS.get(key)
            if prefix is not None and type(value) is str:
                if not value.isalnum() and _ATTR_SPECIAL.search(value) is not None:
                    value = value.translate(_ATTR_ESCAPES)
                attrs.append(prefix + value + '"')
            else:
                _attr_into(attrs, key, value, enc)
        elif key == _TEXT:
            text = value
        elif key == _COMMENT:
            _comments_into(out, value, enc, "", False)
        else:
            _emit_value(out, _element_tags(key), value, enc)
    if attrs:
        out[slot] = tags[2] + "".join(attrs) + ">"
    if text is not None:
        out.append(_esc(_scalar_text(text, enc, f"#text of {_tag_name(tags)!r}")))
    out.append(tags[1])


def _tag_name(tags: tuple[str, str, str]) -> str:
    return tags[2][1:]


def _emit_value(out: list[str], tags: tuple[str, str, str], value: Any, enc: str) -> None:
    """One child key: a sequence becomes repeated elements (an empty one writes nothing)."""
    if _is_sequence(value):
        for item in value:
            _emit_one(out, tags, item, enc)
    else:
        _emit_one(out, tags, value, enc)


def _emit_one(out: list[str], tags: tuple[str, str, str], value: Any, enc: str) -> None:
    if value is None:
        out.append(tags[0] + tags[1])
    elif type(value) is dict:
        _emit_dict(out, tags, value, enc)
    elif isinstance(value, Mapping):
        _emit_dict(out, tags, dict(value), enc)
    else:
        out.append(tags[0] + _esc(_scalar_text(value, enc, f"element {_tag_name(tags)!r}")) + tags[1])


def _attr_into(attrs: list[str], key: str, value: Any, enc: str) -> None:
    if key == "@xmlns" and isinstance(value, Mapping):
        for prefix, uri in value.items():
            name = f"@xmlns:{prefix}" if prefix else "@xmlns"
            attrs.append(_attr_prefix(name) + _esc_attr(_attr_text(name, uri, enc)) + '"')
        return
    attrs.append(_attr_prefix(key) + _esc_attr(_attr_text(key, value, enc)) + '"')


def _attr_text(key: str, value: Any, enc: str) -> str:
    if value is None:
        return ""
    return _scalar_text(value, enc, f"attribute {key!r}")


def _comments_into(out: list[str], value: Any, enc: str, indent: str, pretty: bool) -> None:
    for text in value if isinstance(value, list) else [value]:
        if text is None:
            continue
        body = _scalar_text(text, enc, "#comment")
        if not body:
            continue
        if "--" in body or body.endswith("-"):
            raise EncodeError(_FMT, f"comment {body[:40]!r} cannot contain '--' or end with '-'")
        if pretty:
            out.append(f"{indent}<!--{_esc(body)}-->{_NEWLINE}")
        else:
            out.append(f"<!--{_esc(body)}-->")


# ------------------------------------------------------------------- pretty encoder


def _emit_pretty(out: list[str], key: Any, value: Any, enc: str, depth: int) -> None:
    """xmltodict.unparse(pretty=True) layout: tab indent, children on their own lines."""
    if key == _COMMENT:
        _comments_into(out, value, enc, _INDENT * depth, True)
        return
    tags = _element_tags(key)
    items = value if _is_sequence(value) else [value]
    pad = _INDENT * depth
    for item in items:
        if item is None:
            item = {}
        elif not isinstance(item, Mapping):
            item = {_TEXT: _scalar_text(item, enc, f"element {key!r}")}
        attrs: list[str] = []
        text: Any = None
        children: list[tuple[Any, Any]] = []
        for ckey, cvalue in item.items():
            if ckey == _TEXT:
                text = cvalue
            elif isinstance(ckey, str) and ckey.startswith("@"):
                _attr_into(attrs, ckey, cvalue, enc)
            elif isinstance(cvalue, list) and not cvalue:
                continue
            else:
                children.append((ckey, cvalue))
        out.append(pad)
        out.append(tags[2] + "".join(attrs) + ">" if attrs else tags[0])
        if children:
            out.append(_NEWLINE)
            for ckey, cvalue in children:
                _emit_pretty(out, ckey, cvalue, enc, depth + 1)
        if text is not None:
            out.append(_esc(_scalar_text(text, enc, f"#text of {key!r}")))
        if children:
            out.append(pad)
        out.append(tags[1])
        if depth:
            out.append(_NEWLINE)


# ------------------------------------------------------------------------- decoder


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


# --------------------------------------------------------------------------- codec


class XmlCodec:
    """xmltodict-model XML. Configure once (root, layout, encoding, limits), then use per record.

    ``root``: on encode, the object is the *content* of ``<root>``; without it the
    object must have exactly one key, which is the root. Decode always returns
    ``{root_name: content}`` like ``xmltodict.parse`` (``root`` is not checked).
    ``encoding``: written in the declaration and used for the bytes on encode;
    on decode it is the fallback when the document has neither a BOM nor an
    encoding declaration. ``declaration=False`` omits ``<?xml ...?>`` (for
    fragments embedded in SOAP envelopes by a sink).
    """

    name: str = "xml"
    content_type: str = "application/xml"

    def __init__(self, root: str | None = None, pretty: bool = False, encoding: str = "utf-8", *,
                 declaration: bool = True, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_depth: int = DEFAULT_XML_MAX_DEPTH) -> None:
        check_limit_options(_FMT, max_bytes, max_depth)
        normal = _normal_encoding(encoding) if isinstance(encoding, str) else None
        if normal is None:
            raise ConfigError(f"xml codec: unknown encoding {encoding!r}")
        if root is not None:
            try:
                _element_tags(root)
            except EncodeError as exc:
                raise ConfigError(f"xml codec: root: {exc.message}") from None
        self.root = root
        self._root_tags = _element_tags(root) if root is not None else None
        self.pretty = bool(pretty)
        self.encoding = encoding
        self.declaration = declaration
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self._normal_encoding = normal
        self._utf8 = normal == "utf-8"
        self._prolog = f'<?xml version="1.0" encoding="{encoding}"?>\n' if declaration else ""

    def __repr__(self) -> str:
        return (f"XmlCodec(root={self.root!r}, pretty={self.pretty}, encoding={self.encoding!r}, "
                f"declaration={self.declaration}, max_bytes={self.max_bytes}, max_depth={self.max_depth})")

    def decode(self, data: BytesLike) -> Any:
        raw = as_bytes(_FMT, data)
        check_size(_FMT, raw, self.max_bytes)
        return _parse(raw, self.max_depth, self._normal_encoding, isinstance(data, str))

    def encode(self, obj: Any) -> bytes:
        out: list[str] = [self._prolog]
        try:
            if self._root_tags is not None and type(obj) is dict and not self.pretty:
                _emit_dict(out, self._root_tags, obj, self.encoding)  # `root` set: obj is its content
            elif type(obj) is dict and len(obj) == 1 and self.root is None and not self.pretty:
                # The common case, without building the roots list.
                ((key, value),) = obj.items()
                tags = _ELEMENTS.get(key)
                if tags is not None and type(value) is dict:
                    _emit_dict(out, tags, value, self.encoding)
                else:
                    for key, value in self._roots(obj):
                        _emit_value(out, _element_tags(key), value, self.encoding)
            elif self.pretty:
                for key, value in self._roots(obj):
                    _emit_pretty(out, key, value, self.encoding, 0)
            else:
                for key, value in self._roots(obj):
                    if key == _COMMENT:
                        _comments_into(out, value, self.encoding, "", False)
                    else:
                        _emit_value(out, _element_tags(key), value, self.encoding)
        except RecursionError:
            raise EncodeError(_FMT, "object is nested too deeply (or contains itself)") from None
        doc = "".join(out)
        if self._utf8:
            try:
                raw = doc.encode("utf-8")
            except UnicodeEncodeError:
                raise _invalid_char_error(obj, doc) from None
            if b"\x00" in raw.translate(_CONTROL_BYTES) or (
                not doc.isascii() and ("\ufffe" in doc or "\uffff" in doc)
            ):
                raise _invalid_char_error(obj, doc)
            return raw
        if _INVALID_CHAR.search(doc) is not None:
            raise _invalid_char_error(obj, doc)
        try:
            return doc.encode(self._normal_encoding)
        except UnicodeEncodeError:
            pass
        # Characters the encoding lacks become character references: fine in text and
        # attribute values, fatal in names. Rare path, so check by parsing.
        raw = doc.encode(self._normal_encoding, errors="xmlcharrefreplace")
        try:
            _parse(raw, 1_000_000, self._normal_encoding)
        except DecodeError:
            bad = next(ch for ch in doc if not _encodable(ch, self._normal_encoding))
            raise EncodeError(_FMT, f"an element or attribute name contains {bad!r}, which {self.encoding} "
                                    "cannot represent") from None
        return raw

    def _roots(self, obj: Any) -> list[tuple[Any, Any]]:
        """The (key, value) pairs at document level: exactly one root element, maybe comments."""
        if self.root is not None:
            pairs: list[tuple[Any, Any]] = [(self.root, obj)]
        elif isinstance(obj, Mapping):
            pairs = list(obj.items())
        else:
            raise EncodeError(_FMT, f"a {type(obj).__name__} needs a root element name (set root)")
        roots = [k for k, _ in pairs if k != _COMMENT]
        if len(roots) != 1:
            shown = ", ".join(repr(k) for k in roots[:5]) + (", ..." if len(roots) > 5 else "")
            raise EncodeError(_FMT, f"document must have exactly one root element, got {len(roots)}"
                                    f"{' (' + shown + ')' if roots else ''}; set root to wrap the object")
        result: list[tuple[Any, Any]] = []
        for key, value in pairs:
            if key != _COMMENT and _is_sequence(value):
                items = list(value)
                if len(items) != 1:
                    raise EncodeError(_FMT, f"root element {key!r} is a list of {len(items)} items; "
                                            "a document has exactly one root (wrap it in a dict)")
                value = items[0]
            result.append((key, value))
        return result


def _encodable(ch: str, encoding: str) -> bool:
    try:
        ch.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True


def _invalid_char_error(obj: Any, doc: str) -> EncodeError:
    """Slow path: name the field holding a character XML 1.0 cannot carry."""
    where = _find_invalid(obj, "")
    m = _INVALID_CHAR.search(doc)
    ch = f"U+{ord(m.group()):04X}" if m else "a character"
    return EncodeError(_FMT, f"{where or 'a value'} contains {ch}, which XML 1.0 does not allow")


def _find_invalid(node: Any, path: str) -> str | None:
    stack: list[tuple[Any, str]] = [(node, path)]
    while stack:
        value, here = stack.pop()
        if isinstance(value, Mapping):
            for key, child in value.items():
                if isinstance(key, str) and _INVALID_CHAR.search(key):
                    return f"key {key!r}"
                stack.append((child, f"{here}.{key}" if here else str(key)))
        elif isinstance(value, list | tuple):
            stack.extend((child, f"{here}[{i}]") for i, child in enumerate(value))
        elif isinstance(value, str) and _INVALID_CHAR.search(value):
            return f"field {here!r}"
    return None
