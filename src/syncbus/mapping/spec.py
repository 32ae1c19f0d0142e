"""The mapping file format (DESIGN §4) as pydantic models.

These models are the single source of truth: they validate mapping files,
refuse unknown keys (a typo must never be silently ignored) and generate the
JSON Schema editors use (``syncbus schema``). Semantics that need more than one
key (exactly one value source per field, ``each`` needs ``fields``) are checked
here too, so that ``syncbus validate`` reports them with a line number.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class ChangelogEntry(_Strict):
    """One change to a flow: what, why and who (DESIGN §9: every change is recorded)."""

    version: int
    date: dt.date
    by: str = Field(description="Who made the change.")
    reason: str = Field(description="Why the change was made.")


class SourceSpec(_Strict):
    topic: str = Field(description="Bus topic the route consumes.", min_length=1)
    schema_: str | None = Field(
        None, alias="schema", description="JSON Schema file the decoded record must match before mapping."
    )
    format: Literal["json", "xml", "csv"] | None = Field(
        None, description="Payload format; default: from the record's content type."
    )


class TargetSpec(_Strict):
    sink: str = Field(description="Name of a sink declared in connectors/*.yaml.", min_length=1)
    format: Literal["json", "xml", "csv"] = "json"
    root: str | None = Field(None, description="XML only: the root element wrapping the mapped object.")
    schema_: str | None = Field(
        None, alias="schema", description="JSON Schema file the mapped object must match before delivery."
    )
    when: str | None = Field(None, description="CEL filter for this target only (fan-out).")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Codec options: xml {pretty, encoding}; csv {delimiter, encoding, columns}.",
    )

    @model_validator(mode="after")
    def _root_only_for_xml(self) -> TargetSpec:
        if self.root is not None and self.format != "xml":
            raise ValueError("'root' applies to format xml only")
        return self


class FieldSpec(_Strict):
    """One target field given as a spec (the long form)."""

    from_: str | None = Field(None, alias="from", description="Dotted source path, e.g. customer.code.")
    const: Any = Field(None, description="A constant value.")
    expr: str | None = Field(None, description="CEL expression over `record` (and `item` inside `each`).")
    each: str | None = Field(None, description="Source list to map item by item with `fields`.")
    fields: dict[str, FieldValue] | None = Field(
        None, description="Nested object (with `each`: the object built for each item)."
    )
    transform: str | None = Field(None, description='Transform chain, e.g. "trim | upper".')
    map: dict[str, Any] | None = Field(None, description="Inline value table applied after transforms.")
    default: Any = Field(None, description="Used when the source value is missing, null or not in `map`.")
    required: bool = Field(False, description="A missing value is a mapping error (dead letter).")

    @field_validator("map", mode="before")
    @classmethod
    def _map_keys_as_text(cls, value: Any) -> Any:
        # YAML reads `1: x` with an int key; source values are compared as text.
        if isinstance(value, dict):
            from .transforms import to_text

            return {k if isinstance(k, str) else to_text(k): v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _one_source(self) -> FieldSpec:
        given = self.model_fields_set
        sources = [k for k in ("const", "expr", "each") if k in given]
        if "from_" in given:
            sources.insert(0, "from")
        if "fields" in given and "each" not in given and "from_" not in given:
            sources.append("fields")
        if len(sources) > 1:
            raise ValueError(f"give only one of from/const/expr/each/fields, not {' and '.join(sources)}")
        if not sources:
            raise ValueError("a field needs one of from, const, expr, each or fields")
        if "each" in given and "fields" not in given:
            raise ValueError("'each' needs 'fields' (the object built for every item)")
        if "const" in given and ({"transform", "map", "default", "required"} & given):
            raise ValueError("'const' cannot be combined with transform/map/default/required")
        if "fields" in given and ({"transform", "map"} & given):
            raise ValueError("'transform' and 'map' apply to values, not to nested objects")
        return self

    @property
    def has_default(self) -> bool:
        return "default" in self.model_fields_set


FieldValue = Annotated[
    Annotated[str, Tag("<path>")] | Annotated[FieldSpec, Tag("<spec>")],
    Discriminator(lambda v: "<path>" if isinstance(v, str) else "<spec>"),
]
FieldSpec.model_rebuild()


class MappingSpec(_Strict):
    """A route: where records come from, how they are mapped, where they go."""

    mapping: str = Field(
        description="Unique name; the `route` label everywhere.", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
    )
    version: int = Field(ge=1, description="Bump on every change; stamped on every delivered record.")
    owner: str = Field(description="Process owner: labels metrics and alerts.", min_length=1)
    description: str = ""
    changelog: list[ChangelogEntry] = Field(default_factory=list)
    systems: SystemsSpec | None = Field(
        None, description="Catalogue: the systems this route connects and how (for `syncbus catalog`)."
    )
    source: SourceSpec
    when: str | None = Field(None, description="CEL filter; records for which it is false are skipped.")
    key: str | None = Field(None, description="Source path of the record key; default: the bus key.")
    target: TargetSpec | None = None
    targets: list[TargetSpec] | None = Field(None, min_length=1)
    fields: dict[str, FieldValue] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_target_form(self) -> MappingSpec:
        if (self.target is None) == (self.targets is None):
            raise ValueError("give exactly one of 'target' or 'targets'")
        if self.changelog and max(c.version for c in self.changelog) > self.version:
            raise ValueError("changelog mentions a version newer than 'version'")
        return self

    @property
    def all_targets(self) -> list[TargetSpec]:
        return list(self.targets) if self.targets is not None else [self.target]  # type: ignore[list-item]


class SystemsSpec(_Strict):
    """Interface-catalogue facts that are not visible in the mapping itself."""

    source: str = Field(description="The sending system, e.g. CRM.")
    target: str = Field(description="The receiving system, e.g. ERP.")
    frequency: str = Field("realtime", description="realtime, or a schedule such as 'daily 22:00'.")
    interface: str = Field("", description="e.g. 'REST API, XML body', 'database to database'.")
    security: str = Field("", description="e.g. 'OAuth2 client credentials'.")


MappingSpec.model_rebuild()


def mapping_json_schema() -> dict[str, Any]:
    """JSON Schema of the mapping file format, for editors (VS Code YAML)."""
    schema = MappingSpec.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://syncbus.dev/schemas/mapping.schema.json"
    schema["title"] = "syncbus mapping"
    return schema
