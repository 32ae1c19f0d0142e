"""date(out[, in[, tz]]) and datetime(out[, in[, tz]]); errors that show the record's original value."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncbus.errors import TransformError
from syncbus.mapping.transforms import LookupMiss, TransformSpecError, compile_chain
from syncbus.mapping.transforms.registry import _ExampleTables


def run(chain: str, value: Any) -> Any:
    return compile_chain(chain)(value)


@pytest.mark.parametrize(("chain", "value", "expected"), [
    ("date('%Y%m%d', '%Y/%m/%d')", "2026/11/20", "20261120"),
    ("date('%Y%m%d', '%Y/%m/%d')", "2026-11-20", "20261120"),  # ISO is still read
    ("date('%Y-%m-%d', '%d.%m.%Y')", " 20.11.2026 ", "2026-11-20"),
    ("date('%Y-%m-%d', '%Y%m%d')", 20261120, "2026-11-20"),
    ("datetime('%Y-%m-%d %H:%M', '%d/%m/%Y %H.%M')", "20/11/2026 10.15", "2026-11-20 10:15"),
    ("date('%Y-%m-%d', '', 'Asia/Shanghai')", "2026-11-20T18:00:00Z", "2026-11-21"),
    ("date('%Y-%m-%d', '', 'America/New_York')", "2026-11-20T03:00:00+08:00", "2026-11-19"),
    ("date('%Y-%m-%d', '', 'Asia/Shanghai')", "2026-11-20", "2026-11-20"),  # a date has no zone
    ("datetime('%Y-%m-%dT%H:%M%z', '', 'Asia/Shanghai')", "2026-11-20T02:15:00Z", "2026-11-20T10:15+0800"),
    ("datetime('%H:%M %Z', '', 'UTC')", "2026-11-20T10:15:00+08:00", "02:15 UTC"),
    ("datetime('%H:%M', '', '+05:30')", "2026-11-20T00:00:00Z", "05:30"),
    ("datetime('%H:%M', '', 'Asia/Shanghai')", "2026-11-20T02:15:00", "10:15"),  # no offset: UTC
    ("datetime('%d.%m.%Y %H:%M', '%Y%m%d%H%M%S', 'Europe/Berlin')", "20260701120000", "01.07.2026 14:00"),
])
def test_input_formats_and_zones(chain: str, value: Any, expected: str) -> None:
    assert run(chain, value) == expected


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)),
       st.sampled_from(["Asia/Shanghai", "Europe/Berlin", "America/Sao_Paulo", "UTC"]))
def test_zone_conversion_agrees_with_zoneinfo(moment: datetime, zone: str) -> None:
    expected = moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S")
    assert run(f"datetime('%Y-%m-%d %H:%M:%S', '', '{zone}')", moment.isoformat()) == expected
    assert run(f"date('%Y-%m-%d', '', '{zone}')", moment.isoformat()) == expected[:10]


@pytest.mark.parametrize(("chain", "message"), [
    ("date('%Y', '%Y', 'Mars/Olympus')", "unknown time zone 'Mars/Olympus'"),
    ("date('%Y', 'YYYY')", "the input format 'YYYY' has no % directives"),
    ("date('%Y', '%Q')", "date(): the input format '%Q' cannot be read back: 'Q' is a bad directive"),
    ("date('%Y', 1)", "input format must be text in quotes"),
    ("date('%Y', '%Y', 8)", "tz must be text in quotes"),
    ("date('%Y', '', '', 4)", "date() takes 1 to 3 arguments (out, in, tz), got 4"),
])
def test_bad_arguments_are_load_time_errors(chain: str, message: str) -> None:
    with pytest.raises(TransformSpecError) as err:
        compile_chain(chain)
    assert message in str(err.value)


def test_a_value_matching_neither_format_names_both() -> None:
    with pytest.raises(TransformError) as err:
        run("date('%Y%m%d', '%d.%m.%Y')", "Nov 20")
    assert str(err.value) == "date('%Y%m%d', '%d.%m.%Y'): 'Nov 20' matches neither '%d.%m.%Y' nor ISO 8601"


@pytest.mark.parametrize(("chain", "value", "message"), [
    ("trim | date('%Y%m%d')", " 2026-13-01 ",
     "date('%Y%m%d'): ' 2026-13-01 ' is not an ISO 8601 date or date-time (after trim: '2026-13-01')"),
    ("str | upper | date('%Y%m%d')", 20261301,
     "date('%Y%m%d'): 20261301 is not an ISO 8601 date or date-time (after str | upper: '20261301')"),
    ("trim | upper | zfill(3) | int", " ab ",
     "int: ' ab ' is not a number (after trim | upper | zfill(3): '0AB')"),
    ("trim | decimal(2)", [1],
     "trim: expected text or a number, got a list"),  # the first step: nothing to restate
    ("trim | date('%Y')", " ",
     "date('%Y'): ' ' is not an ISO 8601 date or date-time (after trim: '')"),
])
def test_errors_show_the_original_value(chain: str, value: Any, message: str) -> None:
    with pytest.raises(TransformError) as err:
        run(chain, value)
    assert str(err.value) == message


def test_a_restated_lookup_miss_is_still_a_lookup_miss() -> None:
    fn = compile_chain("trim | upper | lookup(codes)", lookups=_ExampleTables({"codes": {"A": "1"}}))
    with pytest.raises(LookupMiss) as err:
        fn(" b ")
    assert (err.value.table, err.value.key) == ("codes", "B")
    assert str(err.value) == "lookup(codes): no entry for ' b ' (after trim | upper: 'B')"


def test_error_of_a_mapped_field_shows_the_original_value(compile_yaml: Any) -> None:
    m = compile_yaml("""
        fields:
          D: {from: d, transform: "trim | date('%Y%m%d', '%d.%m.%Y')"}
    """)
    with pytest.raises(Exception) as err:
        m.map_object({"d": " 32.13.2026 "})
    assert "' 32.13.2026 '" in str(err.value) and "field 'D' (from 'd')" in str(err.value)
