"""The interface catalogue as data: one :class:`FlowEntry` per route, built from the files themselves.

The catalogue is the document process owners sign (DESIGN §1, §9): per flow
the systems, direction, interface type, schedule, security and
authentication, the endpoints, the key, the filter and fan-out rules, the
retry policy, the schemas, every field mapping and the whole change history.
Generating it means it can never drift from what actually runs. Where the
files say nothing the entry says so ("not declared") instead of guessing.

Connectors are read only through ``Component(name, kind, type, config, file,
line)`` and attribute look-ups on ``config`` (which may also be a plain dict
when the config dir was loaded without its environment), so this keeps
working while connector loading changes. Secrets are never shown: a value
that came from the environment is shown as "from $VAR", and the catalogue is
loaded with an empty environment so no real value is ever in reach.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from .catalog_words import condition_in_words, label
from .compiler import CompiledMapping
from .spec import FieldSpec

__all__ = ["ChangeRow", "Endpoint", "FieldRow", "FlowEntry", "SchemaInfo", "build_catalog"]

_ENV_PLACEHOLDER = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_SECRET_NAMES = frozenset({"client_secret", "password", "token", "api_keys", "secret", "api_key_value", "value"})
_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@")


@dataclass
class FieldRow:
    target: str
    source: str
    rule: str


@dataclass
class ChangeRow:
    version: int
    date: str
    by: str
    reason: str
    approved_by: str


@dataclass
class Endpoint:
    """A source or sink as the catalogue shows it."""

    name: str
    type: str  # component type, or "not declared" when the name is unknown
    address: str  # where: URL, table, folder, ingress path; "from $VAR" for environment values
    auth: str  # how it authenticates
    schedule: str = ""  # sources: push / cron / interval
    format: str = ""  # targets: json / xml / csv (+ root)
    condition: str = ""  # targets: fan-out condition in words
    condition_expr: str = ""
    retry: str = ""  # sinks
    schema: str = ""  # targets: output schema file


@dataclass
class SchemaInfo:
    path: str
    title: str
    fields: list[tuple[str, str, bool]]  # (name, type, required)


@dataclass
class FlowEntry:
    route: str
    description: str
    source_system: str
    target_system: str
    direction: str
    interface: str
    frequency: str
    security: str
    topic: str
    sources: list[Endpoint]
    targets: list[Endpoint]
    key: str
    when: str  # in words ("" = all records)
    when_expr: str
    input_schema: SchemaInfo | None
    output_schemas: list[tuple[str, SchemaInfo]]
    owner: str
    version: int
    fields: list[FieldRow]
    changelog: list[ChangeRow]
    lang: str = "en"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def last_change(self) -> str:
        if not self.changelog:
            return label(self.lang, "not_declared")
        c = self.changelog[-1]
        return f"v{c.version} {c.date} {c.by}: {c.reason}"

    # -- compatibility with the first catalogue (CatalogEntry) ------------------------------

    @property
    def sinks(self) -> list[str]:
        return [t.name for t in self.targets]

    @property
    def formats(self) -> list[str]:
        return [t.format.split(" ")[0] for t in self.targets]


def build_catalog(mappings: list[CompiledMapping], connectors: Any = None, lang: str = "en") -> list[FlowEntry]:
    """One entry per route, sorted by route name. ``connectors``: a ConnectorsConfig (sources/sinks dicts)."""
    sources: Mapping[str, Any] = getattr(connectors, "sources", None) or {}
    sinks: Mapping[str, Any] = getattr(connectors, "sinks", None) or {}
    return [_entry(m, sources, sinks, lang) for m in sorted(mappings, key=lambda m: m.name)]


def _entry(m: CompiledMapping, sources: Mapping[str, Any], sinks: Mapping[str, Any], lang: str) -> FlowEntry:
    spec = m.spec
    nd = label(lang, "not_declared")
    systems = spec.systems
    publishers = [c for c in sources.values() if _get(c.config, "topic") == spec.source.topic]
    src_eps = [_source_endpoint(c, lang) for c in publishers]
    tgt_eps = [_target_endpoint(m, i, sinks, lang) for i in range(len(spec.all_targets))]
    src_system = systems.source if systems else (", ".join(c.name for c in publishers) or nd)
    tgt_system = systems.target if systems else ", ".join(t.sink for t in spec.all_targets)
    direction_word = label(lang, "two_way") if systems and systems.direction == "two-way" else label(lang, "one_way")
    arrow = "↔" if systems and systems.direction == "two-way" else "→"
    schedules = "; ".join(f"{e.name}: {e.schedule}" for e in src_eps if e.schedule)
    frequency = (systems.frequency if systems else "") or schedules or nd
    changes = sorted(spec.changelog, key=lambda c: c.version)
    return FlowEntry(
        route=m.name, description=spec.description or nd,
        source_system=src_system, target_system=tgt_system,
        direction=f"{src_system} {arrow} {tgt_system} ({direction_word})",
        interface=(systems.interface if systems and systems.interface else nd),
        frequency=frequency,
        security=(systems.security if systems and systems.security else nd),
        topic=spec.source.topic, sources=src_eps, targets=tgt_eps,
        key=spec.key or label(lang, "bus_key"),
        when=condition_in_words(spec.when, lang) if spec.when else "", when_expr=spec.when or "",
        input_schema=_schema_info(m.input_schema, spec.source.schema_),
        output_schemas=[(t.sink, info) for t in m.targets
                        if (info := _schema_info(t.schema, t.spec.schema_)) is not None],
        owner=spec.owner, version=spec.version,
        fields=list(_field_rows(spec.fields, "", lang)),
        changelog=[ChangeRow(c.version, c.date.isoformat(), c.by, c.reason, c.approved_by or nd) for c in changes],
        lang=lang,
    )


# --------------------------------------------------------------------------- endpoints


def _get(obj: Any, name: str) -> Any:
    """An option of a component config: a pydantic model, or a plain dict when loaded without env."""
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _fields_of(obj: Any) -> dict[str, Any]:
    if isinstance(obj, Mapping):
        return dict(obj)
    try:
        return dict(obj)  # pydantic models iterate as (field, value)
    except TypeError:
        return {}


def shown(value: Any, key: str, lang: str) -> str:
    """A config value as the catalogue may show it: environment names, never secrets."""
    if isinstance(value, list | tuple):
        parts = [shown(v, key, lang) for v in value]
        return ", ".join(dict.fromkeys(parts))
    text = value if isinstance(value, str) else None
    if text is not None:
        m = _ENV_PLACEHOLDER.match(text)
        if m:
            return label(lang, "from_env").replace("${var}", f"${m.group(1)}")
    if key in _SECRET_NAMES or type(value).__name__ == "SecretStr":
        return label(lang, "secret")
    if text is None:
        return str(value)
    return _USERINFO.sub(r"\1***@", text)


def _source_endpoint(c: Any, lang: str) -> Endpoint:
    cfg = c.config
    if c.type == "http_ingress":
        address = f"POST /ingress/{c.name}"
        schedule = label(lang, "push")
    else:
        address = _address(cfg, lang, skip=("topic",))  # the topic is shown as where records go
        cron, interval = _get(cfg, "schedule"), _get(cfg, "interval")
        zone = _get(cfg, "timezone")
        if cron:
            schedule = f"cron {cron}" + (f" ({zone})" if zone else "")
        elif interval:
            schedule = f"{label(lang, 'every')} {_duration(interval)}"
        else:
            schedule = label(lang, "not_declared")
    return Endpoint(c.name, c.type, address, _auth(cfg, lang), schedule=schedule)


def _target_endpoint(m: CompiledMapping, i: int, sinks: Mapping[str, Any], lang: str) -> Endpoint:
    t = m.spec.all_targets[i]
    fmt = t.format + (f", root {t.root}" if t.root else "")
    nd = label(lang, "not_declared")
    c = sinks.get(t.sink)
    words = condition_in_words(t.when, lang) if t.when else label(lang, "all_records")
    schema = t.schema_ or nd
    if c is None:
        return Endpoint(t.sink, nd, nd, nd, format=fmt, condition=words, condition_expr=t.when or "",
                        retry=nd, schema=schema)
    cfg = c.config
    return Endpoint(t.sink, c.type, _address(cfg, lang), _auth(cfg, lang), format=fmt, condition=words,
                    condition_expr=t.when or "", retry=_retry(_get(cfg, "retry"), lang), schema=schema)


_ADDRESS_KEYS = ("url", "dsn", "path", "bootstrap", "topic", "table", "filename", "query")


def _address(cfg: Any, lang: str, skip: tuple[str, ...] = ()) -> str:
    parts = []
    for key in _ADDRESS_KEYS:
        if key in skip:
            continue
        value = _get(cfg, key)
        if value is not None and value != "":
            parts.append(f"{key} {shown(value, key, lang)}")
    return "; ".join(parts) or label(lang, "not_declared")


def _auth(cfg: Any, lang: str) -> str:
    auth = _get(cfg, "auth")
    if auth is None:
        tls = _get(cfg, "verify_tls")
        return "TLS" if tls is True and str(_get(cfg, "url") or "").startswith("https") \
            else label(lang, "not_declared")
    schemes = {k: v for k, v in _fields_of(auth).items() if v is not None}
    out = []
    for scheme, options in schemes.items():
        if scheme == "api_keys":
            out.append(f"API keys ({shown(options, scheme, lang)})")
            continue
        opts = _fields_of(options)
        details = ", ".join(f"{k} {shown(v, k, lang)}" for k, v in opts.items()
                            if v is not None and k not in ("client_auth",))
        out.append(scheme.replace("_", " ") + (f" ({details})" if details else ""))
    return "; ".join(out) or label(lang, "not_declared")


def _duration(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        from ..units import format_duration

        return format_duration(float(value))
    return str(value)


def _retry(retry: Any, lang: str) -> str:
    if retry is None:
        return label(lang, "not_declared")
    attempts = _get(retry, "attempts")
    backoff = _get(retry, "backoff") or "exponential"
    initial, cap = _get(retry, "initial"), _get(retry, "max")
    parts = []
    if attempts is not None:
        n = int(attempts)
        parts.append(f"{n} attempts (1 try + {n - 1} retries)" if lang == "en"
                     else f"共 {n} 次（首次 + 重试 {n - 1} 次）")
    if initial is not None:
        span = f"{_duration(initial)} … {_duration(cap)}" if cap is not None else _duration(initial)
        parts.append(f"{backoff} backoff {span}" if lang == "en" else f"{backoff} 退避 {span}")
    parts.append(label(lang, "then_dead_letter"))
    return ", ".join(parts)


# --------------------------------------------------------------------------- schemas and fields


def _schema_info(compiled: Any, ref: str | None) -> SchemaInfo | None:
    if compiled is None:
        return None
    path = ref or compiled.path  # as the mapping file names it, not where this process found it
    schema = getattr(getattr(compiled, "validator", None), "schema", None)
    if not isinstance(schema, dict):
        return SchemaInfo(path, "", [])
    required = set(schema.get("required") or [])
    props = schema.get("properties") or {}
    fields = [(name, _schema_type(p), name in required) for name, p in props.items()]
    return SchemaInfo(path, str(schema.get("title") or ""), fields)


def _schema_type(prop: Any) -> str:
    if not isinstance(prop, dict):
        return ""
    t = prop.get("type")
    if isinstance(t, list):
        return " | ".join(map(str, t))
    if t:
        return str(t)
    if "enum" in prop:
        return "one of " + ", ".join(map(str, prop["enum"]))
    if "$ref" in prop:
        return str(prop["$ref"]).rsplit("/", 1)[-1]
    return ""


def _field_rows(fields: Mapping[str, Any], prefix: str, lang: str) -> Iterator[FieldRow]:
    """One row per target field (nested objects flattened to dotted names, lists as ``[]``)."""
    t = partial(label, lang)
    for name, value in fields.items():
        target = f"{prefix}{name}"
        if isinstance(value, str):
            yield FieldRow(target, value, "")
            continue
        if isinstance(value, dict):  # nested object
            yield from _field_rows(value, f"{target}.", lang)
            continue
        assert isinstance(value, FieldSpec)
        given = value.model_fields_set
        cond = f"{t('only_when')} {condition_in_words(value.when, lang)}" if value.when else ""
        if "each" in given:
            yield FieldRow(f"{target}[]", value.each or "", "; ".join(x for x in (t("each_item"), cond) if x))
            yield from _field_rows(value.fields or {}, f"{target}[].", lang)
            continue
        if "fields" in given:
            if value.from_ or cond:
                yield FieldRow(target, value.from_ or "", "; ".join(x for x in (t("object"), cond) if x))
            yield from _field_rows(value.fields or {}, f"{target}.", lang)
            continue
        rule: list[str] = []
        if "const" in given:
            rule.append(f"{t('constant')} {value.const!r}")
        if "expr" in given:
            rule.append(f"{t('expr')} {value.expr}")
        if value.transform:
            rule.append(value.transform)
        if value.map is not None:
            rule.append(f"{t('map')} " + ", ".join(f"{k}→{v}" for k, v in value.map.items()))
        if value.has_default:
            rule.append(f"{t('default')} {value.default!r}")
        if value.required:
            rule.append(t("required"))
        if cond:
            rule.append(cond)
        yield FieldRow(target, value.from_ or "", "; ".join(rule))
