"""CSV codec: header rows, dialects, Chinese legacy encodings, errors with line numbers."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncbus.errors import ConfigError, DecodeError, EncodeError
from syncbus.formats import CsvCodec, get_codec, make_codec
from tests.formats.hostile import assert_refused

# Real OA/HR export content: names, departments, addresses with commas and quotes.
EMPLOYEES = [
    {"emp_id": "E0001", "name": "张伟", "dept_name": "财务部", "phone": "138****5678",
     "address": "上海市浦东新区世纪大道100号, 25楼"},
    {"emp_id": "E0002", "name": "王芳", "dept_name": "人力资源部", "phone": "",
     "address": "北京市海淀区中关村大街1号"},
    {"emp_id": "E0003", "name": "李娜 \"Lina\"", "dept_name": "研发中心（深圳）", "phone": "139****0001",
     "address": "广东省深圳市南山区科技园\n二期 3栋"},
    {"emp_id": "E0004", "name": "𠮷野家", "dept_name": "销售部", "phone": "", "address": "—"},
]


@pytest.fixture
def csv_codec() -> CsvCodec:
    codec = get_codec("csv")
    assert isinstance(codec, CsvCodec)
    return codec


def test_decode_header_and_rows(csv_codec: CsvCodec) -> None:
    data = b'order_id,amount,note\r\nSO-1,12.30,"a, b"\r\nSO-2,5,"say ""hi"""\r\n'
    assert csv_codec.decode(data) == [
        {"order_id": "SO-1", "amount": "12.30", "note": "a, b"},
        {"order_id": "SO-2", "amount": "5", "note": 'say "hi"'},
    ]


@pytest.mark.parametrize("encoding", ["gbk", "gb18030", "utf-8", "utf-8-sig"])
def test_chinese_round_trip(encoding: str) -> None:
    rows = EMPLOYEES if encoding != "gbk" else [r for r in EMPLOYEES if r["emp_id"] != "E0004"]
    codec = CsvCodec(encoding=encoding)
    data = codec.encode(rows)
    assert data.decode(encoding).startswith("emp_id,name,dept_name,phone,address\r\nE0001,张伟,财务部")
    assert codec.decode(data) == rows


def test_gbk_bytes_are_really_gbk() -> None:
    codec = CsvCodec(encoding="gbk")
    data = codec.encode({"name": "张伟", "dept": "财务部"})
    assert data == "name,dept\r\n张伟,财务部\r\n".encode("gbk")
    assert data == b"name,dept\r\n\xd5\xc5\xce\xb0,\xb2\xc6\xce\xf1\xb2\xbf\r\n"
    # The same bytes are not UTF-8: the default codec says so, with the line.
    with pytest.raises(DecodeError, match=r"line 2, column 1 \(byte 11\): invalid utf-8 byte sequence"):
        get_codec("csv").decode(data)


def test_gb18030_covers_what_gbk_cannot() -> None:
    rare = [{"name": "𠮷野家", "note": "€ and 🙂"}]
    assert CsvCodec(encoding="gb18030").decode(CsvCodec(encoding="gb18030").encode(rare)) == rare
    with pytest.raises(EncodeError, match=r"line 2: '𠮷' cannot be written in gbk"):
        CsvCodec(encoding="gbk").encode(rare)


@pytest.mark.parametrize("encoding", ["utf-8", "gb18030"])
def test_bom_is_dropped(encoding: str) -> None:
    data = "\ufeffname,dept\r\n张伟,财务部\r\n".encode(encoding)
    assert CsvCodec(encoding=encoding).decode(data) == [{"name": "张伟", "dept": "财务部"}]


def test_excel_bom_output_with_utf8_sig() -> None:
    data = CsvCodec(encoding="utf-8-sig").encode([{"a": "张"}])
    assert data.startswith(b"\xef\xbb\xbfa\r\n")
    assert get_codec("csv").decode(data) == [{"a": "张"}]


@pytest.mark.parametrize(("delimiter", "quotechar"), [(";", '"'), ("\t", '"'), ("|", "'"), (",", "'")])
def test_delimiters_and_quotechars(delimiter: str, quotechar: str) -> None:
    codec = CsvCodec(delimiter=delimiter, quotechar=quotechar)
    rows = [{"a": f"x{delimiter}y", "b": f"it{quotechar}s", "c": "plain"}]
    data = codec.encode(rows)
    assert data.count(delimiter.encode()) >= 4
    assert codec.decode(data) == rows


def test_semicolon_file_from_a_european_erp() -> None:
    data = "Beleg;Betrag;Währung\n4711;1.234,56;EUR\n".encode()
    assert CsvCodec(delimiter=";").decode(data) == [{"Beleg": "4711", "Betrag": "1.234,56", "Währung": "EUR"}]


def test_ragged_rows(csv_codec: CsvCodec) -> None:
    with pytest.raises(DecodeError, match=r"^invalid csv: line 3: 4 cells but 3 columns \(extra: 'x'\)$"):
        csv_codec.decode(b"a,b,c\n1,2,3\n4,5,6,x\n")
    # Line numbers count physical lines, also after a record with a quoted newline,
    # and a bad record spanning lines is reported at the line it starts on.
    with pytest.raises(DecodeError, match=r"line 4: 3 cells but 2 columns"):
        csv_codec.decode(b'a,b\n"multi\nline",2\n5,6,7\n')
    with pytest.raises(DecodeError, match=r"line 2: 3 cells but 2 columns"):
        csv_codec.decode(b'a,b\n"multi\nline",2,3\n')
    # Short rows get empty trailing cells; blank lines are skipped.
    assert csv_codec.decode(b"a,b,c\n1\n\n2,3\n") == [{"a": "1", "b": "", "c": ""}, {"a": "2", "b": "3", "c": ""}]


@pytest.mark.parametrize(("data", "message"), [
    (b'a,b\n1,"open\n2,3\n', "line 3: unexpected end of data (unterminated quoted field?)"),
    (b'a,b\n"1"x,2\n', "line 2: ',' expected after '\"'"),
    (b"a,a\n1,2\n", "line 1: header names column 'a' twice"),
    (b"a,,c\n1,2,3\n", "line 1: header column 2 is empty"),
    (b"a,b\n1,2\n3,\xff\n", r"line 3, column 3 (byte 10): invalid utf-8 byte sequence b'\xff'"),
    (b"\n\na,b\n\xc3\n", "line 4, column 1 (byte 6): invalid utf-8"),
])
def test_decode_errors_have_line_numbers(csv_codec: CsvCodec, data: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as info:
        csv_codec.decode(data)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_invalid_gbk_bytes_have_line_numbers() -> None:
    data = "工号,姓名\r\nE1,张伟\r\n".encode("gbk") + b"E2,\x81\x20\r\n"
    with pytest.raises(DecodeError, match=r"line 3, column 4 \(byte 23\): invalid gbk byte sequence b'\\x81'"):
        CsvCodec(encoding="gbk").decode(data)


def test_empty_and_header_only(csv_codec: CsvCodec) -> None:
    assert csv_codec.decode(b"") == []
    assert csv_codec.decode(b"a,b\r\n") == []


def test_without_header_row() -> None:
    codec = CsvCodec(header=False, columns=["emp_id", "name"])
    assert codec.decode(b"E1,Zhang\nE2,Wang\n") == [{"emp_id": "E1", "name": "Zhang"},
                                                    {"emp_id": "E2", "name": "Wang"}]
    assert codec.encode([{"name": "Zhang", "emp_id": "E1"}]) == b"E1,Zhang\r\n"


def test_oversized_input_refused_before_decoding() -> None:
    big = b"a\n" + b"x\n" * 65536
    assert_refused(lambda: CsvCodec(max_bytes=65536).decode(big), "input is 131074 bytes, larger than the limit "
                   "of 65536 bytes", seconds=0.5, peak_mib=1)
    assert len(CsvCodec(max_bytes=len(big)).decode(big)) == 65536


def test_huge_field_is_an_error_not_a_hang(csv_codec: CsvCodec) -> None:
    data = b'a\n"' + b"x" * 200_000 + b'"\n'
    assert_refused(lambda: csv_codec.decode(data), r"line 2: field larger than field limit")


# ------------------------------------------------------------------ encode


def test_encode_columns_from_first_record(csv_codec: CsvCodec) -> None:
    rows = [{"b": 1, "a": "x"}, {"a": "y"}]
    assert csv_codec.encode(rows) == b"b,a\r\n1,x\r\n,y\r\n"


def test_encode_single_dict_and_scalars(csv_codec: CsvCodec) -> None:
    record = {"s": "text", "i": 3, "f": 1.5, "d": Decimal("12.30"), "t": True, "n": None,
              "day": dt.date(2024, 3, 15), "at": dt.datetime(2024, 3, 15, 9, 30)}
    assert csv_codec.encode(record) == (
        b"s,i,f,d,t,n,day,at\r\ntext,3,1.5,12.30,true,,2024-03-15,2024-03-15T09:30:00\r\n")


def test_encode_with_configured_columns_selects_and_orders() -> None:
    codec = make_codec("csv", columns=["name", "emp_id"], delimiter=";")
    assert codec.encode([{"emp_id": "E1", "name": "张伟", "secret": "x"}]) == "name;emp_id\r\n张伟;E1\r\n".encode()


@pytest.mark.parametrize(("obj", "message"), [
    ([{"a": 1, "addr": {"city": "上海"}}], "record 1, field 'addr': a dict cannot be a CSV cell"),
    ([{"a": 1}, {"a": 2, "tags": ["x"]}], "record 2 has field 'tags', which is not a column"),
    ([{"a": [1]}], "record 1, field 'a': a list cannot be a CSV cell"),
    ([{"a": b"raw"}], "field 'a': bytes cannot be a CSV cell"),
    ("text", "expected a dict or a list of dicts, got str"),
    ([{"a": 1}, "x"], "record 2 is a str, not a dict"),
    ([], "no columns"),
])
def test_encode_errors_name_the_field(csv_codec: CsvCodec, obj: Any, message: str) -> None:
    with pytest.raises(EncodeError, match=r"^cannot encode csv: ") as info:
        csv_codec.encode(obj)
    assert message in str(info.value)


@pytest.mark.parametrize(("options", "message"), [
    ({"delimiter": ",,"}, "delimiter must be one character"),
    ({"quotechar": "\n"}, "quotechar must be one character"),
    ({"delimiter": '"'}, "delimiter and quotechar are both"),
    ({"encoding": "klingon"}, "unknown encoding 'klingon'"),
    ({"encoding": "zlib"}, "not a text encoding"),
    ({"header": False}, "header=False needs columns"),
    ({"columns": ["a", "a"]}, "duplicate columns ['a']"),
    ({"columns": []}, "columns must be a non-empty list"),
    ({"colums": ["a"]}, "unknown option 'colums'"),
])
def test_bad_options_are_config_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_codec("csv", **options)
    assert message in str(info.value)


def test_content_type_names_non_utf8_charsets() -> None:
    assert CsvCodec().content_type == "text/csv"
    assert CsvCodec(encoding="gb18030").content_type == "text/csv; charset=gb18030"


_cell = st.text(st.characters(exclude_categories=("Cs",)), max_size=10)
_names = st.text(st.characters(exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), exclude_characters="\ufeff"),
                 min_size=1, max_size=6)


@settings(max_examples=100, deadline=None)
@given(st.lists(_names, min_size=1, max_size=5, unique=True).flatmap(
    lambda cols: st.lists(st.fixed_dictionaries({c: _cell for c in cols}), min_size=1, max_size=5)))
def test_round_trip_property(rows: list[dict[str, str]]) -> None:
    for codec in (CsvCodec(), CsvCodec(delimiter="\t", encoding="gb18030")):
        assert codec.decode(codec.encode(rows)) == rows
