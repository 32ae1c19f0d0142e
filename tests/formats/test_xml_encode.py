"""XML encode: same tree as xmltodict.unparse (property-tested), output that always parses."""

from __future__ import annotations

import string
from collections import OrderedDict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import xmltodict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncbus.errors import ConfigError, EncodeError
from syncbus.formats import XmlCodec, get_codec, make_codec
from tests.formats.idoc import orders05

DATA = Path(__file__).parent / "data"
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture
def xml() -> XmlCodec:
    codec = get_codec("xml")
    assert isinstance(codec, XmlCodec)
    return codec


# ------------------------------------------------------------------ strategies

_FIRST = string.ascii_letters + "_订单客户"
_REST = _FIRST + string.digits + "-."
names = st.builds(lambda a, b: a + b, st.sampled_from(_FIRST), st.text(_REST, max_size=6))
attr_names = names.map(lambda n: "@" + n)

# Everything XML 1.0 can carry: no C0 controls but tab/newline/CR, no surrogates, no U+FFFE/FFFF.
_xml_chars = st.characters(
    exclude_categories=("Cs", "Cc"), exclude_characters="\ufffe\uffff",
    include_characters="\t\n\r&<>\"'中文한글",
)
texts = st.text(_xml_chars, max_size=12)
scalars = st.one_of(
    st.none(), texts, st.integers(), st.booleans(),
    st.floats(allow_nan=False), st.decimals(allow_nan=False, allow_infinity=False, places=2),
)


def _model(leaves: st.SearchStrategy[Any], attr_values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Dicts in xmltodict's model: attributes, #text and children in any order; lists of >= 2.

    Built with ``deferred`` rather than ``recursive`` so the strategy's repr stays small.
    """
    # Choose the kind first: one_of would flatten the scalar kinds into many equal branches.
    value: st.SearchStrategy[Any] = st.deferred(
        lambda: st.sampled_from([leaves, node, repeated]).flatmap(lambda kind: kind))
    node = st.deferred(lambda: st.lists(
        st.one_of(st.tuples(attr_names, attr_values), st.tuples(names, value), st.tuples(st.just("#text"), leaves)),
        min_size=1, max_size=5, unique_by=lambda kv: kv[0],
    ).map(dict))
    repeated = st.deferred(lambda: st.lists(st.sampled_from([leaves, node]).flatmap(lambda kind: kind),
                                             min_size=2, max_size=3))
    return node


_model_root_values = st.sampled_from([scalars, _model(scalars, scalars), _model(scalars, scalars)]).flatmap(
    lambda kind: kind)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """(a) anything in the model xmltodict.unparse accepts."""
    return {draw(names): draw(_model_root_values)}


# (b) JSON-like dicts that survive XML and back unchanged: string leaves that parse
# gives back as they are (stripped, non-empty, no CR), lists of >= 2, #text only
# beside attributes or children.
_stable_text = st.text(st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="\ufffe\uffff",
                                     include_characters="\t\n&<>\"'中文"), min_size=1, max_size=12
                       ).filter(lambda s: s == s.strip() and s != "")
_attr_text = st.text(_xml_chars, max_size=12)


@st.composite
def _stable_node(draw: st.DrawFn, children: st.SearchStrategy[Any]) -> dict[str, Any]:
    attrs = draw(st.dictionaries(attr_names, _attr_text, max_size=3))
    kids = draw(st.dictionaries(names, children, max_size=4))
    node: dict[str, Any] = {**attrs, **kids}
    if node and draw(st.booleans()):
        node["#text"] = draw(_stable_text)
    if not node:
        node = {draw(names): draw(_stable_text)}
    return node


_stable_leaves = st.one_of(st.none(), _stable_text)
_stable_value: st.SearchStrategy[Any] = st.deferred(
    lambda: st.one_of(_stable_leaves, _stable_leaves, _stable_node(_stable_value), _stable_repeated))
_stable_repeated = st.deferred(
    lambda: st.lists(st.one_of(_stable_leaves, _stable_node(_stable_value)), min_size=2, max_size=3))
_stable_root_values = st.one_of(_stable_text, _stable_node(_stable_value))


@st.composite
def stable_documents(draw: st.DrawFn) -> dict[str, Any]:
    """(b) JSON-like dicts that come back from XML unchanged."""
    return {draw(names): draw(_stable_root_values)}


# ------------------------------------------------------------------ properties


@PROPERTY
@given(documents())
def test_same_tree_as_xmltodict_unparse(doc: dict[str, Any]) -> None:
    reference = xmltodict.parse(xmltodict.unparse(doc))
    compact = XmlCodec().encode(doc)
    assert xmltodict.parse(compact) == reference
    assert XmlCodec().decode(compact) == reference
    assert xmltodict.parse(XmlCodec(pretty=True).encode(doc)) == xmltodict.parse(xmltodict.unparse(doc, pretty=True))


@PROPERTY
@given(stable_documents())
def test_json_xml_json_round_trip(doc: dict[str, Any]) -> None:
    codec = XmlCodec()
    assert codec.decode(codec.encode(doc)) == doc
    assert codec.decode(XmlCodec(pretty=True).encode(doc)) == doc


@PROPERTY
@given(names, st.sampled_from(["\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1f", "\ufffe", "\uffff"]))
def test_invalid_characters_are_refused_where_xmltodict_writes_broken_xml(root: str, bad: str) -> None:
    doc = {root: {"@a": "ok", "field": f"before{bad}after"}}
    with pytest.raises(Exception):  # noqa: B017 - xmltodict's output is not XML at all
        xmltodict.parse(xmltodict.unparse(doc))
    with pytest.raises(EncodeError, match=rf"field '{root}\.field' contains U\+{ord(bad):04X}"):
        XmlCodec().encode(doc)


# ------------------------------------------------------------------ golden IDoc


def test_golden_orders05_compact(xml: XmlCodec) -> None:
    expected = (DATA / "orders05.xml").read_bytes()
    assert xml.encode(orders05()) == expected
    assert expected.startswith(b'<?xml version="1.0" encoding="utf-8"?>\n<ORDERS05><IDOC BEGIN="1">'
                               b'<EDI_DC40 SEGMENT="1"><TABNAM>EDI_DC40</TABNAM>')
    assert b"<NAME1>Smith &amp; Sons &lt;Shanghai&gt; Ltd.</NAME1>" in expected
    assert "<NAME1>上海东方贸易有限公司</NAME1>".encode() in expected


def test_golden_orders05_pretty() -> None:
    expected = (DATA / "orders05_pretty.xml").read_bytes()
    assert XmlCodec(pretty=True).encode(orders05()) == expected
    assert b'\n\t<IDOC BEGIN="1">\n\t\t<EDI_DC40 SEGMENT="1">\n\t\t\t<TABNAM>EDI_DC40</TABNAM>\n' in expected


def test_root_option_wraps_the_object() -> None:
    content = orders05()["ORDERS05"]
    assert XmlCodec(root="ORDERS05").encode(content) == (DATA / "orders05.xml").read_bytes()
    assert make_codec("xml", root="ORDERS05", pretty=True).encode(content) == (
        DATA / "orders05_pretty.xml").read_bytes()


# ------------------------------------------------------------------ conventions


@pytest.mark.parametrize("doc", [
    {"a": None},
    {"a": ""},
    {"a": {}},
    {"a": {"#text": None}},
    {"a": {"b": True, "c": False, "d": 0, "e": 1.5, "f": Decimal("12.30"), "g": -7}},
    {"a": {"b": [1, "x", None, {"@k": "v"}, {"#text": "t", "@k": 1}]}},
    {"a": {"b": []}},
    {"a": {"b": ("t1", "t2")}},
    {"a": {"@x": None, "@y": 3, "@z": True, "#text": "body"}},
    {"a": {"c": "1", "@late": "attr after a child", "#text": "text first in dict"}},
    {"a": {"@xmlns": {"": "urn:default", "p": "urn:p"}, "p:b": "1"}},
    {"a": {"#comment": "a note", "b": "1"}},
    {"a": {"b": b"bytes \xe4\xb8\xad", "c": bytearray(b"x")}},
    {"a": OrderedDict([("b", "1"), ("c", OrderedDict([("d", "2")]))])},
    {"a": {"b": "quote \" apostrophe ' both", "@q": "say \"hi\" it's"}},
    {"a": {"@ws": " lead\ttab\nnl\rcr trail "}},
    {"a": "x" * 10_000},
])
def test_conventions_match_xmltodict(xml: XmlCodec, doc: dict[str, Any]) -> None:
    ours = xml.encode(doc)
    assert xmltodict.parse(ours) == xmltodict.parse(xmltodict.unparse(doc))


def test_output_is_byte_identical_to_xmltodict_for_ordinary_records(xml: XmlCodec) -> None:
    doc = {"order": {"@id": "7", "no": 1, "paid": True, "total": Decimal("9.90"), "lines": [
        {"sku": "A&B", "qty": 2}, {"sku": "<C>", "qty": None}], "note": None, "tags": []}}
    assert xml.encode(doc) == xmltodict.unparse(doc).encode()


def test_bool_and_none(xml: XmlCodec) -> None:
    assert xml.encode({"a": {"t": True, "f": False, "n": None}}) == (
        b'<?xml version="1.0" encoding="utf-8"?>\n<a><t>true</t><f>false</f><n></n></a>')


def test_attribute_values_keep_whitespace_and_quotes(xml: XmlCodec) -> None:
    value = ' a "b" \'c\'\n\r\t<&> '
    doc = {"a": {"@v": value}}
    assert xml.decode(xml.encode(doc)) == doc
    assert xmltodict.parse(xml.encode(doc))["a"]["@v"] == value


def test_without_declaration_and_other_encodings() -> None:
    doc = {"客户": {"名称": "上海东方贸易有限公司", "emoji": "ok \U0001f600"}}
    assert XmlCodec(declaration=False).encode(doc).startswith("<客户>".encode())
    gbk = XmlCodec(encoding="gbk").encode(doc)
    assert gbk.startswith(b'<?xml version="1.0" encoding="gbk"?>\n')
    assert "上海东方贸易有限公司".encode("gbk") in gbk
    assert b"&#128512;" in gbk  # not in GBK: a character reference
    assert get_codec("xml").decode(gbk) == doc
    assert xmltodict.parse(gbk.decode("gbk").split("\n", 1)[1]) == doc
    with pytest.raises(EncodeError, match="an element or attribute name contains 'ŝ', which gbk cannot represent"):
        XmlCodec(encoding="gbk").encode({"r": {"naŝ": "x"}})
    with pytest.raises(EncodeError, match="name contains 'ŝ'"):
        XmlCodec(encoding="ascii").encode({"r": {"@aŝ": "x", "b": "ŝ"}})
    assert get_codec("xml").decode(XmlCodec(encoding="ascii").encode({"r": {"@a": "ŝ", "b": "ŝ"}})) == {
        "r": {"@a": "ŝ", "b": "ŝ"}}


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(("doc", "message"), [
    ({"": "x"}, "invalid element name '': is empty"),
    ({"1abc": "x"}, "invalid element name '1abc': cannot start with '1'"),
    ({"a b": "x"}, "invalid element name 'a b': contains whitespace"),
    ({"r": {"a<b": "x"}}, "invalid element name 'a<b': contains '<'"),
    ({"r": {"#foo": "x"}}, "invalid element name '#foo'"),
    ({"r": {1: "x"}}, "invalid element name 1: must be a string"),
    ({"r": {"@1x": "x"}}, "invalid attribute name '@1x'"),
    ({"r": {"@": "x"}}, "invalid attribute name '@': is empty"),
    ({"r": {"@a b": "x"}}, "invalid attribute name '@a b'"),
    ({"a": "1", "b": "2"}, "exactly one root element, got 2 ('a', 'b')"),
    ({}, "exactly one root element, got 0"),
    ({"a": ["1", "2"]}, "root element 'a' is a list of 2 items"),
    ({"a": []}, "root element 'a' is a list of 0 items"),
    ({"r": {"b": [["x", "y"]]}}, "element 'b': a list cannot be written as text"),
    ({"r": {"#text": ["x"]}}, "#text of 'r': a list cannot be written as text"),
    ({"r": {"@a": {"x": 1}}}, "attribute '@a': a dict cannot be written as text"),
    ({"r": {"#comment": "a -- b"}}, "cannot contain '--'"),
    ({"r": {"b": "lone \ud800 surrogate"}}, "field 'r.b' contains U+D800"),
    ({"r": {"@a": "bell \x07"}}, "field 'r.@a' contains U+0007"),
    ({"r": {"b": [{"c": "ok"}, {"c": "nul \x00"}]}}, "field 'r.b[1].c' contains U+0000"),
])
def test_encode_errors_name_the_key(xml: XmlCodec, doc: Any, message: str) -> None:
    with pytest.raises(EncodeError) as info:
        xml.encode(doc)
    assert message in str(info.value)
    assert str(info.value).startswith("cannot encode xml: ")


def test_non_dict_without_root_is_an_error(xml: XmlCodec) -> None:
    with pytest.raises(EncodeError, match="a list needs a root element name"):
        xml.encode([{"a": 1}])
    assert XmlCodec(root="r").encode("text") == b'<?xml version="1.0" encoding="utf-8"?>\n<r>text</r>'
    with pytest.raises(EncodeError, match="root element 'r' is a list of 2 items"):
        XmlCodec(root="r").encode([{"a": 1}, {"a": 2}])


def test_self_containing_object_is_an_error(xml: XmlCodec) -> None:
    loop: dict[str, Any] = {}
    loop["x"] = loop
    with pytest.raises(EncodeError, match="nested too deeply"):
        xml.encode({"r": loop})


def test_bad_constructor_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="root: invalid element name '1x'"):
        XmlCodec(root="1x")
    with pytest.raises(ConfigError, match="unknown encoding 'klingon'"):
        XmlCodec(encoding="klingon")
    with pytest.raises(ConfigError, match="max_depth must be a positive integer"):
        XmlCodec(max_depth=0)


def test_name_cache_does_not_grow_without_bound(xml: XmlCodec) -> None:
    from syncbus.formats import xml as xml_module

    for i in range(xml_module._CACHE_MAX + 10):
        xml.encode({"r": {f"k{i}": "v", f"@a{i}": "v"}})
    assert len(xml_module._ELEMENTS) <= xml_module._CACHE_MAX
    assert len(xml_module._ATTRS) <= xml_module._CACHE_MAX
