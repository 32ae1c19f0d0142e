"""``syncbus validate`` on a whole config dir: every file, the cross-references, and warnings.

Errors make validate exit 1; warnings are printed and do not change the exit
code, because they describe something that may be intended (a route whose
source is not configured yet on this machine) but is usually a mistake (a
typo in a topic: the route would wait forever and nobody would notice).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ConfigErrors, Location
from ..yamlfile import load_yaml_file
from .testing import check_test_file, mapping_names, test_files

__all__ = ["Findings", "validate_config_dir"]


@dataclass
class Findings:
    errors: list[ConfigError] = field(default_factory=list)
    warnings: list[ConfigError] = field(default_factory=list)
    project: Any = None  # the loaded Project when the files loaded


def validate_config_dir(config_dir: Path) -> Findings:
    """Load and cross-check a config dir, its mapping tests included; collect every finding."""
    from ..project import load_project

    found = Findings()
    try:
        found.project = load_project(config_dir, strict_env=False)
    except ConfigErrors as exc:
        found.errors.extend(exc.errors)
    tests_dir = config_dir / "mappings" / "tests"
    if tests_dir.is_dir():
        names = mapping_names(config_dir)
        for path in test_files(tests_dir):
            found.errors.extend(check_test_file(path, names))
    if found.project is not None:
        found.warnings.extend(topic_warnings(found.project))
    return found


def topic_warnings(project: Any) -> list[ConfigError]:
    """A route reading a topic that no source publishes to: it would never receive a record."""
    published: set[str] = set()
    for c in project.connectors.sources.values():
        topic = c.config.get("topic") if isinstance(c.config, dict) else getattr(c.config, "topic", None)
        if isinstance(topic, str):
            published.add(topic)
    warnings = []
    for m in project.mappings.values():
        if m.topic in published:
            continue
        known = ", ".join(sorted(published)) or "none"
        warnings.append(ConfigError(
            f"warning: route {m.name!r} reads topic {m.topic!r} but no source publishes to it "
            f"(sources publish: {known})", _where(m.path, ("source", "topic"))))
    return warnings


def _where(path: str, loc: tuple[Any, ...]) -> Location:
    try:
        return load_yaml_file(Path(path)).location(loc)
    except ConfigError:
        return Location(path)
