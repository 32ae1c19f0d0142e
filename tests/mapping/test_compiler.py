"""Mapping semantics of DESIGN §4, one rule per test."""

import json

import pytest

from syncbus.errors import ConfigErrors, MappingError


def mapped(m, record):
    result = m.map_object(record)
    assert not result.skipped
    return result.outputs[0].payload


def test_plain_paths_keep_field_order(compile_yaml):
    m = compile_yaml("""
        fields:
          Z: a
          A: b.c
          M: lines[1].x
    """)
    out = mapped(m, {"a": 1, "b": {"c": "two"}, "lines": [{"x": 0}, {"x": 9}]})
    assert list(out) == ["Z", "A", "M"]
    assert out == {"Z": 1, "A": "two", "M": 9}


def test_missing_gives_no_field_unless_default(compile_yaml):
    m = compile_yaml("""
        fields:
          A: missing
          B: {from: missing, default: X}
          C: {from: nullval, default: Y}
          D: nullval
    """)
    assert mapped(m, {"nullval": None}) == {"B": "X", "C": "Y"}


def test_required_names_field_and_source(compile_yaml):
    m = compile_yaml("""
        fields:
          VBELN: {from: order_id, required: true}
    """)
    with pytest.raises(MappingError) as err:
        m.map_object({})
    assert err.value.field == "VBELN"
    assert err.value.source == "order_id"
    assert "required value is missing" in str(err.value)


def test_const_expr_transform_map(compile_yaml):
    m = compile_yaml("""
        fields:
          AUART: {const: ZOR}
          GROSS: {expr: "double(record.amount) * 1.13", transform: "decimal(2)"}
          NAME: {from: name, transform: "trim | upper"}
          VKORG: {from: region, map: {east: "1000", south: "2000"}, default: "9999"}
          FLAG: {from: n, map: {"1": one}}
    """)
    out = mapped(m, {"amount": 100, "name": "  acme ", "region": "west", "n": 1})
    assert out == {"AUART": "ZOR", "GROSS": "113.00", "NAME": "ACME", "VKORG": "9999", "FLAG": "one"}


def test_map_miss_without_default_is_an_error(compile_yaml):
    m = compile_yaml("""
        fields:
          VKORG: {from: region, map: {east: "1000"}}
    """)
    with pytest.raises(MappingError, match="'west' is not in the map"):
        m.map_object({"region": "west"})


def test_transform_error_names_the_field(compile_yaml):
    m = compile_yaml("""
        fields:
          NETWR: {from: amount, transform: "decimal(2)"}
    """)
    with pytest.raises(MappingError) as err:
        m.map_object({"amount": "abc"})
    assert err.value.field == "NETWR"
    assert "decimal" in str(err.value)


def test_each_and_nested_objects(compile_yaml):
    m = compile_yaml("""
        fields:
          HEAD:
            fields:
              ID: order_id
              CUST: {from: $.customer.code}
          ITEMS:
            each: lines
            fields:
              POSNR: {from: line_no, transform: "zfill(6)"}
              MATNR: sku
              ORDER: $.order_id
              DOUBLE: {expr: "item.qty * 2"}
          CUSTOMER:
            from: customer
            fields:
              CODE: code
    """)
    out = mapped(m, {"order_id": "SO1", "customer": {"code": "C1"},
                     "lines": [{"line_no": 10, "sku": "A", "qty": 1}, {"line_no": 20, "sku": "B", "qty": 3}]})
    assert out == {
        "HEAD": {"ID": "SO1", "CUST": "C1"},
        "ITEMS": [
            {"POSNR": "000010", "MATNR": "A", "ORDER": "SO1", "DOUBLE": 2},
            {"POSNR": "000020", "MATNR": "B", "ORDER": "SO1", "DOUBLE": 6},
        ],
        "CUSTOMER": {"CODE": "C1"},
    }


def test_each_error_names_the_item(compile_yaml):
    m = compile_yaml("""
        fields:
          ITEMS:
            each: lines
            fields:
              MATNR: {from: sku, required: true}
    """)
    with pytest.raises(MappingError) as err:
        m.map_object({"lines": [{"sku": "A"}, {}]})
    assert err.value.field == "ITEMS[1].MATNR"


def test_each_over_single_xml_element(compile_yaml):
    m = compile_yaml("""
        fields:
          ITEMS: {each: order.line, fields: {S: sku}}
    """)
    assert mapped(m, {"order": {"line": {"sku": "A"}}}) == {"ITEMS": [{"S": "A"}]}


def test_when_skips_and_key(compile_yaml):
    m = compile_yaml("""
        mapping: t
        version: 1
        owner: o
        source: {topic: x}
        when: record.status == "APPROVED"
        key: order_id
        target: {sink: s}
        fields: {ID: order_id}
    """)
    assert m.map_object({"status": "DRAFT", "order_id": 1}).skipped
    res = m.map_object({"status": "APPROVED", "order_id": 7})
    assert res.key == "7"
    assert json.loads(res.outputs[0].body) == {"ID": 7}


def test_fan_out_with_per_target_when(compile_yaml):
    m = compile_yaml("""
        mapping: t
        version: 1
        owner: o
        source: {topic: x}
        targets:
          - {sink: erp, format: xml, root: ORDER}
          - {sink: review, format: json, when: "double(record.amount) >= 100000.0"}
        fields: {ID: id, "@currency": {const: CNY}, AMT: amount}
    """)
    small = m.map_object({"id": "1", "amount": 10})
    assert [o.target.sink for o in small.outputs] == ["erp"]
    assert small.outputs[0].body.startswith(b"<?xml")
    assert b'<ORDER currency="CNY">' in small.outputs[0].body
    big = m.map_object({"id": "2", "amount": 100000})
    assert [o.target.sink for o in big.outputs] == ["erp", "review"]


def test_when_on_missing_key_is_a_mapping_error(compile_yaml):
    m = compile_yaml("""
        mapping: t
        version: 1
        owner: o
        source: {topic: x}
        when: record.status == "A"
        target: {sink: s}
        fields: {ID: id}
    """)
    with pytest.raises(MappingError, match="no such key 'status'"):
        m.map_object({"id": 1})


def test_attributes_and_text_in_xml(compile_yaml):
    m = compile_yaml("""
        mapping: t
        version: 1
        owner: o
        source: {topic: x}
        target: {sink: s, format: xml, root: DOC}
        fields:
          AMOUNT:
            fields:
              "@currency": currency
              "#text": {from: amount, transform: "decimal(2)"}
    """)
    body = m.map_object({"currency": "CNY", "amount": 5}).outputs[0].body.decode()
    assert '<AMOUNT currency="CNY">5.00</AMOUNT>' in body


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("fields: {A: {frm: x}}", "unknown key 'frm'"),
        ("fields: {A: {from: x, transform: uper}}", "unknown transform 'uper'"),
        ("fields: {A: {expr: 'record.x *'}}", "bad CEL expression"),
        ("fields: {A: {from: x, const: 1}}", "only one of"),
        ("fields: {A: {each: lines}}", "'each' needs 'fields'"),
        ("fields: {A: 'a..b'}", "bad source path"),
        ("fields: {A: {from: x, transform: 'lookup(nope)'}}", "nope"),
    ],
)
def test_compile_errors_have_file_line_col(compile_yaml, snippet, message):
    with pytest.raises(ConfigErrors) as err:
        compile_yaml(snippet + "\n")
    text = str(err.value)
    assert message in text
    # header is 5 lines, so the field is on line 6
    assert ":6:" in text, text


def test_every_problem_is_reported(compile_yaml):
    with pytest.raises(ConfigErrors) as err:
        compile_yaml("""
            fields:
              A: {from: x, transform: uper}
              B: {expr: 'record.x *'}
        """)
    assert len(err.value.errors) == 2


def test_unknown_top_level_key_and_duplicates(compile_yaml):
    with pytest.raises(ConfigErrors, match=r"m.yaml:6:1: unknown key 'feilds'"):
        compile_yaml("feilds: {A: a}\nfields: {A: a}\n")
    with pytest.raises(ConfigErrors, match="duplicate key 'A'"):
        compile_yaml("fields:\n  A: a\n  A: b\n")


def test_target_and_targets_exclusive(compile_yaml):
    with pytest.raises(ConfigErrors, match="exactly one of 'target' or 'targets'"):
        compile_yaml("""
            mapping: t
            version: 1
            owner: o
            source: {topic: x}
            fields: {A: a}
        """)


def test_user_text_never_becomes_generated_source(compile_yaml, tmp_path):
    # Field names, paths, defaults and map keys are values in the generated builder's
    # namespace, never source text: code-like names map like any other name.
    marker = tmp_path / "pwned"
    evil = f"x'); open('{marker}', 'w'); ('"
    m = compile_yaml(f"""
        fields:
          "{evil}": {{from: a, default: "{evil}", map: {{"{evil}": ok}}}}
          "__import__('os').system('touch {marker}')": a
    """)
    out = m.map_object({"a": evil}).outputs[0].payload
    assert out == {evil: "ok", f"__import__('os').system('touch {marker}')": evil}
    assert not marker.exists()


def test_generated_source_check_refuses_unexpected_text():
    from syncbus.mapping.codegen import _check_source

    _check_source("def build(obj, root):\n    out[K0] = C0\n")
    with pytest.raises(RuntimeError):
        _check_source("out[K0] = 'quoted'\n")


@pytest.mark.parametrize("value", [None, "", "MISSING"])
def test_required_refuses_absent_null_and_empty(compile_yaml, value):
    m = compile_yaml("""
        fields:
          VBELN: {from: order_id, required: true}
          NAME: {from: name, transform: trim, required: true}
    """)
    record = {"name": "x"} if value == "MISSING" else {"order_id": value, "name": "x"}
    with pytest.raises(MappingError) as err:
        m.map_object(record)
    assert err.value.field == "VBELN" and "required value is missing" in str(err.value)


def test_required_keeps_zero_false_and_blank_text_until_a_transform_empties_it(compile_yaml):
    m = compile_yaml("""
        fields:
          A: {from: a, required: true}
          B: {from: b, required: true}
          C: {from: c, transform: trim, required: true}
          D: {from: d, required: true, default: fallback}
    """)
    assert mapped(m, {"a": 0, "b": False, "c": " x ", "d": ""}) == {"A": 0, "B": False, "C": "x", "D": "fallback"}
    with pytest.raises(MappingError, match="required value is empty after the transform") as err:
        m.map_object({"a": 1, "b": True, "c": "   "})
    assert err.value.field == "C"


def test_empty_text_is_kept_when_not_required(compile_yaml):
    m = compile_yaml("""
        fields:
          A: a
          B: {from: b, default: x}
    """)
    assert mapped(m, {"a": "", "b": ""}) == {"A": "", "B": ""}


def test_version_must_match_the_newest_changelog_entry(compile_yaml):
    with pytest.raises(ConfigErrors) as err:
        compile_yaml("""
            mapping: t
            version: 3
            owner: o
            changelog:
              - {version: 1, date: 2026-01-01, by: a, reason: first}
              - {version: 2, date: 2026-02-01, by: b, reason: second, approved_by: c}
            source: {topic: x}
            target: {sink: s}
            fields: {A: a}
        """)
    [e] = err.value.errors
    assert e.location is not None and e.location.line == 3
    assert "version is 3 but the newest changelog entry is version 2" in e.message
    ok = compile_yaml("""
        mapping: t
        version: 2
        owner: o
        changelog:
          - {version: 2, date: 2026-02-01, by: b, reason: second, approved_by: c}
          - {version: 1, date: 2026-01-01, by: a, reason: first}
        source: {topic: x}
        target: {sink: s}
        fields: {A: a}
    """, name="ok.yaml")
    assert ok.spec.changelog[0].approved_by == "c"


def test_a_route_name_longer_than_the_store_keeps_is_refused_at_load(compile_yaml):
    """The state store keeps route names in 200 characters; PostgreSQL refuses longer ones at the first write."""
    with pytest.raises(ConfigErrors) as err:
        compile_yaml(f"mapping: {'r' * 201}\nversion: 1\nowner: t\nsource: {{topic: t}}\n"
                     "target: {sink: out, format: json}\nfields:\n  A: a\n")
    assert "m.yaml:1:1: mapping: String should have at most 200 characters" in str(err.value)
    assert compile_yaml(f"mapping: {'r' * 200}\nversion: 1\nowner: t\nsource: {{topic: t}}\n"
                        "target: {sink: out, format: json}\nfields:\n  A: a\n").name == "r" * 200
