"""XML names and the xmltodict model's reserved keys, shared by the decoder and the encoder.

Split out of :mod:`syncbus.formats.xml` (see its docstring for the codec as a
whole). This is the bottom layer: the ``#text``/``#comment`` keys, and the
validated, cached element and attribute names. The encoder (``xml_encode``)
and the codec facade (``xml``) import from here; nothing here imports them.
The caches are module globals mutated in place (never rebound), so every
module that imported them sees the same dicts.
"""

from __future__ import annotations

import re
from typing import Any, Final
from xml.parsers import expat

from syncbus.errors import EncodeError

_FMT: Final = "xml"
_TEXT: Final = "#text"
_COMMENT: Final = "#comment"

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
