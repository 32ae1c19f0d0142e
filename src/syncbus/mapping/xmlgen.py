"""XML writers generated per mapping: the target document written straight from the record (issue 11).

``codegen.py`` turns a mapping into builders of a dict, which the XML codec
then walks to write the document. For an XML target both steps are known
at compile time except the values: every element name, every constant, every
map-table entry and every default is fixed. So, per mapping and XML target,
this module generates one function per object of the output that reads the
record's fields (with the builder's own read, transform and map code) and
appends the finished XML text to a list: no intermediate dict, no generic
encoder, no per-record name validation or escaping of constants (constants,
defaults and map-table values are rendered once, here, by the codec itself).

Exactness is by construction, and pinned by a property test
(tests/mapping/test_xmlgen.py): the writer emits each value with the
codec's own rules, and anything it does not take the common path for --
an unusual value type goes through the codec's general emitter; an error of
any kind, an invalid character -- makes the whole record take the general
path (build, then encode), which then produces the output or the error
exactly as before. So a writer never decides an error message.

Safety is codegen's: the generated source holds only fixed templates and
integer indices; names, paths, constants and compiled transforms are passed
in as values, and ``codegen._check_source`` refuses anything else.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from ..errors import EncodeError
from ..formats import xml as xmlfmt
from ..formats.xml import XmlCodec
from .codegen import FieldPlan, _check_source, text
from .paths import MISSING
from .transforms import LookupMiss

Writer = Callable[[Any], bytes]
ObjectWriter = Callable[[Any, Any, list[str]], None]


class Unsupported(Exception):
    """This mapping's output shape is not generated (the general path serves it)."""


class Fallback(Exception):
    """This record leaves the generated writer: the general path maps it (and names any error)."""


def _no_get(_key: Any) -> None:
    return None


def _open_tag(start: str, attrs: list[str]) -> str:
    return start + "".join(attrs) + ">"


def _render_element(tags: tuple[str, str, str], value: Any, enc: str) -> str:
    """What the codec writes for one child ``value`` (elements, repeated for a list; nothing for [])."""
    out: list[str] = []
    xmlfmt._emit_value(out, tags, value, enc)
    return "".join(out)


def _render_attr(key: str, value: Any, enc: str) -> tuple[str, ...]:
    attrs: list[str] = []
    xmlfmt._attr_into(attrs, key, value, enc)
    return tuple(attrs)


def _base_namespace(enc: str) -> dict[str, Any]:
    return {
        "MISSING": MISSING, "LookupMiss": LookupMiss, "FALLBACK": Fallback, "text": text, "no_get": _no_get,
        "dict_t": dict, "list_t": list, "str_t": str, "int_t": int, "float_t": float, "dec_t": Decimal,
        "str_": str, "EMPTY": "", "AMP": "&", "LT": "<", "GT": ">", "QUOTE": '"', "ENC": enc,
        "esc": xmlfmt._esc, "emit_value": xmlfmt._emit_value, "attr_into": xmlfmt._attr_into,
        "attr_special": xmlfmt._ATTR_SPECIAL.search, "ATTR_ESC": xmlfmt._ATTR_ESCAPES, "open_tag": _open_tag,
    }


class _Gen:
    """Writes the source of one document writer: every object of the output inlined, constants merged.

    Lines are collected as ``(indent, kind, text)``: kind ``"s"`` is a constant
    piece of the document, ``"c"`` a line of code. Constant pieces that follow
    each other at the same indent run one after the other, so they are merged
    into one ``append`` (``<E1EDP19 SEGMENT="1"><QUALF>002</QUALF>`` is one
    string). Every value the code needs is an entry of the namespace under an
    index (``O12``, ``S3``): no user text is ever part of the source.
    """

    def __init__(self, enc: str) -> None:
        self.enc = enc
        self.ns = _base_namespace(enc)
        self.items: list[tuple[int, str, str]] = []
        self.n = 0  # field and object indices: unique across the whole document

    def next(self) -> int:
        self.n += 1
        return self.n

    def code(self, indent: int, line: str) -> None:
        self.items.append((indent, "c", line))

    def const(self, indent: int, piece: str) -> None:
        if piece:
            self.items.append((indent, "s", piece))

    def source(self) -> str:
        lines = ["def write(obj0, root, out):", "    append = out.append", "    extend = out.extend"]
        merged: list[tuple[int, str, str]] = []
        for item in self.items:
            if item[1] == "s" and merged and merged[-1][1] == "s" and merged[-1][0] == item[0]:
                merged[-1] = (item[0], "s", merged[-1][2] + item[2])
            else:
                merged.append(item)
        for indent, kind, piece in merged:
            line = piece
            if kind == "s":
                k = self.next()
                self.ns[f"S{k}"] = piece
                line = f"append(S{k})"
            lines.append("    " * (indent + 1) + line)
        return "\n".join(lines) + "\n"

    # -- one object of the output -----------------------------------------------------

    def node(self, plans: tuple[FieldPlan, ...], tags: tuple[str, str, str], ind: int, obj: str,
             get: str | None) -> None:
        """The element ``tags`` of one object read from the variable ``obj`` (``get``: its reader, if made)."""
        n = self.next()
        if get is None:
            get = f"get{n}"
            self.code(ind, f"{get} = {obj}.get if type({obj}) is dict_t else no_get")
        attr_plans = [p for p in plans if p.name.startswith("@")]
        static_attrs = all(p.kind == "const" and p.cond is None for p in attr_plans)
        attrs = f"attrs{n}"
        if static_attrs:
            pieces = [piece for p in attr_plans for piece in _render_attr(p.name, p.const, self.enc)]
            self.const(ind, tags[2] + "".join(pieces) + ">" if pieces else tags[0])
        else:
            self.ns[f"START{n}"] = tags[2]
            self.code(ind, f"slot{n} = len(out)")
            self.const(ind, tags[0])
            self.code(ind, f"{attrs} = []")
        for p in plans:
            if p.name.startswith("@") and static_attrs:
                continue  # in the opening tag already
            inner = ind
            if p.cond is not None:
                i = self.next()
                self.ns[f"W{i}"] = p.cond
                self.code(ind, f"if W{i}({obj}, root):")
                inner = ind + 1
            self.field(p, inner, obj, get, attrs)
        if not static_attrs:
            self.code(ind, f"if {attrs}:")
            self.code(ind + 1, f"out[slot{n}] = open_tag(START{n}, {attrs})")
        self.const(ind, tags[1])

    def field(self, p: FieldPlan, ind: int, obj: str, get: str, attrs: str) -> None:
        """One field: codegen's read / missing / transform / map logic, emitting XML instead of a dict."""
        i = self.next()
        ns, enc, name = self.ns, self.enc, p.name
        if name in ("#text", "#comment"):
            raise Unsupported(f"{name} fields are written by the general encoder")
        attr = name.startswith("@")
        if attr:
            ns[f"A{i}"] = xmlfmt._attr_prefix(name)  # validates the name (EncodeError -> no writer)
            ns[f"K{i}"] = name

            def static(value: Any) -> Any:
                return _render_attr(name, value, enc)

            def put(var: str) -> None:
                self.code(ind + 1, f"{attrs}.extend({var})")
        else:
            tags = xmlfmt._element_tags(name)  # validates the name (EncodeError -> no writer)
            ns[f"O{i}"], ns[f"C{i}"], ns[f"E{i}"], ns[f"X{i}"] = tags[0], tags[1], tags[0] + tags[1], tags

            def static(value: Any) -> Any:
                return _render_element(tags, value, enc)

            def put(var: str) -> None:
                self.code(ind + 1, f"append({var})")
        if p.kind == "const":
            if attr:
                ns[f"D{i}"] = static(p.const)
                self.code(ind, f"{attrs}.extend(D{i})")
            else:
                self.const(ind, static(p.const))
            return
        if p.kind in ("nested", "each") and attr:
            raise Unsupported("an object or list as an attribute value")
        if p.kind == "nested" and p.getter is None and p.fast_key is None:
            self.node(_plans_of(p), xmlfmt._element_tags(name), ind, obj, get)  # the same object, inlined
            return
        if p.has_default:
            ns[f"D{i}"] = static(p.default)
        self.code(ind, self.read(i, p, obj, get))
        self.code(ind, "if not v and (v is None or v is MISSING or v == EMPTY):" if p.required
                  else "if v is None or v is MISSING:")
        if p.has_default:
            put(f"D{i}")
        else:
            self.code(ind + 1, "raise FALLBACK" if p.required else "pass")
        self.code(ind, "else:")
        body = ind + 1
        if p.kind == "nested":
            self.code(body, f"o{i} = v")
            self.node(_plans_of(p), xmlfmt._element_tags(name), body, f"o{i}", None)
            return
        if p.kind == "each":
            self.code(body, "if type(v) is dict_t:")
            self.code(body + 1, "v = [v]")
            self.code(body, "elif type(v) is not list_t:")
            self.code(body + 1, "raise FALLBACK")
            self.code(body, f"for o{i} in v:")
            self.node(_plans_of(p), xmlfmt._element_tags(name), body + 1, f"o{i}", None)
            return
        if p.chain is not None:
            ns[f"T{i}"] = p.chain
            if p.has_default:  # a lookup miss takes the default; any other transform error: the general path
                self.code(body, "try:")
                self.code(body + 1, f"v = T{i}(v)")
                self.code(body, "except LookupMiss:")
                self.code(body + 1, f"{attrs}.extend(D{i})" if attr else f"append(D{i})")
                self.code(body, "else:")
                body += 1
            else:
                self.code(body, f"v = T{i}(v)")
            if p.required:
                self.code(body, "if not v and (v is None or v == EMPTY):")
                self.code(body + 1, "raise FALLBACK")
        if p.table is not None:
            ns[f"M{i}"] = {k: static(value) for k, value in p.table.items()}
            self.code(body, f"h = M{i}.get(v if type(v) is str_t else text(v), MISSING)")
            self.code(body, "if h is MISSING:")
            if p.has_default:
                self.code(body + 1, f"{attrs}.extend(D{i})" if attr else f"append(D{i})")
            else:
                self.code(body + 1, "raise FALLBACK")
            self.code(body, "else:")
            self.code(body + 1, f"{attrs}.extend(h)" if attr else "append(h)")
            return
        for line in (_emit_attr(i, attrs) if attr else _emit_element(i)):
            self.code(body, line)

    def read(self, i: int, p: FieldPlan, obj: str, get: str) -> str:
        """codegen's read of one value (``_read_code``), from this object's variables."""
        if p.read is not None:
            self.ns[f"R{i}"] = p.read
            return f"v = R{i}({obj}, root)"
        if p.fast_key is not None:
            self.ns[f"F{i}"] = p.fast_key
            return f"v = {get}(F{i})"
        self.ns[f"G{i}"] = p.getter
        return f"v = G{i}(root)" if p.absolute else f"v = G{i}({obj})"


def _document_writer(plans: tuple[FieldPlan, ...], tags: tuple[str, str, str], enc: str) -> ObjectWriter:
    """``write(obj, root, out)`` for the whole document: one generated function."""
    gen = _Gen(enc)
    gen.node(plans, tags, 0, "obj0", None)
    src = gen.source()
    _check_source(src)
    ns = gen.ns
    exec(compile(src, "<syncbus xml writer>", "exec"), ns)  # noqa: S307, RUF100 -- own checked templates
    write: ObjectWriter = ns["write"]
    return write


def _emit_element(i: int) -> list[str]:
    """One value as the codec's ``_emit_dict`` writes a child; unusual types through its general emitter."""
    return [
        "t = type(v)",
        "if t is str_t:",
        "    if AMP in v or LT in v or GT in v:",
        "        v = esc(v)",
        f"    extend((O{i}, v, C{i}))",
        "elif t is int_t or t is float_t or t is dec_t:",
        f"    extend((O{i}, str_(v), C{i}))",
        "elif v is None:",
        f"    append(E{i})",
        "else:",
        f"    emit_value(out, X{i}, v, ENC)",
    ]


def _emit_attr(i: int, attrs: str) -> list[str]:
    return [
        "if type(v) is str_t:",
        "    if not v.isalnum() and attr_special(v) is not None:",
        "        v = v.translate(ATTR_ESC)",
        f"    {attrs}.extend((A{i}, v, QUOTE))",
        "else:",
        f"    attr_into({attrs}, K{i}, v, ENC)",
    ]


def _plans_of(plan: FieldPlan) -> tuple[FieldPlan, ...]:
    plans = getattr(plan.builder, "plans", None)
    if plans is None:
        raise Unsupported("a builder without plans")
    return plans  # type: ignore[no-any-return]


def xml_writer(build: Callable[..., Any], codec: Any) -> Writer | None:
    """The generated writer of ``codec``'s document for records ``build`` maps; None: the general path only.

    Generated for the compact UTF-8 layout (the default): pretty printing and
    other encodings keep the codec. Without ``root`` the mapping must have one
    top-level object (it is the root element).
    """
    if type(codec) is not XmlCodec or codec.pretty or not codec._utf8:
        return None
    plans: tuple[FieldPlan, ...] | None = getattr(build, "plans", None)
    if plans is None:
        return None
    enc = codec.encoding
    try:
        if codec.root is not None:
            top = _document_writer(plans, xmlfmt._element_tags(codec.root), enc)
        elif (len(plans) == 1 and plans[0].kind == "nested" and plans[0].getter is None
              and plans[0].fast_key is None and plans[0].cond is None and not plans[0].name.startswith(("@", "#"))):
            top = _document_writer(_plans_of(plans[0]), xmlfmt._element_tags(plans[0].name), enc)
        else:
            return None
    except (Unsupported, EncodeError):
        return None
    prolog = codec._prolog
    control = xmlfmt._CONTROL_BYTES

    def write(obj: Any) -> bytes:
        out = [prolog]
        top(obj, obj, out)
        doc = "".join(out)
        raw = doc.encode("utf-8")  # a lone surrogate raises: the general path names the field
        if b"\x00" in raw.translate(control) or (not doc.isascii() and ("\ufffe" in doc or "\uffff" in doc)):
            raise Fallback("a character XML 1.0 does not allow")
        return raw

    write.__doc__ = f"Generated XML writer ({codec!r})"
    return write
