"""`make bench-peers` building blocks that need no Go or Java: the corpus generator and the XML tree comparator.

The peers themselves (Benthos, Camel) are built and checked by bench/peers/run.py only.
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench" / "peers"))

import compare  # noqa: E402
import corpus  # noqa: E402
from reference import bench_mapping, write_bench_mapping  # noqa: E402

from syncbus.mapping.loader import load_mapping  # noqa: E402

GOLDEN_IN = ROOT / "mappings" / "tests" / "data" / "crm_order.json"
GOLDEN_OUT = ROOT / "mappings" / "tests" / "data" / "crm_order.ORDERS05.xml"


@pytest.fixture(scope="module")
def sample() -> list[bytes]:
    return corpus.lines(2000, seed=11)


@pytest.fixture(scope="module")
def mapping(tmp_path_factory: pytest.TempPathFactory):
    return load_mapping(write_bench_mapping(tmp_path_factory.mktemp("peers")))


def _syncbus_stream(mapping, lines: list[bytes]) -> bytes:
    out = []
    for line in lines:
        for o in mapping.map_bytes(line, "application/json").outputs:
            out.append(o.body + b"\n")
    return b"".join(out)


# --------------------------------------------------------------------------- corpus


def test_corpus_is_deterministic_and_seeded(sample: list[bytes]) -> None:
    assert corpus.lines(2000, seed=11) == sample
    assert corpus.lines(50, seed=12) != sample[:50]
    assert corpus.lines(10, seed=11) == sample[:10]  # a prefix does not depend on the count


def test_corpus_lines_are_one_json_order_each(sample: list[bytes]) -> None:
    ids = set()
    for line in sample:
        assert b"\n" not in line
        order = json.loads(line)
        assert {"order_id", "status", "cust_code", "customer", "amount", "lines"} <= set(order)
        assert order["lines"]
        ids.add(order["order_id"])
    assert len(ids) == len(sample)


def test_corpus_varies_what_the_transforms_must_get_right(sample: list[bytes]) -> None:
    orders = [json.loads(line) for line in sample]
    names = [o["customer"].get("name", "") for o in orders]
    assert any("有限责任公司" in n for n in names)
    assert any("\u3000" in n for n in names)  # ideographic space (NFKC)
    assert any("（" in n or "Ａ" in n or "Ｘ" in n for n in names)  # full-width forms (NFKC)
    assert any("&" in n or "<" in n for n in names)  # XML escaping
    assert any("\u200b" in n for n in names)
    assert any(n != n.strip() for n in names)
    numbers = [line["qty"] for o in orders for line in o["lines"]] + [o["amount"] for o in orders]
    assert any(isinstance(x, str) for x in numbers) and any(isinstance(x, float) for x in numbers)
    assert any(isinstance(x, int) for x in numbers)
    assert any(Decimal(str(x)).as_tuple().exponent < -3 for x in numbers)  # needs rounding
    assert any(str(o["amount"]) in corpus.TIES for o in orders)
    stamps = [o.get("created_at") for o in orders]
    assert None in stamps
    assert any(s and s.endswith("Z") for s in stamps) and any(s and len(s) == 10 for s in stamps)
    assert any(s and "+08:00" in s for s in stamps) and any(s and " " in s for s in stamps)
    statuses = {o["status"] for o in orders}
    assert "APPROVED" in statuses and len(statuses) > 1
    assert any("region" not in o for o in orders) and any("currency" not in o for o in orders)
    assert any("phone" not in o["customer"] for o in orders)


def test_corpus_maps_through_the_reference_mapping(sample: list[bytes], mapping) -> None:
    stream = _syncbus_stream(mapping, sample)
    docs = compare.split_documents(stream)
    assert len(docs) == sum(corpus.approved(line) for line in sample)
    assert len({compare.document_key(d, "VBELN") for d in docs}) == len(docs)


def test_corpus_write(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    approved = corpus.write(path, 300, seed=5)
    lines = path.read_bytes().splitlines()
    assert lines == corpus.lines(300, seed=5)
    assert approved == sum(corpus.approved(x) for x in lines)


def test_bench_mapping_keeps_the_fields_and_drops_schemas_and_the_second_target() -> None:
    spec = bench_mapping(topic="t")
    assert "schema" not in spec["source"] and spec["source"]["topic"] == "t"
    assert "targets" not in spec
    assert spec["target"] == {"sink": "erp-orders", "format": "xml", "root": "ORDERS05"}
    assert list(spec["fields"]["IDOC"]) == ["@BEGIN", "EDI_DC40", "E1EDK01", "E1EDKA1", "E1EDP01"]


# --------------------------------------------------------------------------- comparator


def test_golden_order_equals_the_golden_document(mapping) -> None:
    line = json.dumps(json.loads(GOLDEN_IN.read_text("utf-8")), ensure_ascii=False).encode()
    assert compare.compare_streams(GOLDEN_OUT.read_bytes(), _syncbus_stream(mapping, [line])) == []


DOC = ('<?xml version="1.0" encoding="utf-8"?>\n<R><H A="1" B="x"><ID>{id}</ID><N>a &amp; b</N>'
       '<E>{e}</E></H><L S="1"><Q>1.000</Q></L><L S="1"><Q>2.500</Q></L></R>')


def _stream(*docs: str) -> bytes:
    return "".join(d + "\n" for d in docs).encode()


def test_equal_trees_in_other_spellings_compare_equal() -> None:
    a = _stream(DOC.format(id=1, e=""), DOC.format(id=2, e=""))
    # other declaration, no newlines, attributes reordered with other quotes, &#38; for &amp;, <E/> for <E></E>
    other = ("<?xml version='1.0' encoding='UTF-8'?><R><H B='x' A='1'><ID>{id}</ID><N>a &#38; b</N><E/></H>"
             "<L S=\"1\"><Q>1.000</Q></L><L S=\"1\"><Q>2.500</Q></L></R>")
    b = (other.format(id=2) + other.format(id=1)).encode()  # and in another order
    assert compare.compare_streams(a, b, key="ID") == []


def test_a_changed_value_is_reported_with_its_path_and_both_values() -> None:
    a = _stream(DOC.format(id=1, e="x"))
    b = _stream(DOC.format(id=1, e="x").replace("<Q>2.500</Q>", "<Q>2.50</Q>"))
    diffs = compare.compare_streams(a, b)
    assert [(d.document, d.path, d.expected, d.actual) for d in diffs] == [(1, "/R/L[2]/Q", "2.500", "2.50")]
    text = compare.report(diffs, "syncbus", "benthos")
    assert "/R/L[2]/Q" in text and "'2.500'" in text and "'2.50'" in text


@pytest.mark.parametrize(("change", "path"), [
    (lambda d: d.replace("<E>x</E>", ""), "/R/H/E"),                          # element missing
    (lambda d: d.replace(' B="x"', ""), "/R/H/@B"),                           # attribute missing
    (lambda d: d.replace('A="1"', 'A="2"'), "/R/H/@A"),                       # attribute value
    (lambda d: d.replace("<N>a &amp; b</N><E>x</E>", "<E>x</E><N>a &amp; b</N>"), "/R/H/N"),  # order matters
    (lambda d: d.replace("</R>", "<L S=\"1\"/></R>"), "/R/L[3]"),            # extra element
])
def test_structural_differences_are_reported(change, path: str) -> None:
    doc = DOC.format(id=1, e="x")
    diffs = compare.compare_streams(_stream(doc), _stream(change(doc)))
    assert diffs and diffs[0].path == path


def test_missing_extra_and_unparsable_documents_fail() -> None:
    a = _stream(DOC.format(id=1, e=""), DOC.format(id=2, e=""))
    one = _stream(DOC.format(id=1, e=""))
    assert [d.path for d in compare.compare_streams(a, one, key="ID")] == ["(<ID>2)"]
    assert [d.path for d in compare.compare_streams(a, one, key=None)] == ["(number of documents)"]
    extra = compare.compare_streams(a, _stream(DOC.format(id=1, e=""), DOC.format(id=2, e=""),
                                               DOC.format(id=3, e="")), key="ID")
    assert [d.path for d in extra] == ["(<ID>3)"]
    broken = DOC.format(id=2, e="").replace("</R>", "</X>")
    diffs = compare.compare_streams(a, _stream(DOC.format(id=1, e=""), broken), key="ID")
    assert len(diffs) == 1 and "does not parse" in diffs[0].actual
    raw = _stream(DOC.format(id=1, e=""), '{"order_id": "2"}')  # a record passed through unmapped
    assert compare.compare_streams(a, raw, key="ID")


def test_by_position_without_a_key() -> None:
    a = _stream(DOC.format(id=1, e=""), DOC.format(id=2, e=""))
    b = _stream(DOC.format(id=2, e=""), DOC.format(id=1, e=""))
    assert compare.compare_streams(a, b, key="ID") == []
    assert compare.compare_streams(a, b, key=None)  # swapped documents differ by position


def test_split_documents() -> None:
    assert compare.split_documents(b"<a/>\n\n<b/>\n") == [b"<a/>", b"<b/>"]
    assert compare.split_documents(b"<?xml version='1.0'?><a/><?xml version=\"1.0\"?>\n<b/>\n") == [b"<a/>", b"<b/>"]
    with pytest.raises(ValueError):
        compare.split_documents(b"junk<?xml version='1.0'?><a/>")
