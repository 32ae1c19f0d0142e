"""Turning what an entry point (or a built-in table) names into a :class:`ComponentSpec`.

Plugin authors write the natural thing for each kind -- a class with a
``Config`` model for sources and sinks, a codec class whose constructor
keywords are its options, a step factory for transforms -- or hand over a
ready ``ComponentSpec``. This module is the one place that knows how each
kind describes itself, so the registry, the docs and the loader never guess.

A target that cannot describe itself raises :class:`SpecError` with a reason
a person can act on; the registry records it as a broken type instead of
failing the whole process.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from ..errors import SyncbusError
from .spec import STATUSES, ComponentSpec, Kind, split_doc


class SpecError(SyncbusError):
    """A loaded type cannot be described (no config model, no docstring, bad examples, ...)."""


def spec_for(kind: Kind, name: str, obj: Any, origin: str) -> ComponentSpec:
    """The spec of ``obj`` registered as ``kind`` type ``name``; raises :class:`SpecError`."""
    if isinstance(obj, ComponentSpec):
        if obj.kind != kind:
            raise SpecError(f"{origin} is a {obj.kind} spec, registered as a {kind}")
        return obj
    if kind in ("source", "sink"):
        return class_spec(kind, name, obj, origin)
    if kind == "codec":
        return codec_spec(name, obj, origin)
    return transform_spec(name, obj, origin)


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def class_spec(kind: Kind, name: str, cls: Any, origin: str) -> ComponentSpec:
    """A source or sink class: ``Config`` model, docstring, ClassVars ``examples`` and ``status``."""
    from ..sinks.base import SinkConfig
    from ..sources.base import SourceConfig

    base: type[BaseModel] = SourceConfig if kind == "source" else SinkConfig
    if not isinstance(cls, type):
        raise SpecError(f"{origin} is not a class")
    config = getattr(cls, "Config", None)
    if not (isinstance(config, type) and issubclass(config, base)):
        raise SpecError(f"{kind} type {name!r} ({_qualname(cls)}) has no Config model derived from "
                        f"{base.__name__}")
    summary, description = split_doc(cls)
    if not summary:
        summary, description = split_doc(config)
    return ComponentSpec(kind=kind, name=name, summary=summary, description=description, config=config,
                         factory=cls, examples=_examples(getattr(cls, "examples", ()), origin),
                         status=_status(getattr(cls, "status", "stable"), origin), origin=origin)


def _examples(value: Any, origin: str) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(e, Mapping) for e in value):
        raise SpecError(f"{origin}: examples must be a list of option mappings")
    return tuple(value)


def _status(value: Any, origin: str) -> Any:
    if value not in STATUSES:
        raise SpecError(f"{origin}: status {value!r} is not one of {', '.join(STATUSES)}")
    return value


# --------------------------------------------------------------------------- codecs

# The built-in codecs' constructors are documented in prose (formats/*.py); these
# are the one-line option descriptions the reference shows.
CODEC_OPTION_DOCS: dict[str, str] = {
    "root": "XML: the root element written around the mapped object (e.g. ORDERS05).",
    "pretty": "XML: indent the output.",
    "encoding": "Text encoding of the bytes (e.g. gbk); XML writes it in the declaration.",
    "declaration": "XML: write the <?xml ...?> declaration.",
    "max_bytes": "Largest payload decoded; bigger input is refused before parsing.",
    "max_depth": "Deepest nesting accepted on decode.",
    "delimiter": "CSV: the field separator (one character).",
    "quotechar": "CSV: the quote character (one character).",
    "columns": "CSV: the columns and their order (on decode without a header: their names).",
    "header": "CSV: the first row names the columns.",
    "lineterminator": "CSV: the line end written, \\r\\n or \\n.",
}

CODEC_SUMMARIES: dict[str, tuple[str, str]] = {
    "json": ("JSON documents: one object per record, or arrays and JSON Lines as batches at the ingress.",
             "Numbers keep their exact text (decimals never go through binary floats); input over "
             "`max_bytes` or nested deeper than `max_depth` is refused before it becomes objects."),
    "xml": ("XML in xmltodict's model: `@name` attributes, `#text` beside them, lists as repeated elements.",
            "Entities, DTDs and external references are refused. On encode, `root` names the element "
            "the mapped object goes into (e.g. an IDoc's `ORDERS05`)."),
    "csv": ("CSV files: one record per row, an object keyed by the header's column names in column order.",
            "`delimiter`, `quotechar` and `encoding` (e.g. gbk) follow the file; without a header "
            "`columns` names the fields."),
}

CODEC_EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "json": [{"max_depth": 32, "max_bytes": 1048576}],
    "xml": [{"root": "ORDERS05"}, {"root": "Envelope", "declaration": False, "encoding": "utf-8"}],
    "csv": [{"delimiter": ";", "encoding": "gbk"}, {"columns": ["emp_id", "name"], "header": False}],
}


def codec_options_model(name: str, cls: type) -> type[BaseModel]:
    """A pydantic model of a codec's constructor keywords, so codecs document themselves like the rest."""
    hints = typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    fields: dict[str, Any] = {}
    for param in list(inspect.signature(cls.__init__).parameters.values())[1:]:  # type: ignore[misc]
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(param.name, Any)
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (annotation, Field(default, description=CODEC_OPTION_DOCS.get(param.name, "")))
    model: type[BaseModel] = create_model(
        f"{name.capitalize()}CodecOptions", __config__=ConfigDict(extra="forbid"), **fields)
    return model


def codec_spec(name: str, cls: Any, origin: str) -> ComponentSpec:
    """A codec class: ``name``/``content_type`` attributes, ``decode``/``encode``, keyword options."""
    if not isinstance(cls, type) or not all(callable(getattr(cls, m, None)) for m in ("decode", "encode")):
        raise SpecError(f"codec type {name!r} ({origin}) is not a class with decode() and encode()")
    config = getattr(cls, "Config", None)
    if not (isinstance(config, type) and issubclass(config, BaseModel)):
        try:
            config = codec_options_model(name, cls)
        except (TypeError, NameError) as exc:
            raise SpecError(f"codec type {name!r} ({origin}): cannot read its options: {exc}") from exc
    summary, description = CODEC_SUMMARIES.get(name, ("", "")) if origin == "builtin" else ("", "")
    if not summary:
        summary, description = split_doc(cls)
    content_type = getattr(cls, "content_type", None)
    if content_type:
        description = (f"Content type: `{content_type}`.\n\n{description}").strip()
    examples = getattr(cls, "examples", None)
    if examples is None:
        examples = CODEC_EXAMPLES.get(name, []) if origin == "builtin" else []
    return ComponentSpec(kind="codec", name=name, summary=summary, description=description, config=config,
                         factory=cls, examples=_examples(examples, origin),
                         status=_status(getattr(cls, "status", "stable"), origin), origin=origin)


# --------------------------------------------------------------------------- transforms


def transforms_module() -> Any | None:
    """``syncbus.mapping.transforms``, or None while it cannot be imported (reported by the caller)."""
    try:
        return importlib.import_module("syncbus.mapping.transforms")
    except ImportError:
        return None


def transform_spec(name: str, obj: Any, origin: str, docs: Mapping[str, Any] | None = None) -> ComponentSpec:
    """A transform step: a registered ``TransformDef`` or a plugin's step factory.

    A plugin factory is registered into the mapping language here (built-ins
    and steps registered earlier keep their name), so what ``syncbus plugins``
    lists is also what mappings can use.
    """
    tmod = transforms_module()
    if tmod is None:
        raise SpecError(f"transform {name!r} ({origin}): syncbus.mapping.transforms cannot be imported")
    registered: Mapping[str, Any] = getattr(tmod, "TRANSFORMS", {})
    tdef: Any = obj if isinstance(obj, getattr(tmod, "TransformDef", ())) else None
    if tdef is None:
        if not callable(obj):
            raise SpecError(f"transform {name!r} ({origin}) is not a step factory")
        existing = registered.get(name)
        if existing is not None and existing.factory is not obj:
            raise SpecError(f"transform {name!r} ({origin}) is already defined by {_qualname(existing.factory)}")
        try:
            tdef = existing or tmod.register_transform(name, obj)
        except tmod.TransformSpecError as exc:
            raise SpecError(f"transform {name!r} ({origin}): {exc}") from exc
    doc = (docs or {}).get(name)
    summary = str(getattr(doc, "description", "") or getattr(tdef, "doc", ""))
    signature = str(getattr(doc, "signature", "") or getattr(tdef, "usage", name))
    details = str(getattr(doc, "details", "") or getattr(tdef, "details", ""))
    examples: list[Mapping[str, Any]] = []
    chain = getattr(doc, "example", None)
    if chain:
        examples.append({"chain": str(chain), "input": getattr(doc, "example_input", None),
                         "output": getattr(doc, "example_output", None)})
    return ComponentSpec(kind="transform", name=name, summary=summary, description=details,
                         factory=tdef.factory, examples=tuple(examples), signature=signature, origin=origin)


def transform_docs() -> dict[str, Any]:
    """``mapping.transforms.transform_docs()`` by name, when that module offers it (else empty)."""
    provider: Callable[[], Any] | None = getattr(transforms_module(), "transform_docs", None)
    if provider is None:
        return {}
    try:
        items = provider()
    except Exception:  # docs are optional; the listing falls back to the registered one-liners
        return {}
    if isinstance(items, Mapping):
        return dict(items)
    return {str(getattr(d, "name", "")): d for d in items if getattr(d, "name", None)}
