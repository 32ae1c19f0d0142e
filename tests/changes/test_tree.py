"""Comparing what two mappings made of one record: paths that differ, whole-record differences."""

from __future__ import annotations

import json
from pathlib import Path

from syncbus.changes.history import compile_text
from syncbus.changes.tree import MAX_PATHS, Difference, Side, compare, field_of, run_side, tree_diff
from syncbus.mapping.compiler import CompiledMapping
from syncbus.record import Record

MAPPING = """\
mapping: m{n}
version: 1
owner: ops
source: {{topic: t}}
when: record.status != "DRAFT"
key: id
targets:
  - {{sink: erp, {fmt}}}
  - {{sink: big, format: json, when: record.amount > {limit}}}
fields:
  ID: {{from: id, required: true}}
  HEAD: {{CUR: {{from: cur, default: {cur}}}}}
  ITEMS: {{each: lines, fields: {{SKU: sku}}}}
"""


def mapping(tmp_path: Path, *, n: int = 1, fmt: str = "format: json", limit: int = 100,
            cur: str = "CNY") -> CompiledMapping:
    return compile_text(MAPPING.format(n=n, fmt=fmt, limit=limit, cur=cur), "m.yaml", tmp_path)


def record(**value: object) -> Record:
    return Record(json.dumps(value).encode(), headers={"content-type": "application/json"})


def test_same_output_is_same_and_a_changed_default_names_its_path(tmp_path: Path):
    a, b = mapping(tmp_path), mapping(tmp_path, n=2, cur="USD")
    rec = record(id="1", status="OK", amount=5, lines=[{"sku": "x"}])
    assert compare(run_side(a, rec), run_side(a, rec)).same
    diff = compare(run_side(a, rec), run_side(b, rec))
    assert diff.paths == ["HEAD.CUR"]
    assert diff.values["HEAD.CUR"] == {"live": "CNY", "shadow": "USD"}
    with_cur = record(id="1", status="OK", amount=5, cur="EUR", lines=[])
    assert compare(run_side(a, with_cur), run_side(b, with_cur)).same  # the default is not used: same


def test_an_error_on_one_side_is_a_difference_and_the_same_error_on_both_is_not(tmp_path: Path):
    a, b = mapping(tmp_path), mapping(tmp_path, n=2, cur="USD")
    broken = record(status="OK", amount=5, lines=[])   # no id: required
    sides = run_side(a, broken), run_side(b, broken)
    assert sides[0].error is not None and "key" in sides[0].error
    assert compare(*sides).same
    ok = Side(payload={"ID": "1"}, bodies={"erp": b"{}"})
    diff = compare(ok, sides[1])
    assert diff.paths == ["@error"] and diff.values["@error"]["live"] is None


def test_skipped_targets_and_bodies(tmp_path: Path):
    a = mapping(tmp_path)
    draft = record(id="1", status="DRAFT", amount=5, lines=[])
    assert run_side(a, draft).skipped
    assert compare(run_side(a, draft), run_side(a, record(id="1", status="OK", amount=5, lines=[]))).paths \
        == ["@skipped"]
    big = record(id="1", status="OK", amount=500, lines=[])
    assert compare(run_side(a, big), run_side(mapping(tmp_path, limit=1000), big)).paths == ["@targets"]
    xml = mapping(tmp_path, fmt="format: xml, root: ORDER")
    assert compare(run_side(a, big), run_side(xml, big)).paths == ["@body[erp]"]


def test_lists_missing_keys_and_types():
    diff = Difference()
    tree_diff({"A": [1, 2, {"B": "x"}], "C": 1, "D": "1"}, {"A": [1, 3], "D": 1, "E": None}, "", diff)
    assert diff.paths == ["A[1]", "A[2]", "C", "D", "E"]
    assert diff.values["A[2]"] == {"live": {"B": "x"}, "shadow": {"missing": True}}
    assert field_of("IDOC.E1EDP01[12].E1EDP19.IDTNR") == "IDOC.E1EDP01[].E1EDP19.IDTNR"


def test_a_record_that_differs_everywhere_is_bounded():
    diff = Difference()
    tree_diff(list(range(MAX_PATHS + 50)), [-1] * (MAX_PATHS + 50), "", diff)
    assert len(diff.paths) == MAX_PATHS and diff.truncated == 50
