"""Load mapping files: YAML → validated spec → compiled mapping, with file:line:col errors."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from ..errors import ConfigError, ConfigErrors
from ..yamlfile import YamlDocument, load_yaml_file, validation_errors
from .compiler import CompiledMapping, compile_spec
from .spec import MappingSpec


def parse_mapping(doc: YamlDocument) -> MappingSpec:
    if not isinstance(doc.data, dict):
        raise ConfigErrors([doc.error((), "a mapping file must be a YAML mapping (key: value)")])
    try:
        return MappingSpec.model_validate(doc.data)
    except ValidationError as exc:
        raise validation_errors(doc, exc) from None


def load_mapping(path: str | Path) -> CompiledMapping:
    """Load and compile one mapping file; raises ConfigErrors listing every problem found."""
    path = Path(path)
    try:
        doc = load_yaml_file(path)
    except ConfigError as exc:
        raise ConfigErrors([exc]) from None
    spec = parse_mapping(doc)
    return compile_spec(spec, str(path), doc.location, path.parent)


def mapping_files(config_dir: Path) -> list[Path]:
    """The route files of a config dir: mappings/*.yaml|yml (tests/ and lookups/ are not routes)."""
    folder = config_dir / "mappings"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in {".yaml", ".yml"} and p.is_file())
