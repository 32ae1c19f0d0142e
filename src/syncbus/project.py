"""A whole config dir: every mapping and connector file, checked against each other.

``syncbus validate`` with no path, ``syncbus run`` and ``syncbus catalog`` all
start here, so a route naming an unknown sink is the same error everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .config import ConnectorsConfig, load_connectors
from .errors import ConfigError, ConfigErrors, Location
from .mapping.compiler import CompiledMapping
from .mapping.loader import load_mapping, mapping_files


@dataclass
class Project:
    config_dir: Path
    mappings: dict[str, CompiledMapping] = field(default_factory=dict)
    connectors: ConnectorsConfig = field(default_factory=ConnectorsConfig)

    @property
    def topics(self) -> list[str]:
        topics = {m.topic for m in self.mappings.values()}
        topics.update(c.config.topic for c in self.connectors.sources.values())
        return sorted(topics)


def load_mappings(config_dir: Path) -> tuple[dict[str, CompiledMapping], list[ConfigError]]:
    """Compile every mapping; returns what compiled and the errors of what did not."""
    mappings: dict[str, CompiledMapping] = {}
    errors: list[ConfigError] = []
    for path in mapping_files(config_dir):
        try:
            compiled = load_mapping(path)
        except ConfigErrors as exc:
            errors.extend(exc.errors)
            continue
        other = mappings.get(compiled.name)
        if other is not None:
            errors.append(ConfigError(f"mapping name {compiled.name!r} is also used by {other.path}",
                                      Location(str(path), 1, 1)))
            continue
        mappings[compiled.name] = compiled
    return mappings, errors


def load_project(config_dir: Path, env: Mapping[str, str] | None = None, strict_env: bool = True) -> Project:
    """Load and cross-check a config dir; raises ConfigErrors listing every problem."""
    env = os.environ if env is None else env
    mappings, errors = load_mappings(config_dir)
    try:
        connectors = load_connectors(config_dir, env, strict=strict_env)
    except ConfigErrors as exc:
        errors.extend(exc.errors)
        connectors = ConnectorsConfig()
    else:
        errors.extend(cross_check(mappings, connectors))
    if not mappings and not errors and not (config_dir / "mappings").is_dir():
        errors.append(ConfigError(f"no mappings/ folder in {config_dir.resolve()} (use --config-dir)"))
    if errors:
        raise ConfigErrors(errors)
    return Project(config_dir, mappings, connectors)


def cross_check(mappings: Mapping[str, CompiledMapping], connectors: ConnectorsConfig) -> list[ConfigError]:
    errors: list[ConfigError] = []
    for m in mappings.values():
        for t in m.targets:
            if t.sink not in connectors.sinks:
                known = ", ".join(sorted(connectors.sinks)) or "none declared"
                line = _line_of(m.path, "sink:", t.sink)
                errors.append(ConfigError(f"route {m.name!r} names unknown sink {t.sink!r} (known: {known})",
                                          Location(m.path, line, 1 if line else 0)))
    return errors


def _line_of(path: str, key: str, value: str) -> int:
    """Best-effort line of ``key value`` for cross-reference errors found after compiling."""
    try:
        for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            if key in line and value in line:
                return i
    except OSError:
        pass
    return 0
