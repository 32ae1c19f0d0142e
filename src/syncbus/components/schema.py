"""The JSON Schema of ``connectors/*.yaml``, generated from the source and sink specs, for editors.

VS Code YAML (or any JSON Schema aware editor) then completes option names,
shows their descriptions and flags mistakes as you type. The schema says
what the loader enforces:

* one branch per ``type`` (``if type == X then <X's options>``), so an editor
  shows exactly the options of the type at hand;
* every option ``x`` may be written ``x_env: VAR`` instead (one of the two
  when the option is required, never both);
* secret options exist *only* as ``x_env`` -- a plain secret is an error in
  the editor, as it is in ``syncbus validate``;
* durations and sizes accept their text forms (``10s``, ``1MiB``).

``schemas/connectors.schema.json`` is this module's output for the built-in
types (``python -m syncbus.components.schema > schemas/connectors.schema.json``);
a test keeps it in sync. ``syncbus docs --format jsonschema`` prints it with
the installed plugins included.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from ..config import SECRET_KEYS
from .spec import ComponentSpec

SCHEMA_ID = "https://syncbus.dev/schemas/connectors.schema.json"
SECTIONS = (("sources", "source"), ("sinks", "sink"))


class _TextFriendly(GenerateJsonSchema):
    """Numbers parsed by a before-validator (durations, sizes) also accept their text form."""

    def function_before_schema(self, schema: core_schema.BeforeValidatorFunctionSchema) -> JsonSchemaValue:
        inner = self.generate_inner(schema["schema"])
        if inner.get("type") in ("number", "integer"):
            return {"anyOf": [inner, {"type": "string", "description": "with a unit, e.g. 10s, 500ms, 1MiB"}]}
        return inner


def _is_secret(name: str, prop: dict[str, Any]) -> bool:
    return bool(prop.get("secret") or prop.get("writeOnly")) or name in SECRET_KEYS


def _env_variant(name: str) -> dict[str, Any]:
    return {"type": "string", "description": f"Name of the environment variable holding `{name}`."}


def with_env_forms(obj: dict[str, Any]) -> dict[str, Any]:
    """An object schema where every option ``x`` may be ``x_env`` and secrets may only be ``x_env``."""
    props: dict[str, Any] = obj.get("properties") or {}
    if not props:
        return obj
    required: list[str] = list(obj.get("required") or [])
    new_props: dict[str, Any] = {}
    new_required: list[str] = []
    rules: list[dict[str, Any]] = list(obj.get("allOf") or [])
    for name, prop in props.items():
        prop = {k: v for k, v in prop.items() if k != "secret"}
        env = f"{name}_env"
        if name == "type":
            new_props[name] = prop
            if name in required:
                new_required.append(name)
            continue
        if _is_secret(name, prop):
            env_prop = _env_variant(name)
            env_prop["description"] = (f"Name of the environment variable holding `{name}` (a secret: "
                                       f"never written in the file). {prop.get('description', '')}").strip()
            new_props[env] = env_prop
            if name in required:
                new_required.append(env)
            continue
        new_props[name] = prop
        new_props[env] = _env_variant(name)
        if name in required:
            rules.append({"oneOf": [{"required": [name]}, {"required": [env]}]})
        else:
            rules.append({"not": {"required": [name, env]}})
    out = {k: v for k, v in obj.items() if k not in ("properties", "required", "allOf")}
    out["properties"] = new_props
    if new_required:
        out["required"] = new_required
    if rules:
        out["allOf"] = rules
    return out


def component_schema(spec: ComponentSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the type's own schema, the definitions it refers to), keys prefixed ``<kind>.<name>.``."""
    assert spec.config is not None
    prefix = f"{spec.kind}.{spec.name}."
    schema = spec.config.model_json_schema(ref_template=f"#/$defs/{prefix}{{model}}",
                                           schema_generator=_TextFriendly)
    defs = {f"{prefix}{k}": with_env_forms(v) for k, v in (schema.pop("$defs", None) or {}).items()}
    schema = with_env_forms(schema)
    schema.pop("title", None)
    schema["title"] = f"{spec.kind} type {spec.name}"
    schema["description"] = spec.summary
    return schema, defs


def connectors_schema(specs: Iterable[ComponentSpec]) -> dict[str, Any]:
    """The whole document schema: ``sources:`` and ``sinks:`` lists, one branch per type."""
    by_kind: dict[str, list[ComponentSpec]] = {"source": [], "sink": []}
    for spec in specs:
        if spec.kind in by_kind and spec.config is not None:
            by_kind[spec.kind].append(spec)
    defs: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    for section, kind in SECTIONS:
        branches: list[dict[str, Any]] = []
        names: list[str] = []
        for spec in sorted(by_kind[kind], key=lambda s: s.name):
            schema, nested = component_schema(spec)
            defs.update(nested)
            defs[f"{kind}.{spec.name}"] = schema
            names.append(spec.name)
            branches.append({"if": {"properties": {"type": {"const": spec.name}}, "required": ["type"]},
                             "then": {"$ref": f"#/$defs/{kind}.{spec.name}"}})
        defs[kind] = {
            "type": "object",
            "description": f"One {kind}: `name`, `type` and the type's options (any option x also as x_env).",
            "required": ["name", "type"],
            "properties": {"name": {"type": "string"},
                           "type": {"enum": names, "description": f"The {kind} type."}},
            "allOf": branches,
        }
        properties[section] = {"type": "array", "items": {"$ref": f"#/$defs/{kind}"}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "syncbus connectors",
        "description": "connectors/*.yaml: source and sink instances (generated from the component specs).",
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "$defs": dict(sorted(defs.items())),
    }


def builtin_schema() -> dict[str, Any]:
    """The schema of the built-in types: what ``schemas/connectors.schema.json`` holds."""
    from .registry import load_registry

    return connectors_schema(s for s in load_registry(lambda group: []).specs() if s.origin == "builtin")


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render(builtin_schema()))
