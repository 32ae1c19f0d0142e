"""Runtime settings and the connector/sink instance files (``connectors/*.yaml``, DESIGN §5).

Two rules from the design live here because they apply to every component:

* any option ``x`` may be given as ``x_env: VAR`` and is read from the
  environment at start (``api_keys_env`` holds a comma-separated list);
* secrets only ever come from the environment: a plain ``client_secret:``,
  ``password:``, ``token:`` or ``api_keys:`` in a file is refused.

Component types validate their own options with their own pydantic model
(the registry finds it), so a new plugin type needs no change here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .errors import ConfigError, ConfigErrors
from .yamlfile import YamlDocument, load_yaml_file, validation_errors

DEFAULT_BUS = "embedded://./var/syncbus.db"
DEFAULT_PORT = 8080

SECRET_KEYS = frozenset({"client_secret", "password", "token", "api_keys", "secret", "api_key_value"})
LIST_KEYS = frozenset({"api_keys", "columns", "allow_ips"})


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


def resolve_env(data: Any, doc: YamlDocument, loc: tuple[Any, ...], env: Mapping[str, str],
                strict: bool, errors: list[ConfigError]) -> Any:
    """Replace ``x_env: VAR`` by ``x: <value>`` recursively; refuse secrets given in the file."""
    if isinstance(data, list):
        return [resolve_env(v, doc, (*loc, i), env, strict, errors) for i, v in enumerate(data)]
    if not isinstance(data, dict):
        return data
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
                continue
            raw = env.get(value)
            if raw is None:
                if strict:
                    errors.append(doc.error(kloc, f"environment variable {value} (for {name!r}) is not set"))
                # a stand-in, so the option is not reported a second time as missing
                raw = _Placeholder(f"${{{value}}}")
            out[name] = [p.strip() for p in raw.split(",") if p.strip()] if name in LIST_KEYS else raw
            doc.keys.setdefault((*loc, name), doc.keys.get(kloc, (0, 0)))
        elif isinstance(key, str) and key in SECRET_KEYS and value is not None:
            errors.append(doc.error(kloc, f"secrets come from the environment only: use {key}_env: VAR"))
        else:
            out[key] = resolve_env(value, doc, kloc, env, strict, errors)
    return out


@dataclass
class Component:
    """A configured source or sink: its validated config model and where it was declared."""

    name: str
    kind: str  # "source" | "sink"
    type: str
    config: Any
    file: str
    line: int = 0


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
                        into: ConnectorsConfig | None = None) -> ConnectorsConfig:
    """Validate one connectors file; raises ConfigErrors with every problem in it."""
    from .connectors.registry import source_types
    from .sinks.registry import sink_types

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
    for section, kind, types, table in (("sources", "source", source_types(), into.sources),
                                        ("sinks", "sink", sink_types(), into.sinks)):
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
            if type_name not in types:
                known = ", ".join(sorted(types))
                errors.append(doc.error((*loc, "type"), f"unknown {kind} type {type_name!r} (known: {known})"))
                continue
            if name in table:
                errors.append(doc.error((*loc, "name"), f"{kind} {name!r} is declared twice "
                                                         f"(first in {table[name].file})"))
                continue
            resolved = resolve_env(item, doc, loc, env, strict, errors)
            model = types[type_name].Config
            try:
                config = model.model_validate(resolved)
            except ValidationError as exc:
                # an unset variable was reported once already; its stand-in's own complaints are noise
                problems = [p for p in validation_errors(doc, exc, loc).errors if "${" not in p.message]
                errors.extend(problems)
                if problems:
                    continue
                config = model.model_construct(**resolved)
            line = doc.location(loc).line
            table[name] = Component(name, kind, type_name, config, str(path), line)
    if errors:
        raise ConfigErrors(errors)
    return into


def load_connectors(config_dir: Path, env: Mapping[str, str] | None = None,
                    strict: bool = True) -> ConnectorsConfig:
    """All connectors/*.yaml of a config dir, every file's errors collected."""
    out = ConnectorsConfig()
    errors: list[ConfigError] = []
    for path in connector_files(config_dir):
        try:
            load_connector_file(path, env, strict, into=out)
        except ConfigErrors as exc:
            errors.extend(exc.errors)
    if errors:
        raise ConfigErrors(errors)
    return out
