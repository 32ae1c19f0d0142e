"""JSON Schemas for route input and output, loaded and compiled once per file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError as JsonSchemaDefinitionError
from jsonschema.exceptions import best_match

from ..errors import ConfigError, SchemaError


@dataclass(frozen=True)
class CompiledSchema:
    """A schema compiled twice: jsonschema-rs (Rust) answers "valid?" on the hot path,
    python-jsonschema explains a failure (``best_match``) on the rare error path."""

    path: str
    which: str  # "input" | "output"
    validator: Any
    fast: Any = None

    def check(self, obj: Any) -> None:
        """Raise SchemaError naming the JSON pointer of the first (most relevant) problem."""
        fast = self.fast
        if fast is not None:
            try:
                if fast.is_valid(obj):
                    return
            except (ValueError, TypeError, OverflowError):
                pass  # a value the Rust side cannot convert: let python-jsonschema decide
        validator = self.validator
        if validator.is_valid(obj):
            return
        err = best_match(validator.iter_errors(obj))
        pointer = "/" + "/".join(str(p) for p in err.absolute_path) if err.absolute_path else "/"
        raise SchemaError(self.which, pointer, _short(err.message))


def _short(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[: limit - 1] + "…"


def resolve(ref: str, base: Path) -> Path:
    """Schemas and lookups are named relative to the mapping file, or to the config dir above it."""
    candidate = base / ref
    if candidate.exists():
        return candidate
    parent = base.parent / ref
    return parent if parent.exists() else candidate


def load_schema(ref: str, base: Path, which: str) -> CompiledSchema:
    path = resolve(ref, base)
    try:
        text = path.read_bytes().decode("utf-8")
        schema = json.loads(text)
    except FileNotFoundError:
        raise ConfigError(f"schema file {ref!r} not found (looked in {base} and {base.parent})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"schema file {ref!r} is not valid JSON: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read schema file {ref!r}: {exc.strerror or exc}") from None
    if not isinstance(schema, dict):
        raise ConfigError(f"schema file {ref!r} must hold a JSON object")
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except JsonSchemaDefinitionError as exc:
        raise ConfigError(f"schema file {ref!r} is not a valid JSON Schema: {_short(exc.message)}") from None
    return CompiledSchema(str(path), which, cls(schema, format_checker=cls.FORMAT_CHECKER), _fast(schema))


def _fast(schema: dict[str, Any]) -> Any:
    try:
        import jsonschema_rs
    except ImportError:  # optional speed-up
        return None
    try:
        return jsonschema_rs.validator_for(schema, validate_formats=True)
    except Exception:  # a schema feature it does not support: python-jsonschema alone
        return None

