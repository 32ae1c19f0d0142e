"""The mapping file format (DESIGN §4) as pydantic models.

These models are the single source of truth: they validate mapping files,
refuse unknown keys (a typo must never be silently ignored) and generate the
JSON Schema editors use (``syncbus schema``). Semantics that need more than one
key (exactly one value source per field, ``each`` needs ``fields``) are checked
here too, so that ``syncbus validate`` reports them with a line number.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)
from typing_extensions import TypeAliasType

from ..units import Duration


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class ChangelogEntry(_Strict):
    """One change to a flow: what, why and who (DESIGN §9: every change is recorded)."""

    version: int
    date: dt.date
    by: str = Field(description="Who made the change.")
    reason: str = Field(description="Why the change was made.")
    approved_by: str | None = Field(None, description="Who approved the change (process owner sign-off).")


class DedupeSpec(_Strict):
    """Drop a record that repeats one seen within ``window`` (same key and, by default, same content)."""

    window: Duration = Field(gt=0, description="How long a record is remembered, e.g. 10m.")
    compare: Literal["content", "key"] = Field(
        "content", description="content: same key AND same content is a duplicate (updates go through); "
                               "key: the key alone identifies a record.")


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


# Keys that make a mapping a field *spec*; a mapping with none of them is a nested object.
SPEC_KEYWORDS = frozenset({"from", "default", "required", "const", "map", "expr", "transform", "each", "fields",
                           "when"})


def misspelt_keyword(key: Any) -> str | None:
    """The keyword a key looks like a typo of (``frm`` -> ``from``), else None.

    Without this, ``{frm: x}`` would silently be a nested object with a target
    field ``frm``. A typo is one dropped letter or two swapped neighbours
    (``frm``, ``form``, ``requried``), or for the long keywords one wrong or
    extra letter; real field names (``max``, ``then``, ``required_by``) are
    not. A target field that does look like one goes under ``fields:``.
    """
    if not isinstance(key, str) or key in SPEC_KEYWORDS or not key.islower():
        return None
    for word in sorted(SPEC_KEYWORDS):
        if _one_typo(key, word):
            return word
    return None


def _one_typo(key: str, word: str) -> bool:
    if len(key) == len(word) - 1:  # a letter dropped
        return any(word[:i] + word[i + 1:] == key for i in range(len(word)))
    if len(key) == len(word):
        diff = [i for i in range(len(word)) if key[i] != word[i]]
        if len(diff) == 2 and diff[1] == diff[0] + 1 and key[diff[0]] == word[diff[1]] \
                and key[diff[1]] == word[diff[0]]:
            return True  # neighbours swapped
        return len(diff) == 1 and len(word) >= 6  # one wrong letter in a long keyword
    if len(key) == len(word) + 1 and len(word) >= 6:  # one extra letter in a long keyword
        return any(key[:i] + key[i + 1:] == word for i in range(len(key)))
    return False


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
    required: bool = Field(False, description="An absent, null or empty (\"\") value is a mapping error.")
    when: str | None = Field(None, description="CEL condition; when false the field is left out.")

    @model_validator(mode="before")
    @classmethod
    def _not_mixed(cls, data: Any) -> Any:
        # {from: x, HEADER: y} is neither a spec nor a nested object; say how to write each.
        if isinstance(data, dict):
            others = [str(k) for k in data if k not in SPEC_KEYWORDS and misspelt_keyword(k) is None]
            if others and len(others) < len(data):
                keywords = ", ".join(str(k) for k in data if k in SPEC_KEYWORDS)
                raise ValueError(
                    f"mixes spec keywords ({keywords}) with target fields ({', '.join(others)}); a nested object "
                    "has no keywords; to name a target field like a keyword, put the fields under 'fields:'"
                )
        return data

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
        sources: list[str] = [k for k in ("const", "expr", "each") if k in given]
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


def _field_kind(value: Any) -> str:
    if isinstance(value, str):
        return "<path>"
    if isinstance(value, dict) and value and not any(k in SPEC_KEYWORDS or misspelt_keyword(k) for k in value):
        return "<object>"
    return "<spec>"


# A target field: a source path, a spec, or a nested object (a mapping without spec keywords).
if TYPE_CHECKING:  # the same type, in the form type checkers read
    FieldValue = str | FieldSpec | dict[str, "FieldValue"]
else:
    FieldValue = TypeAliasType(
        "FieldValue",
        Annotated[
            Union[  # noqa: UP007  (a string annotation: `|` with a forward reference fails at run time)
                Annotated[str, Tag("<path>")],
                Annotated["FieldSpec", Tag("<spec>")],
                Annotated[dict[str, "FieldValue"], Tag("<object>")],
            ],
            Discriminator(_field_kind),
        ],
    )
FieldSpec.model_rebuild()


class MappingSpec(_Strict):
    """A route: where records come from, how they are mapped, where they go."""

    mapping: str = Field(
        description="Unique name; the `route` label everywhere.", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        max_length=200,  # the state store keeps routes in 200 characters (PostgreSQL enforces it)
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
    dedupe: DedupeSpec | None = Field(None, description="Drop duplicate records within a window (needs a key).")
    shadow_of: str | None = Field(  # issue 10: a parallel run that compares, never delivers
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Run as a shadow of this live route: map the same records, compare, never deliver.")
    target: TargetSpec | None = None
    targets: list[TargetSpec] | None = Field(None, min_length=1)
    fields: dict[str, FieldValue] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_target_form(self) -> MappingSpec:
        if (self.target is None) == (self.targets is None):
            raise ValueError("give exactly one of 'target' or 'targets'")
        if self.shadow_of == self.mapping:  # issue 10
            raise ValueError("'shadow_of' names the mapping itself; a shadow needs its own name")
        return self  # version vs changelog is checked by the compiler, which can point at the line

    @property
    def all_targets(self) -> list[TargetSpec]:
        return list(self.targets) if self.targets is not None else [self.target]  # type: ignore[list-item]


class SystemsSpec(_Strict):
    """Interface-catalogue facts that are not visible in the mapping itself."""

    source: str = Field(description="The sending system, e.g. CRM.")
    target: str = Field(description="The receiving system, e.g. ERP.")
    direction: Literal["one-way", "two-way"] = Field(
        "one-way", description="two-way when a route in the other direction exists too (OA ↔ HR).")
    frequency: str = Field("realtime", description="realtime, or a schedule such as 'daily 22:00'.")
    interface: str = Field("", description="e.g. 'REST API, XML body', 'database to database'.")
    security: str = Field("", description="e.g. 'OAuth2 client credentials'.")


MappingSpec.model_rebuild()


def mapping_json_schema() -> dict[str, Any]:
    """JSON Schema of the mapping file format, for editors (VS Code YAML)."""
    schema = MappingSpec.model_json_schema(by_alias=True, mode="validation")
    field_value = schema["$defs"]["FieldValue"]
    for member in field_value.get("oneOf", field_value.get("anyOf", [])):
        if member.get("type") == "object":  # the nested object: only a mapping without spec keywords
            member["propertyNames"] = {"not": {"enum": sorted(SPEC_KEYWORDS)}}
            member["minProperties"] = 1
            member["description"] = "A nested object: target field -> source path, spec or nested object."
        elif member.get("type") == "string":
            member["description"] = "A source path, e.g. customer.code or lines[0].sku."
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://syncbus.dev/schemas/mapping.schema.json"
    schema["title"] = "syncbus mapping"
    return schema
