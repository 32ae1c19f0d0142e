"""The XML encoder: a single-pass writer following ``xmltodict.unparse``'s conventions.

Split out of :mod:`syncbus.formats.xml` (see its docstring for the contract):
this module only writes -- escaping, the compact writer (the hot path, also
called by the generated writers of ``mapping/xmlgen.py`` through the facade),
the pretty writer, and the slow paths that name the field holding a
character XML cannot carry. It reads names from ``xml_names`` and knows
nothing about decoding.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from syncbus.errors import EncodeError
from syncbus.formats import xml_names as _xml_names
from syncbus.formats.xml_names import (
    _COMMENT,
    _ELEMENTS,
    _FMT,
    _TEXT,
    _attr_prefix,
    _element_tags,
)

# Bound by assignment, not imported: CPython 3.11 compiles ``name.method()`` on a name bound by an
# import as a module attribute lookup (LOAD_ATTR, a bound method per call) rather than LOAD_METHOD,
# which costs ~3% of encode here (``_ATTRS.get`` in ``_emit_dict``). Same dict, mutated in place.
_ATTRS = _xml_names._ATTRS

_INDENT: Final = "\t"
_NEWLINE: Final = "\n"

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
