"""``ComponentSpec``: what one pluggable type says about itself, once, for every consumer.

Modelled on Redpanda Connect's ``service.ConfigSpec``: a type declares its
options (a pydantic model whose field descriptions are the documentation),
a summary, examples and a status, and from that single declaration syncbus
derives validation of ``connectors/*.yaml`` (with ``file:line:col``), the
reference page (``syncbus docs``), the option listing (``syncbus plugins``),
the editor JSON Schema (``schemas/connectors.schema.json``) and which options
are secrets (refused in files, never printed). Nothing about a type is
written twice, so the four can never disagree.

Secrets are derived, not listed: a field is secret when it is declared with
``json_schema_extra={"secret": True}`` or typed ``SecretStr``/``SecretBytes``.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, SecretBytes, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from ..units import format_duration, parse_duration, parse_size

Kind = Literal["source", "sink", "codec", "transform"]
KINDS: tuple[Kind, ...] = ("source", "sink", "codec", "transform")
Status = Literal["stable", "beta", "experimental", "deprecated"]
STATUSES: tuple[Status, ...] = ("stable", "beta", "experimental", "deprecated")

Path = tuple[str, ...]
ANY_ITEM = "*"  # a path segment standing for any list index or map key


@dataclass(frozen=True, slots=True)
class OptionDoc:
    """One option of a type, flattened (``auth.api_keys``), as the docs and ``syncbus plugins`` show it."""

    path: Path
    type: str
    required: bool
    default: Any  # a JSON-able value; meaningless when ``required``
    description: str
    secret: bool

    @property
    def name(self) -> str:
        return ".".join(self.path)

    def default_text(self) -> str:
        """The default as a reader would write it in YAML (``""`` when none, or shown by nested options)."""
        if self.required or self.default is None or self.type == "object":
            return ""
        if self.type == "duration" and isinstance(self.default, int | float):
            return format_duration(self.default)
        if self.type == "size" and isinstance(self.default, int):
            return format_size(self.default)
        return json.dumps(self.default, ensure_ascii=False)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "required": self.required,
                "default": None if self.required else self.default, "description": self.description,
                "secret": self.secret}


@dataclass(frozen=True)
class ComponentSpec:
    """Everything syncbus knows about one type of one kind.

    ``factory`` builds an instance: for sources and sinks it is the class,
    called with the validated ``config`` model; for codecs the codec class,
    called with the options as keywords; for transforms the step factory.
    ``origin`` says where the type came from (``builtin`` or the entry point
    ``pkg.module:Attr``), so a listing can tell people what they installed.
    """

    kind: Kind
    name: str
    summary: str
    description: str = ""
    config: type[BaseModel] | None = None
    factory: Callable[..., Any] | None = None
    examples: tuple[Mapping[str, Any], ...] = ()
    status: Status = "stable"
    origin: str = "builtin"
    signature: str | None = None  # transforms: how a step is written, e.g. "decimal(places)"
    secret_paths: frozenset[Path] = field(init=False)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"{self.kind} type {self.name!r}: status {self.status!r} is not one of "
                             f"{', '.join(STATUSES)}")
        object.__setattr__(self, "examples", tuple(dict(e) for e in self.examples))
        secrets = frozenset(o.path for o in self.options() if o.secret)
        object.__setattr__(self, "secret_paths", secrets)

    @property
    def title(self) -> str:
        """``source http_ingress``: how messages name the type."""
        return f"{self.kind} type {self.name!r}"

    def options(self) -> list[OptionDoc]:
        """Every option, nested ones flattened with dotted names, in declaration order."""
        if self.config is None:
            return []
        return list(iter_options(self.config))

    def is_secret(self, path: Sequence[str | int]) -> bool:
        """Whether an option path (list indices and map keys included) names a secret field."""
        return any(_matches(p, path) for p in self.secret_paths)

    def validate(self, data: Mapping[str, Any]) -> BaseModel:
        """The config model for an options block (``*_env`` already resolved); pydantic errors propagate."""
        if self.config is None:
            raise TypeError(f"{self.title} takes no options")
        return self.config.model_validate(dict(data))

    def to_json(self) -> dict[str, Any]:
        """The machine-readable form of ``syncbus plugins --json`` and ``syncbus docs --format json``."""
        out: dict[str, Any] = {
            "kind": self.kind, "name": self.name, "status": self.status, "origin": self.origin,
            "summary": self.summary, "description": self.description,
            "options": [o.to_json() for o in self.options()],
            "examples": [dict(e) for e in self.examples],
        }
        if self.signature is not None:
            out["signature"] = self.signature
        return out


def format_size(n: int) -> str:
    """1048576 -> "1MiB": sizes as people write them, when they are round."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return str(n)


def split_doc(obj: Any) -> tuple[str, str]:
    """(summary, description) from an object's own docstring (not a base class's): first paragraph, rest."""
    own = getattr(obj, "__doc__", None)
    doc = inspect.cleandoc(own) if isinstance(own, str) else ""
    head, _, rest = doc.strip().partition("\n\n")
    return " ".join(head.split()), rest.strip()


# --------------------------------------------------------------------------- walking a config model


def iter_options(model: type[BaseModel], prefix: Path = ()) -> Iterator[OptionDoc]:
    """Fields of ``model`` and, flattened after each, the fields of the models nested in it."""
    for name, info in model.model_fields.items():
        path = (*prefix, info.alias or name)
        nested, through = nested_model(info.annotation)
        description = info.description or ""
        if not description and nested is not None:  # an object option: its model says what it is
            description = split_doc(nested)[0]
        yield OptionDoc(path=path, type=describe_type(info.annotation, info.metadata),
                        required=info.is_required(), default=_default(info),
                        description=" ".join(description.split()), secret=is_secret_field(info))
        if nested is not None and nested is not model:
            yield from iter_options(nested, (*path, *through))


def is_secret_field(info: FieldInfo) -> bool:
    extra = info.json_schema_extra
    if isinstance(extra, dict) and extra.get("secret") is True:
        return True
    return _mentions(info.annotation, (SecretStr, SecretBytes))


def nested_model(annotation: Any) -> tuple[type[BaseModel] | None, Path]:
    """The one model an annotation holds (through ``X | None``, lists and maps), with the ``*`` segments."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, ()
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Annotated:
        return nested_model(args[0])
    if origin in (typing.Union, types.UnionType):
        found = [m for m in (nested_model(a) for a in args) if m[0] is not None]
        return found[0] if len(found) == 1 else (None, ())
    if origin in (list, tuple, set, frozenset, Sequence) and args:
        model, path = nested_model(args[0])
        return model, (ANY_ITEM, *path)
    if origin in (dict, Mapping) and len(args) == 2:
        model, path = nested_model(args[1])
        return model, (ANY_ITEM, *path)
    return None, ()


def describe_type(annotation: Any, metadata: Sequence[Any] = ()) -> str:
    """A reader's name for a field type: ``duration``, ``list of string``, ``one of: POST, PUT``."""
    for meta in metadata:
        func = getattr(meta, "func", None)
        if func is parse_duration:
            return "duration"
        if func is parse_size:
            return "size"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return describe_type(args[0], args[1:])
    if origin in (typing.Union, types.UnionType):
        parts = [describe_type(a) for a in args if a is not type(None)]
        return " or ".join(dict.fromkeys(parts))
    if origin is Literal:
        return "one of: " + ", ".join(str(a) for a in args)
    if origin in (list, tuple, set, frozenset, Sequence):
        return f"list of {describe_type(args[0])}" if args else "list"
    if origin in (dict, Mapping):
        return f"map of {describe_type(args[1])}" if len(args) == 2 else "map"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "object"
        if issubclass(annotation, bool):
            return "boolean"
        if issubclass(annotation, int):
            return "integer"
        if issubclass(annotation, float):
            return "number"
        if issubclass(annotation, str | SecretStr | SecretBytes):
            return "string"
    return "any"


def _mentions(annotation: Any, wanted: tuple[type, ...]) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, wanted):
        return True
    return any(_mentions(a, wanted) for a in typing.get_args(annotation))


def _default(info: FieldInfo) -> Any:
    if info.is_required():
        return None
    if info.default_factory is not None:
        try:
            value = info.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return None
    else:
        value = info.default
    if value is PydanticUndefined:
        return None
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


def _matches(pattern: Path, path: Sequence[str | int]) -> bool:
    if len(pattern) != len(path):
        return False
    return all(p == ANY_ITEM or p == str(q) for p, q in zip(pattern, path, strict=True))
