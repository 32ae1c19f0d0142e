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

The code is split by direction, the modules importing in one direction only
(``xml_names`` ← ``xml_encode``/``xml_decode`` ← this module):
``xml_names`` holds the reserved keys and the validated, cached XML names
both sides use; ``xml_encode`` the writers (the hot compact path, the pretty
layout, reporting an invalid character); ``xml_decode`` the hardened reader
(document encoding, the expat guards, the tree builder). This module keeps
:class:`XmlCodec`, which ties them together, and re-exports the encoder
internals that ``mapping/xmlgen.py``'s generated writers call as
``xml._emit_value`` etc.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from syncbus.errors import ConfigError, DecodeError, EncodeError
from syncbus.formats import xml_encode as _xml_encode
from syncbus.formats import xml_names as _xml_names
from syncbus.formats.limits import (
    DEFAULT_MAX_BYTES,
    DEFAULT_XML_MAX_DEPTH,
    BytesLike,
    as_bytes,
    check_limit_options,
    check_size,
)
from syncbus.formats.xml_decode import _normal_encoding, _parse
from syncbus.formats.xml_encode import (
    _ATTR_ESCAPES,
    _ATTR_SPECIAL,
    _CONTROL_BYTES,
    _attr_into,
    _comments_into,
    _emit_dict,
    _emit_pretty,
    _emit_value,
    _encodable,
    _esc,
    _invalid_char_error,
    _is_sequence,
)
from syncbus.formats.xml_names import (
    _ATTRS,
    _CACHE_MAX,
    _COMMENT,
    _FMT,
    _attr_prefix,
    _element_tags,
)

# Bound by assignment, not imported: CPython 3.11 compiles ``name.method()`` on a name bound by an
# import as a module attribute lookup (LOAD_ATTR, a bound method per call) rather than LOAD_METHOD;
# ``encode`` calls ``_ELEMENTS.get`` per record. The same objects as in xml_names/xml_encode.
_ELEMENTS = _xml_names._ELEMENTS
_INVALID_CHAR = _xml_encode._INVALID_CHAR

# XmlCodec is the API; the private names are re-exported for mapping/xmlgen.py (its generated
# writers call the encoder's internals) and for tests that look at the name caches.
__all__ = [
    "_ATTRS",
    "_ATTR_ESCAPES",
    "_ATTR_SPECIAL",
    "_CACHE_MAX",
    "_CONTROL_BYTES",
    "_ELEMENTS",
    "XmlCodec",
    "_attr_into",
    "_attr_prefix",
    "_element_tags",
    "_emit_value",
    "_esc",
]

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
