"""Pydantic's validation errors, said in the words of a config file: option names, not model internals.

Shared by the connectors loader (which adds ``file:line:col``) and the sink
registry's ``sink_config`` (which raises with the option path), so a wrong
option reads the same wherever it is found.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

Loc = tuple[str | int, ...]


def format_loc(loc: Loc) -> str:
    """("retry", "attempts") -> "retry.attempts"; ("headers", 0) -> "headers[0]"."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def problems(model: type[BaseModel], exc: ValidationError, *, env_hint: bool = False) -> list[tuple[Loc, str]]:
    """(loc, message) per error, loc relative to the validated block, messages naming options.

    ``env_hint`` adds "(or x_env)" to missing options: true for connector
    files, where every option may come from the environment.
    """
    out: list[tuple[Loc, str]] = []
    for err in exc.errors(include_url=False):
        loc: Loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-", "<"))))
        kind = err["type"]
        msg = str(err["msg"])
        if kind == "extra_forbidden":
            owner = model_at(model, loc[:-1])
            msg = f"unknown option {loc[-1]!r}"
            if owner is not None:
                known = list(owner.model_fields)
                msg += f" (known options: {', '.join(known)})"
                close = difflib.get_close_matches(str(loc[-1]), known, n=1)
                if close:
                    msg += f"; did you mean {close[0]!r}?"
        elif kind == "missing":
            msg = "required option missing"
            if env_hint and loc and isinstance(loc[-1], str):
                msg += f" (give {loc[-1]} or {loc[-1]}_env)"
        elif kind in ("value_error", "assertion_error"):
            msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        out.append((loc, msg))
    return out


def model_at(model: type[BaseModel], path: Loc) -> type[BaseModel] | None:
    """The nested model a loc points into, through ``X | None``, lists and maps; None when unclear."""
    current: type[BaseModel] = model
    pending: Any = None
    for part in path:
        if pending is not None:  # inside a list or map of models: the index/key selects an item
            current, pending = pending, None
            continue
        if not isinstance(part, str) or part not in current.model_fields:
            return None
        nested, through_container = _model_in(current.model_fields[part].annotation)
        if nested is None:
            return None
        if through_container:
            pending = nested
        else:
            current = nested
    return None if pending is not None else current


def _model_in(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        found = [m for m in (_model_in(a) for a in args) if m[0] is not None]
        return found[0] if len(found) == 1 else (None, False)
    if origin in (list, tuple, set, frozenset) and args:
        return _model_in(args[0])[0], True
    if origin is dict and len(args) == 2:
        return _model_in(args[1])[0], True
    return None, False
