"""Load mapping files: YAML → validated spec → compiled mapping, with file:line:col errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import ConfigError, ConfigErrors
from ..yamlfile import UNION_TAGS, YamlDocument, parse_yaml, read_text
from .compiler import CompiledMapping, compile_spec
from .spec import MappingSpec, misspelt_keyword


def parse_mapping(doc: YamlDocument) -> MappingSpec:
    if not isinstance(doc.data, dict):
        raise ConfigErrors([doc.error((), "a mapping file must be a YAML mapping (key: value)")])
    try:
        return MappingSpec.model_validate(doc.data)
    except ValidationError as exc:
        raise spec_errors(doc, exc) from None


# Tags of the field union in spec.py; they appear in pydantic's ``loc`` but are not keys of the file.
_TAGS = UNION_TAGS | {"<object>"}


def spec_errors(doc: YamlDocument, exc: ValidationError) -> ConfigErrors:
    """pydantic's errors as file:line:col errors, one per problem.

    Like ``yamlfile.validation_errors``, which does not know the ``<object>``
    tag of nested objects (mapping/spec.py); left in ``loc`` it would make every
    error inside a nested object point at the object's first line.
    """
    errors: list[ConfigError] = []
    seen: set[str] = set()
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in _TAGS))
        e = doc.error(loc, _describe(err["type"], loc, str(err.get("msg", "invalid value"))))
        if str(e) not in seen:
            seen.add(str(e))
            errors.append(e)
    return ConfigErrors(errors)


def _describe(kind: str, loc: tuple[Any, ...], msg: str) -> str:
    name = loc[-1] if loc else ""
    if kind == "extra_forbidden":
        meant = misspelt_keyword(name)
        if meant is not None:
            return (f"unknown key {name!r} (did you mean {meant!r}? a target field named {name!r} goes under "
                    "'fields:')")
        return f"unknown key {name!r}"
    if kind == "missing":
        return f"missing required key {name!r}"
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if not loc:
        return msg
    dotted = ""
    for part in loc:
        dotted += f"[{part}]" if isinstance(part, int) else (f".{part}" if dotted else str(part))
    return f"{dotted}: {msg}"


def load_mapping(path: str | Path) -> CompiledMapping:
    """Load and compile one mapping file; raises ConfigErrors listing every problem found."""
    path = Path(path)
    try:
        text = read_text(path, "YAML file")  # read once: the fingerprint hashes what was compiled (issue 9)
        doc = parse_yaml(text, str(path))
    except ConfigError as exc:
        raise ConfigErrors([exc]) from None
    spec = parse_mapping(doc)
    return compile_spec(spec, str(path), doc.location, path.parent, source=text.encode("utf-8"))


def mapping_files(config_dir: Path) -> list[Path]:
    """The route files of a config dir: mappings/*.yaml|yml (tests/ and lookups/ are not routes)."""
    folder = config_dir / "mappings"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in {".yaml", ".yml"} and p.is_file())
