"""JSON codec: orjson semantics, plus size and depth limits and useful error positions."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncbus.errors import ConfigError, DecodeError, EncodeError
from syncbus.formats import JsonCodec, get_codec
from tests.formats.hostile import assert_refused
from tests.formats.idoc import orders05


@pytest.fixture
def js() -> JsonCodec:
    codec = get_codec("json")
    assert isinstance(codec, JsonCodec)
    return codec


def test_decode_basic(js: JsonCodec) -> None:
    assert js.decode(b'{"order_id": "SO-1", "amount": 1.10, "qty": 3, "ok": true, "x": null}') == {
        "order_id": "SO-1", "amount": 1.1, "qty": 3, "ok": True, "x": None}
    assert js.decode('{"客户": "上海东方贸易有限公司"}'.encode()) == {"客户": "上海东方贸易有限公司"}
    assert js.decode(b"[1, 2]") == [1, 2]
    assert js.decode(b'"just a string"') == "just a string"


def test_decode_accepts_bom_and_bytes_likes(js: JsonCodec) -> None:
    assert js.decode(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}
    assert js.decode(bytearray(b'{"a": 1}')) == {"a": 1}
    assert js.decode(memoryview(b'{"a": 1}')) == {"a": 1}
    assert js.decode('{"a": "中"}') == {"a": "中"}


def test_documented_number_semantics(js: JsonCodec) -> None:
    # orjson's defaults, kept on purpose and documented in the module.
    assert js.decode(b'{"amount": 1.10}') == {"amount": 1.1}
    assert js.decode(b'{"n": 18446744073709551615}') == {"n": 18446744073709551615}
    assert isinstance(js.decode(b'{"n": 18446744073709551616}')["n"], float)
    assert js.decode(b'{"a": 1, "a": 2}') == {"a": 2}


@pytest.mark.parametrize(("data", "message"), [
    (b'{"a": [1, 2', "line 1, column 12: unexpected end of data (truncated document?)"),
    (b'{"a": "abc', "line 1, column 11: unexpected end of data (truncated document?)"),
    (b"", "line 1, column 1: Input is a zero-length, empty document"),
    (b'{"a": 1}  x', "line 1, column 11: unexpected content after document"),
    (b"NaN", "line 1, column 1: unexpected character"),
    (b'{\n  "a": \n  x}', "line 3, column 3: unexpected character"),
    (b'{"a": "\xc3\xa9 ok \xff"}', r"line 1, column 13 (byte 13): invalid UTF-8 byte sequence b'\xff'"),
    (b'{\n "b": "\xed\xa0\x80"}', "line 2, column 8 (byte 9): invalid UTF-8 byte sequence"),
    (b'{"a": "\\ud800"}', "no low surrogate in string"),
    (b'{"a": 1e400}', "number is infinity"),
])
def test_decode_errors_say_what_and_where(js: JsonCodec, data: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as info:
        js.decode(data)
    text = str(info.value)
    assert text.startswith("invalid json: "), text
    assert message in text, text
    assert "\n" not in text


def test_depth_limit_default_64(js: JsonCodec) -> None:
    ok = b"[" * 64 + b"]" * 64
    assert js.decode(ok) is not None
    deep = b'{"a":' * 65 + b"1" + b"}" * 65
    err = assert_refused(lambda: js.decode(deep), "nesting deeper than 64 levels")
    assert "line 1, column 321 (byte 320)" in str(err)


def test_depth_counts_containers_not_brackets_in_strings(js: JsonCodec) -> None:
    tricky = orjson.dumps({"note": "[" * 5000 + "{" * 5000, "list": [[[1]]]})
    assert js.decode(tricky)["list"] == [[[1]]]


def test_depth_between_ours_and_orjsons_limit(js: JsonCodec) -> None:
    # orjson alone would accept 1000 levels; the result would break recursive code later.
    deep = b"[" * 1000 + b"]" * 1000
    assert_refused(lambda: js.decode(deep), r"line 1, column 65 \(byte 64\): nesting deeper than 64 levels")
    assert JsonCodec(max_depth=1000).decode(deep) is not None


def test_200000_levels_fail_fast_without_recursion_error(js: JsonCodec) -> None:
    for deep in (b"[" * 200_000 + b"]" * 200_000, b'{"a":' * 200_000):
        err = assert_refused(lambda deep=deep: js.decode(deep), "nesting deeper than 64 levels")
        assert "Recursion" not in str(err)
    # With a limit above orjson's own (1024), orjson's limit is reported.
    assert_refused(lambda: JsonCodec(max_depth=5000).decode(b"[" * 200_000),
                   r"line 1, column 1026: nesting deeper than 1024 levels")


def test_oversized_input_refused_before_parsing(js: JsonCodec) -> None:
    big = b'["' + b"x" * (100 * 1024 * 1024) + b'"]'
    err = assert_refused(lambda: js.decode(big), "larger than the limit of 16777216 bytes", seconds=0.5,
                         peak_mib=1)
    assert f"input is {len(big)} bytes" in str(err)
    small = JsonCodec(max_bytes=8)
    assert small.decode(b'{"a":12}') == {"a": 12}
    with pytest.raises(DecodeError, match="input is 9 bytes, larger than the limit of 8 bytes"):
        small.decode(b'{"a":123}')


def test_encode(js: JsonCodec) -> None:
    assert js.encode({"客户": "上海", "n": 1}) == '{"客户":"上海","n":1}'.encode()
    assert js.encode({"amount": Decimal("12.30"), "big": Decimal("1E+2")}) == b'{"amount":12.30,"big":1E+2}'
    assert js.decode(js.encode({"amount": Decimal("12.30")})) == {"amount": 12.3}
    assert js.encode({"at": dt.datetime(2024, 3, 15, 9, 30, tzinfo=dt.UTC), "d": dt.date(2024, 3, 15)}) == (
        b'{"at":"2024-03-15T09:30:00+00:00","d":"2024-03-15"}')
    assert js.decode(js.encode(orders05())) == orders05()


@pytest.mark.parametrize(("obj", "message"), [
    ({1: "x"}, "Dict key must be str"),
    ({"a": {1, 2}}, "a set has no order"),
    ({"a": Decimal("NaN")}, "Decimal NaN is not a JSON number"),
    ({"a": object()}, "Type is not JSON serializable: object"),
    ({"a": 2**70}, "Integer exceeds 64-bit range"),
])
def test_encode_errors(js: JsonCodec, obj: Any, message: str) -> None:
    with pytest.raises(EncodeError, match=message) as info:
        js.encode(obj)
    assert str(info.value).startswith("cannot encode json: ")


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="max_bytes must be a positive integer"):
        JsonCodec(max_bytes=0)
    with pytest.raises(ConfigError, match="max_depth must be a positive integer"):
        JsonCodec(max_depth=True)


_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False,
              allow_infinity=False), st.text()),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(), children, max_size=4)),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(_json)
def test_round_trip(value: Any) -> None:
    js = JsonCodec()
    assert js.decode(js.encode(value)) == value
