"""sources/sql_poll_values.py: rows as JSON records, cursor values that come back as the same type."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from typing import Any

import orjson
import pytest

from syncbus.sources.sql_poll_values import CursorValueError, decode, encode, row_json, text


def test_a_row_keeps_money_exact_and_dates_iso() -> None:
    names = ("amount", "big", "day", "at", "naive", "raw", "rate", "gone", "id", "inf")
    values = (Decimal("-1234.50"), Decimal("1E+3"), dt.date(2026, 11, 20),
              dt.datetime(2026, 11, 20, 22, 0, tzinfo=dt.timezone(dt.timedelta(hours=8))),
              dt.datetime(2026, 11, 20, 22, 0, 0, 500), b"\x00\xff", 0.1, None,
              uuid.UUID("12345678-1234-5678-1234-567812345678"), float("inf"))
    obj = orjson.loads(row_json(names, values))
    assert obj == {"amount": "-1234.50", "big": "1000", "day": "2026-11-20", "at": "2026-11-20T22:00:00+08:00",
                   "naive": "2026-11-20T22:00:00.000500", "raw": "AP8=", "rate": 0.1, "gone": None,
                   "id": "12345678-1234-5678-1234-567812345678", "inf": "inf"}
    assert list(obj) == list(names)
    assert "gone" not in orjson.loads(row_json(names, values, omit_nulls=True))


@pytest.mark.parametrize("value", [
    None, 7, -(2**63), "2026-11-20 22:00:00", 1.5, True, Decimal("10.50"), dt.date(2026, 1, 1),
    dt.datetime(2026, 1, 1, 8, tzinfo=dt.UTC), dt.datetime(2026, 1, 1, 8, 0, 0, 1), dt.time(22, 0),
    uuid.UUID(int=5), b"\x01\x02",
])
def test_cursor_values_survive_json_as_the_same_type(value: Any) -> None:
    back = decode(json.loads(json.dumps(encode(value))))
    assert back == value and type(back) is type(value)


def test_decimal_cursor_values_compare_as_numbers() -> None:
    assert decode(encode(Decimal("10.5"))) > decode(encode(Decimal("9.75")))


@pytest.mark.parametrize("raw", [{"when": "x"}, {"date": "2026-13-01"}, {"decimal": "abc"}, [1], {"a": 1, "b": 2}])
def test_foreign_cursor_values_are_refused(raw: Any) -> None:
    with pytest.raises(CursorValueError):
        decode(raw)


def test_unstorable_values_are_refused() -> None:
    with pytest.raises(CursorValueError):
        encode(float("nan"))
    with pytest.raises(CursorValueError):
        encode(object())


def test_record_key_text() -> None:
    assert [text(v) for v in ("A", 5, Decimal("1E+2"), dt.date(2026, 1, 2))] == ["A", "5", "100", "2026-01-02"]
