"""``diff_specs``: field-level differences from parsed specs, never from the text."""

from __future__ import annotations

from syncbus.changes.diff import Change, diff_specs, flatten
from syncbus.changes.history import parse_text
from syncbus.mapping.spec import MappingSpec
from tests.changes.flow import live_text, shadow_text

BASE = """\
mapping: orders
version: 1
owner: ops
source: {topic: t}
when: record.status == "OK"
key: id
targets:
  - {sink: erp, format: json}
  - {sink: audit, format: json, when: record.amount > 10}
fields:
  ID: id
  HEAD:
    CUR: {from: currency, default: CNY}
    ORG: {from: region, map: {east: "1"}, default: "9"}
  ITEMS:
    each: lines
    fields:
      SKU: {from: sku, transform: upper}
      QTY: qty
"""


def spec(text: str) -> MappingSpec:
    return parse_text(text, "test.yaml")


def changes(old: str, new: str) -> list[tuple[str, str, str]]:
    d = diff_specs(spec(old), spec(new))
    return [(c.kind, c.path, c.what) for c in d.route_changes + d.field_changes]


def test_identical_specs_have_no_difference_even_when_the_text_differs():
    reformatted = BASE.replace("  ID: id\n", "  ID: {from: id}   # same rule, long form\n").replace(
        "source: {topic: t}", "source:\n  topic: t")
    d = diff_specs(spec(BASE), spec(reformatted))
    assert d.empty, d.render()
    assert "no differences" in d.render()


def test_each_kind_of_field_change_is_named_with_its_path():
    new = (BASE.replace("default: CNY", "default: USD")
               .replace('map: {east: "1"}', 'map: {east: "1", west: "2"}')
               .replace("transform: upper", "transform: trim | upper")
               .replace("      QTY: qty\n", "      QTY: {from: qty, required: true}\n      UOM: uom\n")
               .replace("  ID: id\n", "  ID: {expr: 'record.id + \"-x\"'}\n"))
    assert changes(BASE, new) == [
        ("changed", "ID", "source"),
        ("changed", "HEAD.CUR", "default"),
        ("changed", "HEAD.ORG", "map"),
        ("changed", "ITEMS[].SKU", "transform"),
        ("changed", "ITEMS[].QTY", "required"),
        ("added", "ITEMS[].UOM", ""),
    ]


def test_fields_removed_and_nested_objects_flattened():
    new = BASE.replace("    CUR: {from: currency, default: CNY}\n", "")
    d = diff_specs(spec(BASE), spec(new))
    assert [str(c) for c in d.field_changes] == ["- HEAD.CUR: from currency, default CNY"]
    assert d.counts() == {"added": 0, "removed": 1, "changed": 0}
    assert list(flatten(spec(BASE).fields)) == ["ID", "HEAD.CUR", "HEAD.ORG", "ITEMS", "ITEMS[].SKU", "ITEMS[].QTY"]


def test_route_level_when_key_targets_and_field_order():
    new = (BASE.replace('when: record.status == "OK"', 'when: record.status != "DRAFT"')
               .replace("key: id", "key: order.id")
               .replace("when: record.amount > 10", "when: record.amount > 100")
               .replace("  - {sink: erp, format: json}\n", "  - {sink: erp, format: xml, root: ORDERS}\n")
               .replace("    CUR: {from: currency, default: CNY}\n    ORG: {from: region, map: {east: \"1\"}, "
                        "default: \"9\"}\n",
                        "    ORG: {from: region, map: {east: \"1\"}, default: \"9\"}\n    CUR: {from: currency, "
                        "default: CNY}\n"))
    d = diff_specs(spec(BASE), spec(new))
    assert Change("changed", "when", "", 'record.status == "OK"', 'record.status != "DRAFT"') in d.route_changes
    assert Change("changed", "key", "", "id", "order.id") in d.route_changes
    assert Change("changed", "target audit", "when", "record.amount > 10", "record.amount > 100") in d.route_changes
    assert Change("changed", "target erp", "format", "json", "xml") in d.route_changes
    assert Change("changed", "HEAD", "order", ["CUR", "ORG"], ["ORG", "CUR"]) in d.route_changes
    assert d.field_changes == []


def test_targets_added_and_removed_by_sink():
    new = BASE.replace("  - {sink: audit, format: json, when: record.amount > 10}\n",
                       "  - {sink: finance, format: csv}\n")
    assert changes(BASE, new) == [("removed", "target audit", ""), ("added", "target finance", "")]


def test_reference_flow_shadow_differs_in_exactly_one_rule():
    d = diff_specs(spec(live_text()), spec(shadow_text()))
    assert [(c.kind, c.path, c.what) for c in d.field_changes] == [("changed", "IDOC.E1EDK01.VKORG", "map")]
    assert [c.path for c in d.route_changes] == ["shadow_of"]
    assert d.to_json()["from"] == 4 and d.to_json()["to"] == 5
