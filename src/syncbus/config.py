"""Runtime settings and the connector/sink instance files (``connectors/*.yaml``, DESIGN §5).

Two rules from the design live here because they apply to every component:

* any option ``x`` may be given as ``x_env: VAR`` and is read from the
  environment at start (a list option, such as ``api_keys_env``, holds a
  comma-separated list);
* secrets only ever come from the environment: refused in a file are every
  option the type's spec marks secret, the generic secret names
  (``client_secret``, ``password``, ``token``, ``api_keys``, ...) and
  ``headers:`` values that carry credentials (Authorization, X-API-Key,
  Cookie, anything named like a token or secret).

Each type is validated by its spec from the component registry
(``syncbus.components``), so a new plugin type needs no change here, and
every problem is reported as ``file:line:col`` -- for ``x_env`` forms at the
``x_env`` key, naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from .components.spec import ANY_ITEM, ComponentSpec, Kind
from .components.validation import format_loc, problems
from .errors import ConfigError, ConfigErrors
from .yamlfile import YamlDocument, load_yaml_file

DEFAULT_BUS = "embedded://./var/syncbus.db"
DEFAULT_PORT = 8080

SECRET_KEYS = frozenset({"client_secret", "password", "token", "api_keys", "secret", "api_key_value"})
LIST_KEYS = frozenset({"api_keys", "columns", "allow_ips"})
# Header names whose values are credentials: refused in ``headers:`` blocks of a file.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "cookie", "set-cookie"})
SECRET_HEADER_WORDS = ("token", "secret", "password", "api-key", "apikey", "api_key")


@dataclass(frozen=True)
class Settings:
    """What every command needs: where the config is and which bus/store to use."""

    config_dir: Path
    bus_url: str = DEFAULT_BUS
    store_url: str | None = None
    port: int = DEFAULT_PORT
    host: str = "127.0.0.1"

    @classmethod
    def from_env(cls, config_dir: str | None = None, bus: str | None = None, store: str | None = None,
                 port: int | None = None, host: str | None = None) -> Settings:
        return cls(
            config_dir=Path(config_dir or os.environ.get("SYNCBUS_CONFIG_DIR") or "."),
            bus_url=bus or os.environ.get("SYNCBUS_BUS") or DEFAULT_BUS,
            store_url=store or os.environ.get("SYNCBUS_STORE") or None,
            port=port or int(os.environ.get("SYNCBUS_PORT") or DEFAULT_PORT),
            host=host or os.environ.get("SYNCBUS_HOST") or "127.0.0.1",
        )

    def resolved_store_url(self) -> str:
        """The dead-letter/trace store. Default: the embedded bus file itself, else var/syncbus-store.db."""
        if self.store_url:
            return self.store_url
        from .bus.base import parse_bus_url

        scheme, target = parse_bus_url(self.bus_url)
        if scheme == "embedded":
            return f"sqlite:///{Path(target).resolve()}"
        return f"sqlite:///{(Path('var') / 'syncbus-store.db').resolve()}"


class _Placeholder(str):
    """Stands in for an unset environment variable when validating without the runtime env."""


def is_secret_header(name: str) -> bool:
    lowered = name.lower()
    return lowered in SECRET_HEADERS or any(word in lowered for word in SECRET_HEADER_WORDS)


def _matches(paths: frozenset[tuple[str, ...]], path: tuple[Any, ...]) -> bool:
    return any(len(p) == len(path) and all(a == ANY_ITEM or a == str(b) for a, b in zip(p, path, strict=True))
               for p in paths)


@dataclass(frozen=True)
class EnvRules:
    """What a type's spec says about its options, for :func:`resolve_env` (paths relative to the block)."""

    secret_paths: frozenset[tuple[str, ...]] = frozenset()
    list_paths: frozenset[tuple[str, ...]] = frozenset()

    @classmethod
    def of(cls, spec: ComponentSpec) -> EnvRules:
        options = spec.options()
        return cls(secret_paths=spec.secret_paths,
                   list_paths=frozenset(o.path for o in options if o.type.startswith("list")))

    def secret(self, path: tuple[Any, ...]) -> bool:
        return bool(path) and (path[-1] in SECRET_KEYS or _matches(self.secret_paths, path))

    def is_list(self, path: tuple[Any, ...]) -> bool:
        return bool(path) and (path[-1] in LIST_KEYS or _matches(self.list_paths, path))


def resolve_env(data: Any, doc: YamlDocument, loc: tuple[Any, ...], env: Mapping[str, str],
                strict: bool, errors: list[ConfigError], rules: EnvRules | None = None, *,
                base: int | None = None, origins: dict[tuple[Any, ...], str] | None = None) -> Any:
    """Replace ``x_env: VAR`` by ``x: <value>`` recursively; refuse secrets given in the file.

    ``rules`` (from the type's spec) says which option paths are secrets and
    lists; paths are taken relative to ``loc[:base]`` (default: ``loc``, the
    block itself). ``origins`` collects, per resolved location, which
    ``x_env: VAR`` it came from, for messages.
    """
    rules = rules or EnvRules()
    base = len(loc) if base is None else base
    if isinstance(data, list):
        return [resolve_env(v, doc, (*loc, i), env, strict, errors, rules, base=base, origins=origins)
                for i, v in enumerate(data)]
    if not isinstance(data, dict):
        return data
    in_headers = bool(loc) and loc[-1] == "headers"
    out: dict[Any, Any] = {}
    for key, value in data.items():
        kloc = (*loc, key)
        if isinstance(key, str) and key.endswith("_env") and len(key) > 4:
            name = key[:-4]
            if name in data:
                errors.append(doc.error(kloc, f"give {name!r} or {key!r}, not both"))
                continue
            if not isinstance(value, str) or not value:
                errors.append(doc.error(kloc, f"{key} must name an environment variable"))
                out[name] = _Placeholder("${?}")  # reported: not again as missing
                continue
            raw = env.get(value)
            if raw is None:
                if strict:
                    errors.append(doc.error(kloc, f"environment variable {value} (for {name!r}) is not set"))
                # a stand-in, so the option is not reported a second time as missing
                raw = _Placeholder(f"${{{value}}}")
            if rules.is_list((*loc[base:], name)):
                kind = _Placeholder if isinstance(raw, _Placeholder) else str
                out[name] = [kind(p.strip()) for p in raw.split(",") if p.strip()]
            else:
                out[name] = raw
            doc.keys.setdefault((*loc, name), doc.keys.get(kloc, (0, 0)))
            if origins is not None:
                origins[(*loc, name)] = f"{key}: {value}"
        elif isinstance(key, str) and value is not None and rules.secret((*loc[base:], key)):
            errors.append(doc.error(kloc, f"secrets come from the environment only: use {key}_env: VAR"))
            out[key] = _Placeholder("${refused}")  # reported once: not again as missing or mistyped
        elif isinstance(key, str) and value is not None and in_headers and is_secret_header(key):
            errors.append(doc.error(kloc, f"header {key!r} carries a credential; secrets come from the "
                                          f"environment only: use {key}_env: VAR"))
            out[key] = _Placeholder("${refused}")
        else:
            out[key] = resolve_env(value, doc, kloc, env, strict, errors, rules, base=base, origins=origins)
    return out


@dataclass
class Component:
    """A configured source or sink: its validated config model, its type's spec and where it was declared."""

    name: str
    kind: str  # "source" | "sink"
    type: str
    config: Any
    file: str
    line: int = 0
    spec: ComponentSpec | None = None

    def same_as(self, other: Component) -> bool:
        """Same type and same options (secrets compared by value): a reload need not touch it."""
        return self.type == other.type and _dump(self.config) == _dump(other.config)


def _dump(config: Any) -> Any:
    return config.model_dump() if isinstance(config, BaseModel) else config


@dataclass
class ConnectorsConfig:
    sources: dict[str, Component] = field(default_factory=dict)
    sinks: dict[str, Component] = field(default_factory=dict)


def connector_files(config_dir: Path) -> list[Path]:
    folder = config_dir / "connectors"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in {".yaml", ".yml"} and p.is_file())


def load_connector_file(path: Path, env: Mapping[str, str] | None = None, strict: bool = True,
                        into: ConnectorsConfig | None = None, *,
                        strict_for: Container[str] | None = None) -> ConnectorsConfig:
    """Validate one connectors file; raises ConfigErrors with every problem in it.

    ``strict``: an unset ``x_env`` variable is an error (``run``), or not
    (``validate`` checks files without the production environment).
    ``strict_for`` names the components for which it is, overriding
    ``strict`` (``sync --full SOURCE`` needs only that source's variables).
    """
    from .components.registry import registry

    env = os.environ if env is None else env
    into = into if into is not None else ConnectorsConfig()
    errors: list[ConfigError] = []
    try:
        doc = load_yaml_file(path)
    except ConfigError as exc:
        raise ConfigErrors([exc]) from None
    data = doc.data
    if data is None:
        return into
    if not isinstance(data, dict):
        raise ConfigErrors([doc.error((), "a connectors file is a mapping with 'sources:' and/or 'sinks:'")])
    for key in data:
        if key not in ("sources", "sinks"):
            errors.append(doc.error((key,), f"unknown key {key!r} (expected 'sources' or 'sinks')"))
    reg = registry()
    sections: tuple[tuple[str, Kind, dict[str, Component]], ...] = (
        ("sources", "source", into.sources), ("sinks", "sink", into.sinks))
    for section, kind, table in sections:
        items = data.get(section) or []
        if not isinstance(items, list):
            errors.append(doc.error((section,), f"'{section}' must be a list"))
            continue
        for i, item in enumerate(items):
            loc = (section, i)
            if not isinstance(item, dict):
                errors.append(doc.error(loc, f"each entry of '{section}' must be a mapping"))
                continue
            name, type_name = item.get("name"), item.get("type")
            if not isinstance(name, str) or not name:
                errors.append(doc.error(loc, f"{kind} needs a 'name'"))
                continue
            if type_name is None:
                errors.append(doc.error(loc, f"{kind} {name!r} needs a 'type' "
                                             f"(known: {', '.join(reg.known(kind)) or 'none'})"))
                continue
            try:
                spec = reg.get(kind, type_name)
            except ConfigError as exc:  # unknown (with did-you-mean) or a broken plugin
                errors.append(doc.error((*loc, "type"), exc.message))
                continue
            if name in table:
                errors.append(doc.error((*loc, "name"), f"{kind} {name!r} is declared twice "
                                                         f"(first in {table[name].file})"))
                continue
            strict_here = strict if strict_for is None else name in strict_for
            component = _component(doc, loc, item, spec, env, strict_here, errors)
            if component is not None:
                table[name] = component
    if errors:
        errors.sort(key=lambda e: (e.location.line, e.location.col) if e.location else (0, 0))
        raise ConfigErrors(errors)
    return into


def _component(doc: YamlDocument, loc: tuple[Any, ...], item: dict[str, Any], spec: ComponentSpec,
               env: Mapping[str, str], strict: bool, errors: list[ConfigError]) -> Component | None:
    """One source or sink block validated by its spec; None (and errors) when invalid."""
    origins: dict[tuple[Any, ...], str] = {}
    before = len(errors)
    resolved = resolve_env(item, doc, loc, env, strict, errors, EnvRules.of(spec), origins=origins)
    assert spec.config is not None
    try:
        config: Any = spec.validate(resolved)
    except ValidationError as exc:
        # an unset variable was reported once already; its stand-in's own complaints are noise
        found = [(rel, msg) for rel, msg in problems(spec.config, exc, env_hint=True)
                 if not _placeholder_at(resolved, rel)]
        for rel, msg in found:
            errors.append(doc.error((*loc, *rel), _message(rel, msg, origins.get((*loc, *rel)))))
        if found:
            return None
        config = spec.config.model_construct(**resolved)
    if len(errors) > before:
        return None
    return Component(item["name"], spec.kind, spec.name, config, doc.path, doc.location(loc).line, spec)


def _message(rel: tuple[Any, ...], msg: str, origin: str | None) -> str:
    if not rel or msg.startswith("unknown option"):
        return msg
    where = format_loc(rel) + (f" (from {origin})" if origin else "")
    return f"{where}: {msg}"


def _placeholder_at(data: Any, loc: tuple[Any, ...]) -> bool:
    for part in loc:
        if isinstance(data, _Placeholder):
            return True
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return False
    if isinstance(data, list):
        return any(isinstance(v, _Placeholder) for v in data)
    return isinstance(data, _Placeholder)


def load_connectors(config_dir: Path, env: Mapping[str, str] | None = None,
                    strict: bool = True, *, strict_for: Container[str] | None = None) -> ConnectorsConfig:
    """All connectors/*.yaml of a config dir, every file's errors collected."""
    out = ConnectorsConfig()
    errors: list[ConfigError] = []
    for path in connector_files(config_dir):
        try:
            load_connector_file(path, env, strict, into=out, strict_for=strict_for)
        except ConfigErrors as exc:
            errors.extend(exc.errors)
    if errors:
        raise ConfigErrors(errors)
    return out
