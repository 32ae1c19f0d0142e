"""Compile a validated MappingSpec into plain callables.

Everything that can be decided once is decided here: paths become getters,
transform chains become functions, CEL becomes programs, JSON Schemas become
validators, codecs are configured. Per record, ``CompiledMapping.apply`` only
walks a list of prepared steps.

Field semantics (DESIGN §4):
* a missing or null source value gives no target field, unless ``default``;
  ``required: true`` makes it, and the empty string, a mapping error;
* a nested object is a nested mapping without spec keywords (or ``fields:``);
  a field-level ``when`` leaves the field out when it is false;
* the value goes through ``transform`` first, then through ``map``; a value not
  in ``map`` (or a lookup miss) takes ``default``, else it is a mapping error;
* objects keep the field order of the mapping file;
* ``version`` equals the newest changelog entry's version.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ConfigErrors, Location, MappingError
from ..formats import Codec, make_codec
from .codegen import Builder, FieldPlan, Kind, generate_builder, text
from .expressions import Expression, ExpressionError, ExpressionSpecError
from .fastmap import map_fast  # issue 11
from .lookups import LookupTables
from .paths import MISSING, PathError, compile_getter, parse_path
from .schemas import CompiledSchema, load_schema
from .spec import FieldSpec, MappingSpec, TargetSpec
from .transforms import TransformSpecError, compile_chain

Where = Callable[[tuple[Any, ...]], Location]


@dataclass(slots=True)
class CompiledTarget:
    index: int
    sink: str
    format: str
    codec: Codec
    when: Expression | None
    schema: CompiledSchema | None
    spec: TargetSpec

    @property
    def content_type(self) -> str:
        return self.codec.content_type


@dataclass(slots=True)
class Output:
    """One mapped object ready for one target."""

    target: CompiledTarget
    payload: Any
    body: bytes


@dataclass(slots=True)
class MapResult:
    key: str | None
    outputs: list[Output]
    skipped: bool = False  # `when` (route or every target) filtered the record out


@dataclass
class CompiledMapping:
    spec: MappingSpec
    path: str
    input_schema: CompiledSchema | None
    when: Expression | None
    key: Callable[[Any], Any] | None
    build: Callable[[Any, Any], dict[str, Any]]
    targets: list[CompiledTarget]
    source_format: str | None = None
    _decoders: dict[str, Codec] = field(default_factory=dict)
    # issue 9 (hot reload): what the route was compiled from, so a reload swaps it when any of it changed
    fingerprint: str = ""                # sha256 of the mapping text + the schemas and lookup tables it uses
    files: tuple[str, ...] = ()          # the files read: the mapping, its schemas and lookup tables
    # issue 11: per target, a generated XML writer (xmlgen.py) or None; () when no target has one
    writers: tuple[Any, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from .xmlgen import xml_writer

        writers = tuple(xml_writer(self.build, t.codec) if t.format == "xml" else None for t in self.targets)
        self.writers = writers if any(w is not None for w in writers) else ()

    @property
    def name(self) -> str:
        return self.spec.mapping

    @property
    def version(self) -> int:
        return self.spec.version

    @property
    def owner(self) -> str:
        return self.spec.owner

    @property
    def topic(self) -> str:
        return self.spec.source.topic

    def decoder(self, content_type: str | None) -> Codec:
        """The codec for a record: the route's declared format, else its content type."""
        from ..formats import codec_for_content_type

        name = self.source_format or (content_type or "application/json")
        codec = self._decoders.get(name)
        if codec is None:
            codec = make_codec(name) if self.source_format else codec_for_content_type(name)
            self._decoders[name] = codec
        return codec

    def map_object(self, obj: Any, bus_key: str | None = None) -> MapResult:
        """Validate, filter and map a decoded record, encoding each target's payload."""
        if self.input_schema is not None:
            self.input_schema.check(obj)
        if self.when is not None and not _test(self.when, obj, "when"):
            return MapResult(bus_key, [], skipped=True)
        key = bus_key
        if self.key is not None:
            value = self.key(obj)
            if value is MISSING or value is None:
                raise MappingError("key", "the record key is missing", self.spec.key)
            key = value if type(value) is str else text(value)
        if self.writers:  # issue 11: the generated writers (fastmap.py); None -> the general path below
            fast = map_fast(self, obj, key, self.writers)
            if fast is not None:
                return fast
        mapped = self.build(obj, obj)
        outputs: list[Output] = []
        for target in self.targets:
            if target.when is not None and not _test(target.when, obj, f"targets[{target.index}].when"):
                continue
            if target.schema is not None:
                target.schema.check(mapped)
            outputs.append(Output(target, mapped, target.codec.encode(mapped)))
        return MapResult(key, outputs, skipped=not outputs)

    def map_bytes(self, value: bytes, content_type: str | None = None, bus_key: str | None = None) -> MapResult:
        return self.map_object(self.decoder(content_type).decode(value), bus_key)


def _test(expr: Expression, obj: Any, what: str) -> bool:
    try:
        return expr.test(obj)
    except ExpressionError as exc:
        raise MappingError(what, str(exc)) from None


class _Compiler:
    """Collects every compile error of one file instead of stopping at the first."""

    def __init__(self, spec: MappingSpec, where: Where, base: Path) -> None:
        self.spec = spec
        self.where = where
        self.base = base  # the folder of the mapping file
        self.errors: list[ConfigError] = []
        self._lookups: LookupTables | None = None
        self._schemas: list[CompiledSchema] = []  # issue 9: part of the fingerprint

    @property
    def lookups(self) -> LookupTables:
        if self._lookups is None:
            self._lookups = LookupTables(self.base / "lookups")
        return self._lookups

    def error(self, loc: tuple[Any, ...], message: str) -> None:
        self.errors.append(ConfigError(message, self.where(loc)))

    def expression(self, source: str, loc: tuple[Any, ...], *, boolean: bool = False) -> Expression | None:
        try:
            return Expression(source, boolean=boolean)
        except ExpressionSpecError as exc:
            self.error(loc, f"bad CEL expression: {exc}")
            return None

    def schema(self, ref: str, loc: tuple[Any, ...]) -> CompiledSchema | None:
        try:
            schema = load_schema(ref, self.base, which="output" if "target" in loc[:2] else "input")
        except ConfigError as exc:
            self.error(loc, exc.message)
            return None
        self._schemas.append(schema)
        return schema

    def chain(self, text: str, loc: tuple[Any, ...]) -> Callable[[Any], Any] | None:
        try:
            return compile_chain(text, lookups=self.lookups)
        except (TransformSpecError, ConfigError) as exc:
            self.error(loc, getattr(exc, "message", None) or str(exc))
            return None

    def getter(self, text: str, loc: tuple[Any, ...]) -> tuple[Callable[[Any], Any], bool] | None:
        try:
            path = parse_path(text)
        except PathError as exc:
            self.error(loc, str(exc))
            return None
        return compile_getter(path), path.absolute

    # -- fields -------------------------------------------------------------

    def object_builder(self, fields: dict[str, Any], loc: tuple[Any, ...]) -> Builder:
        plans: list[FieldPlan] = []
        for name, value in fields.items():
            floc = (*loc, name)
            if not isinstance(name, str) or not name:
                self.error(floc, "target field names must be non-empty text")
                continue
            if isinstance(value, str):
                plan = self.source_plan(name, "value", value, floc, _PLAIN)
            elif isinstance(value, dict):  # a nested object written as a nested mapping
                plan = FieldPlan(name, "nested", builder=self.object_builder(value, floc))
            else:
                plan = self.field_plan(name, value, floc)
                if plan is not None and value.when is not None:
                    plan.cond = self.field_condition(name, value.when, (*floc, "when"))
            if plan is not None:
                plans.append(plan)
        return generate_builder(plans)

    def source_plan(self, name: str, kind: Kind, text: str, loc: tuple[Any, ...], spec: FieldSpec
                    ) -> FieldPlan | None:
        """A plan reading ``text`` (a source path), with the spec's missing-value rules."""
        try:
            path = parse_path(text)
        except PathError as exc:
            self.error(loc, str(exc))
            return None
        plan = FieldPlan(name, kind, source=text, absolute=path.absolute, has_default=spec.has_default,
                         default=spec.default, required=spec.required)
        if not path.absolute and len(path.parts) == 1 and isinstance(path.parts[0], str):
            plan.fast_key = path.parts[0]
        else:
            plan.getter = compile_getter(path)
        return plan

    def field_condition(self, name: str, source: str, loc: tuple[Any, ...]) -> Callable[[Any, Any], bool] | None:
        expr = self.expression(source, loc, boolean=True)
        if expr is None:
            return None

        def keep(obj: Any, root: Any) -> bool:
            try:
                result = expr(root, obj if obj is not root else None)
            except ExpressionError as exc:
                raise MappingError(name, f"when: {exc}") from None
            if result is True or result is False:
                return result
            raise MappingError(name, f"when: {source!r} gave {result!r}, not true or false")

        return keep

    def field_plan(self, name: str, spec: FieldSpec, loc: tuple[Any, ...]) -> FieldPlan | None:
        given = spec.model_fields_set
        if "const" in given:
            return FieldPlan(name, "const", const=spec.const)
        if "each" in given:
            plan = self.source_plan(name, "each", spec.each or "", (*loc, "each"), spec)
            builder = self.object_builder(spec.fields or {}, (*loc, "fields"))
            if plan is not None:
                plan.builder = builder
            return plan
        if "fields" in given:
            builder = self.object_builder(spec.fields or {}, (*loc, "fields"))
            if spec.from_ is None:
                return FieldPlan(name, "nested", builder=builder)
            plan = self.source_plan(name, "nested", spec.from_, (*loc, "from"), spec)
            if plan is not None:
                plan.builder = builder
            return plan
        if "expr" in given:
            expr = self.expression(spec.expr or "", (*loc, "expr"))
            if expr is None:
                return None
            plan = FieldPlan(name, "value", source=spec.expr, read=_expr_reader(name, expr),
                             has_default=spec.has_default, default=spec.default, required=spec.required)
        else:
            plan = self.source_plan(name, "value", spec.from_ or "", (*loc, "from"), spec)
            if plan is None:
                return None
        if spec.transform:
            plan.chain = self.chain(spec.transform, (*loc, "transform"))
            if plan.chain is None:
                return None
        plan.table = spec.map
        return plan

    # -- whole file -----------------------------------------------------------

    def check_version(self) -> None:
        """``version`` equals the newest changelog entry's (DESIGN §4): every change is recorded."""
        log = self.spec.changelog
        if not log:
            return
        newest = max(range(len(log)), key=lambda i: log[i].version)
        if log[newest].version != self.spec.version:
            self.error(("version",), f"version is {self.spec.version} but the newest changelog entry is "
                                     f"version {log[newest].version}: add a changelog entry for version "
                                     f"{self.spec.version} (what changed, why, who) or fix 'version'")
        seen: dict[int, int] = {}
        for i, entry in enumerate(log):
            if entry.version in seen:
                self.error(("changelog", i, "version"), f"changelog has two entries for version {entry.version}")
            seen[entry.version] = i

    def fingerprint(self, path: str, source: bytes | None) -> tuple[str, tuple[str, ...]]:
        """(content hash, files read) of what this mapping was compiled from (issue 9, hot reload).

        The supervisor swaps a route whose fingerprint changed, so it must cover
        everything taken from disk: the mapping text as the loader read it, and
        the schemas and lookup tables as they were compiled in. Those two are
        hashed from their parsed content, not from a second read of the file:
        a file saved between compiling and hashing could otherwise give an old
        route a new file's fingerprint, and the next reload would see nothing
        to swap. (A change of formatting or comments in them swaps nothing.)
        """
        digest = hashlib.sha256()

        def part(kind: str, name: str, data: bytes) -> None:
            digest.update(f"{kind}\0{name}\0{len(data)}\0".encode())
            digest.update(data)

        if source is None:  # compiled from a spec without its file: the spec is the content
            source = json.dumps(self.spec.model_dump(mode="json"), sort_keys=True).encode()
        part("mapping", path, source)
        files = [path]
        for schema in self._schemas:
            part("schema", schema.path, _canonical(getattr(schema.validator, "schema", None)))
            files.append(schema.path)
        if self._lookups is not None:
            for name, table_path in sorted(self._lookups.sources.items()):
                part("lookup", name, _canonical(self._lookups.get(name)))  # cached: not read again
                files.append(str(table_path))
        return digest.hexdigest(), tuple(dict.fromkeys(files))

    def compile(self, path: str, source: bytes | None = None) -> CompiledMapping:
        spec = self.spec
        input_schema = self.schema(spec.source.schema_, ("source", "schema")) if spec.source.schema_ else None
        self.check_version()
        when = self.expression(spec.when, ("when",), boolean=True) if spec.when else None
        key = None
        if spec.key:
            got = self.getter(spec.key, ("key",))
            key = got[0] if got else None
        build = self.object_builder(spec.fields, ("fields",))
        targets: list[CompiledTarget] = []
        tkey = "targets" if spec.targets is not None else "target"
        for i, t in enumerate(spec.all_targets):
            tloc: tuple[Any, ...] = (tkey, i) if tkey == "targets" else (tkey,)
            options = dict(t.options)
            if t.format == "xml" and t.root:
                options["root"] = t.root
            try:
                codec = make_codec(t.format, **options)
            except TypeError as exc:
                self.error((*tloc, "options"), f"bad options for format {t.format}: {exc}")
                continue
            except ConfigError as exc:
                self.error((*tloc, "options"), exc.message)
                continue
            twhen = self.expression(t.when, (*tloc, "when"), boolean=True) if t.when else None
            tschema = self.schema(t.schema_, (*tloc, "schema")) if t.schema_ else None
            targets.append(CompiledTarget(i, t.sink, t.format, codec, twhen, tschema, t))
        if self.errors:
            raise ConfigErrors(self.errors)
        fingerprint, files = self.fingerprint(path, source)
        return CompiledMapping(spec, path, input_schema, when, key, build, targets, spec.source.format,
                               fingerprint=fingerprint, files=files)


_PLAIN = FieldSpec.model_validate({"from": "x"})  # a plain path: no default, not required


def _expr_reader(name: str, expr: Expression) -> Callable[[Any, Any], Any]:
    def read(obj: Any, root: Any) -> Any:
        try:
            return expr(root, obj if obj is not root else None)
        except ExpressionError as exc:
            raise MappingError(name, str(exc)) from None

    return read


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def compile_spec(spec: MappingSpec, path: str, where: Where, base: Path, *, source: bytes | None = None
                 ) -> CompiledMapping:
    """``source``: the mapping file's bytes as read, for the fingerprint (else the spec stands in)."""
    return _Compiler(spec, where, base).compile(path, source)
