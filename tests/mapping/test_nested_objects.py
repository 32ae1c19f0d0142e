"""Nested objects written as nested mappings, and the `fields:` form they replace (DESIGN §4)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from syncbus.errors import ConfigErrors, SyncbusError
from syncbus.formats import get_codec
from syncbus.mapping.loader import load_mapping
from syncbus.mapping.spec import SPEC_KEYWORDS, mapping_json_schema

ROOT = Path(__file__).resolve().parents[2]
FLOWS = sorted(p.stem for p in (ROOT / "mappings").glob("*.yaml"))


def is_object(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and not (set(value) & SPEC_KEYWORDS)


def to_fields_form(fields: dict[str, Any]) -> dict[str, Any]:
    """Every nested object as {fields: {...}}."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if is_object(value):
            out[name] = {"fields": to_fields_form(value)}
        elif isinstance(value, dict) and "fields" in value:
            out[name] = {**value, "fields": to_fields_form(value["fields"])}
        else:
            out[name] = value
    return out


def to_nested_form(fields: dict[str, Any]) -> dict[str, Any]:
    """Every {fields: {...}} without other keys as a nested mapping (when its keys allow it)."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if isinstance(value, dict) and "fields" in value:
            inner = to_nested_form(value["fields"])
            out[name] = inner if set(value) == {"fields"} and is_object(inner) else {**value, "fields": inner}
        else:
            out[name] = value
    return out


def cases() -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for test_file in sorted((ROOT / "mappings" / "tests").glob("*.yaml")):
        data = yaml.safe_load(test_file.read_text("utf-8"))
        found += [(data["mapping"], c["name"], c) for c in data["cases"]]
    return found


def case_input(case: dict[str, Any]) -> Any:
    if "input" in case:
        return json.loads(json.dumps(case["input"], default=str))
    path = ROOT / "mappings" / "tests" / case["input_file"]
    return get_codec("xml" if path.suffix == ".xml" else "json").decode(path.read_bytes())


def outcome(mapping: Any, record: Any) -> Any:
    try:
        result = mapping.map_object(record)
    except SyncbusError as exc:
        return ("error", str(exc))
    return ("ok", result.skipped, [(o.target.sink, o.payload, o.body) for o in result.outputs])


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "mappings").mkdir()
    for sub in ("schemas", "lookups"):
        shutil.copytree(ROOT / "mappings" / sub, tmp_path / "mappings" / sub)
    return tmp_path


@pytest.mark.parametrize("flow", FLOWS)
def test_nested_and_fields_forms_give_identical_output(flow: str, workdir: Path) -> None:
    data = yaml.safe_load((ROOT / "mappings" / f"{flow}.yaml").read_text("utf-8"))
    texts = {}
    for form, convert in (("fields", to_fields_form), ("nested", to_nested_form)):
        variant = {**data, "fields": convert(to_fields_form(data["fields"]))}
        texts[form] = yaml.safe_dump(variant, allow_unicode=True, sort_keys=False)
        (workdir / "mappings" / f"{form}.yaml").write_text(texts[form], encoding="utf-8")
    fields_form = load_mapping(workdir / "mappings" / "fields.yaml")
    nested_form = load_mapping(workdir / "mappings" / "nested.yaml")
    original = load_mapping(ROOT / "mappings" / f"{flow}.yaml")
    flow_cases = [c for name, _, c in cases() if name == flow]
    assert flow_cases, f"no test cases for {flow}"
    for case in flow_cases:
        record = case_input(case)
        expected = outcome(original, record)
        assert outcome(fields_form, record) == expected, case["name"]
        assert outcome(nested_form, record) == expected, case["name"]
    if flow == "crm-order-to-erp":  # the flow that has nested objects: the two texts really differ
        assert texts["fields"] != texts["nested"]
        assert "fields" not in yaml.safe_load(texts["nested"])["fields"]["IDOC"]


def test_reference_crm_flow_is_written_in_the_nested_form() -> None:
    data = yaml.safe_load((ROOT / "mappings" / "crm-order-to-erp.yaml").read_text("utf-8"))
    idoc = data["fields"]["IDOC"]
    assert is_object(idoc) and is_object(idoc["E1EDK01"]) and is_object(idoc["E1EDP01"]["fields"]["E1EDP19"])


def test_deep_nesting_and_paths(compile_yaml: Any) -> None:
    m = compile_yaml("""
        fields:
          HEADER: {DOCNUM: doc_no, PARTNER: {ID: partner_id, NAME: {from: partner.name, transform: upper}}}
          ITEMS:
            each: lines
            fields:
              POS: line_no
              MAT: {ID: sku, ORDER: $.doc_no}
    """)
    out = m.map_object({"doc_no": "D1", "partner_id": "P9", "partner": {"name": "acme"},
                        "lines": [{"line_no": 1, "sku": "A"}]}).outputs[0].payload
    assert out == {"HEADER": {"DOCNUM": "D1", "PARTNER": {"ID": "P9", "NAME": "ACME"}},
                   "ITEMS": [{"POS": 1, "MAT": {"ID": "A", "ORDER": "D1"}}]}


def test_a_target_field_named_like_a_keyword_needs_fields(compile_yaml: Any) -> None:
    m = compile_yaml("""
        fields:
          ROUTE: {fields: {from: origin, when: departure_time, map: legs}}
    """)
    out = m.map_object({"origin": "PVG", "departure_time": "10:15", "legs": 2}).outputs[0].payload
    assert out == {"ROUTE": {"from": "PVG", "when": "10:15", "map": 2}}


def test_mixing_keywords_and_target_fields_says_to_use_fields(compile_yaml: Any) -> None:
    with pytest.raises(ConfigErrors) as err:
        compile_yaml("""
            fields:
              HEADER: {from: header, DOCNUM: doc_no}
        """)
    [e] = err.value.errors
    assert "mixes spec keywords (from) with target fields (DOCNUM)" in e.message
    assert "fields:" in e.message
    assert e.location is not None and e.location.line == 8  # header 5 lines, blank, fields:, HEADER


def test_a_misspelt_keyword_is_not_taken_for_a_target_field(compile_yaml: Any) -> None:
    with pytest.raises(ConfigErrors) as err:
        compile_yaml("""
            fields:
              A: {frm: x}
              B: {from: y, requried: true}
        """)
    messages = [e.message for e in err.value.errors]
    assert any("unknown key 'frm' (did you mean 'from'?" in m for m in messages)
    assert any("unknown key 'requried' (did you mean 'required'?" in m for m in messages)


NESTED = """
    fields:
      HEADER:
        DOCNUM: doc_no
        PARTNER:
          ID: {from: partner_id, transform: %s}
          NAME: {from: name, default: x%s}
"""


@pytest.mark.parametrize(("id_transform", "name_extra", "line", "message"), [
    ("uper", "", 11, "unknown transform 'uper'"),
    ("upper", ", const: y", 12, "give only one of from/const"),
])
def test_errors_inside_nested_objects_point_at_their_line(
    compile_yaml: Any, id_transform: str, name_extra: str, line: int, message: str
) -> None:
    with pytest.raises(ConfigErrors) as err:
        compile_yaml(NESTED % (id_transform, name_extra))
    [e] = err.value.errors
    assert e.location is not None and e.location.line == line and message in e.message, e


def test_field_level_when_leaves_the_field_out(compile_yaml: Any) -> None:
    m = compile_yaml("""
        fields:
          ID: id
          RUSH: {const: X, when: 'record.priority == "high"'}
          LINES:
            each: lines
            fields:
              SKU: sku
              BIG: {from: qty, when: "item.qty > 10"}
    """)
    out = m.map_object({"id": 1, "priority": "high", "lines": [{"sku": "a", "qty": 11}, {"sku": "b", "qty": 1}]})
    assert out.outputs[0].payload == {"ID": 1, "RUSH": "X", "LINES": [{"SKU": "a", "BIG": 11}, {"SKU": "b"}]}
    low = m.map_object({"id": 2, "priority": "low", "lines": []}).outputs[0].payload
    assert low == {"ID": 2, "LINES": []}


def test_field_level_when_must_be_a_condition(compile_yaml: Any) -> None:
    with pytest.raises(ConfigErrors, match="a filter must give true or false"):
        compile_yaml("""
            fields:
              A: {from: a, when: "dec(record.a) * 2"}
        """)


def test_json_schema_accepts_both_forms_and_refuses_mixtures() -> None:
    validator = jsonschema.Draft202012Validator(mapping_json_schema())
    base = {"mapping": "m", "version": 1, "owner": "o", "source": {"topic": "t"}, "target": {"sink": "s"}}
    nested = {**base, "fields": {"H": {"DOCNUM": "doc_no", "P": {"ID": "partner_id"}}, "A": {"from": "a"}}}
    long_form = {**base, "fields": {"H": {"fields": {"DOCNUM": "doc_no", "P": {"fields": {"ID": "partner_id"}}}}}}
    keyword_named = {**base, "fields": {"R": {"fields": {"from": "origin"}}}}
    mixed = {**base, "fields": {"H": {"from": "h", "DOCNUM": "doc_no"}}}
    assert list(validator.iter_errors(nested)) == []
    assert list(validator.iter_errors(long_form)) == []
    assert list(validator.iter_errors(keyword_named)) == []
    assert list(validator.iter_errors(mixed)) != []
    committed = json.loads((ROOT / "schemas" / "mapping.schema.json").read_text("utf-8"))
    assert committed == mapping_json_schema(), "run: syncbus schema -o schemas/mapping.schema.json"
