"""Object builders generated as Python functions, one per object in a mapping.

A mapping is compiled once and run for every record, so the per-record loop
is worth specialising: one straight-line function per object, with the field
rules (missing → default/required, transform, map) written out instead of
interpreted from a list. Measured on the reference order, this is about twice
as fast as a loop over step closures.

Safety: nothing a user wrote ever becomes source text. The generated code
contains only fixed templates and integer indices (``K3``, ``T3``); field
names, paths, defaults and compiled transforms are passed in as *values*
through the function's namespace. ``_check_source`` enforces this.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import MappingError, TransformError
from .paths import MISSING
from .transforms import LookupMiss, to_text

Builder = Callable[[Any, Any], dict[str, Any]]
Kind = Literal["const", "value", "nested", "each"]


@dataclass
class FieldPlan:
    """Everything the generator needs to know about one target field."""

    name: str
    kind: Kind
    source: str | None = None          # source path text (for error messages)
    fast_key: str | None = None        # one-segment relative path: read with dict.get
    getter: Callable[[Any], Any] | None = None
    absolute: bool = False             # getter reads from the record root
    read: Callable[[Any, Any], Any] | None = None  # expr: (obj, root) -> value
    const: Any = None
    chain: Callable[[Any], Any] | None = None
    table: dict[str, Any] | None = None
    has_default: bool = False
    default: Any = None
    required: bool = False
    builder: Builder | None = None     # nested / each
    cond: Callable[[Any, Any], bool] | None = None  # field-level `when`: (obj, root) -> keep the field?


def text(value: Any) -> str:
    """Canonical text of a value, for map-table keys and record keys."""
    try:
        return to_text(value)
    except TransformError:
        return str(value)


def _required(name: str, source: str | None) -> MappingError:
    return MappingError(name, "required value is missing", source)


def _required_empty(name: str, source: str | None) -> MappingError:
    return MappingError(name, "required value is empty after the transform", source)


def _nested_error(name: str, exc: MappingError) -> MappingError:
    return MappingError(f"{name}.{exc.field}", exc.reason, exc.source)


def _each_error(name: str, items: list[Any], builder: Builder, root: Any) -> MappingError:
    """Find which item failed (error path only) so the message names it."""
    for i, item in enumerate(items):
        try:
            builder(item, root)
        except MappingError as exc:
            return MappingError(f"{name}[{i}].{exc.field}", exc.reason, exc.source)
    return MappingError(name, "mapping an item failed")


def _not_a_list(name: str, source: str | None, items: Any) -> MappingError:
    return MappingError(name, f"expected a list, got {type(items).__name__}", source)


def _not_in_map(name: str, value: Any, source: str | None) -> MappingError:
    return MappingError(name, f"value {value!r} is not in the map and there is no default", source)


def _no_get(_key: Any) -> None:
    return None


_SAFE_SOURCE = re.compile(r"^[\sA-Za-z0-9_.,:=(){}\[\]]*$")


def _check_source(src: str) -> None:
    # Every line comes from the templates below; user text never appears. A quote
    # or any character outside this set would mean that invariant was broken.
    if not _SAFE_SOURCE.match(src):
        raise RuntimeError("generated builder contains unexpected characters")


def generate_builder(plans: list[FieldPlan]) -> Builder:
    ns: dict[str, Any] = {
        "MISSING": MISSING, "MappingError": MappingError, "TransformError": TransformError,
        "LookupMiss": LookupMiss, "text": text, "required": _required, "required_empty": _required_empty,
        "nested_error": _nested_error,
        "each_error": _each_error, "not_a_list": _not_a_list, "not_in_map": _not_in_map, "no_get": _no_get,
        "deepcopy": copy.deepcopy,
        "dict_t": dict, "list_t": list, "str_t": str, "EMPTY": "",
    }
    lines = [
        "def build(obj, root):",
        "    get = obj.get if type(obj) is dict_t else no_get",
        "    out = {}",
    ]
    for i, p in enumerate(plans):
        ns[f"K{i}"] = p.name
        ns[f"N{i}"] = p.name
        ns[f"P{i}"] = p.source
        ns[f"D{i}"] = p.default
        code = _field_code(i, p, ns)
        if p.cond is not None:
            ns[f"W{i}"] = p.cond
            code = [f"if W{i}(obj, root):", *("    " + line for line in code)]
        lines.extend("    " + line for line in code)
    lines.append("    return out")
    src = "\n".join(lines) + "\n"
    _check_source(src)
    exec(compile(src, "<syncbus mapping builder>", "exec"), ns)  # noqa: S307, RUF100 -- own checked templates
    build: Builder = ns["build"]
    build.__doc__ = "Generated: " + ", ".join(p.name for p in plans)
    build.plans = tuple(plans)  # type: ignore[attr-defined]  # read by xmlgen.py: the shape of the output
    return build


def _read_code(i: int, p: FieldPlan, ns: dict[str, Any], var: str = "v") -> list[str]:
    if p.read is not None:
        ns[f"R{i}"] = p.read
        return [f"{var} = R{i}(obj, root)"]
    if p.fast_key is not None:
        ns[f"F{i}"] = p.fast_key
        return [f"{var} = get(F{i})"]
    ns[f"G{i}"] = p.getter
    return [f"{var} = G{i}(root)" if p.absolute else f"{var} = G{i}(obj)"]


def _missing_code(i: int, p: FieldPlan) -> list[str]:
    if p.has_default:
        return [f"    out[K{i}] = D{i}"]
    if p.required:
        return [f"    raise required(N{i}, P{i})"]
    return ["    pass"]


def _field_code(i: int, p: FieldPlan, ns: dict[str, Any]) -> list[str]:
    if p.kind == "const":
        ns[f"C{i}"] = p.const
        if isinstance(p.const, dict | list):
            return [f"out[K{i}] = deepcopy(C{i})"]
        return [f"out[K{i}] = C{i}"]
    if p.kind == "nested" and p.getter is None and p.fast_key is None:
        ns[f"B{i}"] = p.builder
        return [
            "try:",
            f"    out[K{i}] = B{i}(obj, root)",
            "except MappingError as exc:",
            f"    raise nested_error(N{i}, exc) from None",
        ]
    code = _read_code(i, p, ns)
    # required: absent, null and "" are all "no value" (DESIGN §4)
    # (`not v` first: a present value, the common case, then costs one truth test)
    code.append("if not v and (v is None or v is MISSING or v == EMPTY):" if p.required
                else "if v is None or v is MISSING:")
    code.extend(_missing_code(i, p))
    code.append("else:")
    if p.kind == "nested":
        ns[f"B{i}"] = p.builder
        code += [
            "    try:",
            f"        out[K{i}] = B{i}(v, root)",
            "    except MappingError as exc:",
            f"        raise nested_error(N{i}, exc) from None",
        ]
        return code
    if p.kind == "each":
        ns[f"B{i}"] = p.builder
        code += [
            "    if type(v) is dict_t:",
            "        v = [v]",
            "    elif type(v) is not list_t:",
            f"        raise not_a_list(N{i}, P{i}, v)",
            "    try:",
            f"        out[K{i}] = [B{i}(item, root) for item in v]",
            "    except MappingError:",
            f"        raise each_error(N{i}, v, B{i}, root) from None",
        ]
        return code
    # a value: transform chain, then the inline map table
    assign = _assign_code(i, p, ns)
    if p.chain is None:
        return code + ["    " + line for line in assign]
    ns[f"T{i}"] = p.chain
    code += [
        "    try:",
        f"        v = T{i}(v)",
    ]
    if p.has_default:
        code += [
            "    except LookupMiss:",
            f"        out[K{i}] = D{i}",
        ]
    code += [
        "    except TransformError as exc:",
        f"        raise MappingError(N{i}, str(exc), P{i}) from None",
        "    else:",
    ]
    if p.required:
        code += [
            "        if not v and (v is None or v == EMPTY):",
            f"            raise required_empty(N{i}, P{i})",
        ]
    return code + ["        " + line for line in assign]


def _assign_code(i: int, p: FieldPlan, ns: dict[str, Any]) -> list[str]:
    if p.table is None:
        return [f"out[K{i}] = v"]
    ns[f"M{i}"] = p.table
    miss = f"    out[K{i}] = D{i}" if p.has_default else f"    raise not_in_map(N{i}, v, P{i})"
    return [
        f"h = M{i}.get(v if type(v) is str_t else text(v), MISSING)",
        "if h is MISSING:",
        miss,
        "else:",
        f"    out[K{i}] = h",
    ]
