"""Filters and paging shared by `syncbus dlq list`, `GET /dlq` and the console."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from syncbus.dlq.filters import DeadLetterFilter, FilterError, Page, list_page, parse_time
from tests.dlq.conftest import T0

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def test_parse_time_accepts_iso_dates_zones_and_durations_ago():
    assert parse_time("2026-11-20", now=NOW) == datetime(2026, 11, 20, tzinfo=UTC)
    assert parse_time("2026-11-20T08:00:00+08:00", now=NOW) == datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
    assert parse_time("2h", now=NOW) == NOW - timedelta(hours=2)
    assert parse_time("7d", now=NOW) == NOW - timedelta(days=7)
    with pytest.raises(FilterError, match="--until 'yesterday'"):
        parse_time("yesterday", "--until", now=NOW)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("status", "lost", "status 'lost': expected one of"),
    ("reason", "network", "reason 'network': expected one of"),
    ("text", "x" * 201, "text is longer than 200"),
    ("key", "k" * 513, "key is longer than 512"),
    ("route", "a\x00b", "route contains control characters"),
    ("since", "soon", "since 'soon'"),
])
def test_bad_filter_values_are_refused_with_their_name(field: str, value: str, message: str):
    with pytest.raises(FilterError, match=message):
        DeadLetterFilter.parse(**{field: value})


def test_until_must_follow_since_and_labels_rename_fields():
    with pytest.raises(FilterError, match="--until must be later than --since"):
        DeadLetterFilter.parse(since="2026-11-21", until="2026-11-20", labels={"since": "--since", "until": "--until"})
    with pytest.raises(FilterError, match="--failure-reason 'x'"):
        DeadLetterFilter.parse(reason="x", labels={"reason": "--failure-reason"})


def test_empty_form_fields_mean_no_filter_and_raw_keeps_what_was_typed():
    flt = DeadLetterFilter.parse(route="", status="", since="", text="  ")
    assert flt.is_empty() and flt.raw == {}
    flt = DeadLetterFilter.parse(route="orders", since="2h", now=NOW)
    assert flt.raw == {"route": "orders", "since": "2h"} and flt.since == NOW - timedelta(hours=2)
    assert flt.describe() == "route=orders since=2h"


def test_only_pending_letters_can_be_acted_on():
    assert DeadLetterFilter.parse(route="r").pending_only().status == "pending"
    with pytest.raises(FilterError, match="only pending"):
        DeadLetterFilter.parse(status="discarded").pending_only()


def test_list_page_filters_by_every_field_and_pages(store, add):
    add(3, route="orders", reason="delivery")
    add(2, route="orders", reason="mapping", error="field 'NETWR': not a number")
    add(1, route="employees", reason="delivery", key="E-1", value=b'{"emp": "needle-42"}')
    page = list_page(store, DeadLetterFilter.parse(route="orders"), limit=2, offset=0)
    assert (page.total, len(page.items), page.describe(), page.has_next) == (5, 2, "showing 1-2 of 5", True)
    assert page.items[0].last_failed_at > page.items[1].last_failed_at          # newest first
    last = list_page(store, DeadLetterFilter.parse(route="orders"), limit=2, offset=4)
    assert (last.describe(), last.has_next, last.has_previous) == ("showing 5-5 of 5", False, True)
    assert list_page(store, DeadLetterFilter.parse(reason="mapping"), 10).total == 2
    assert list_page(store, DeadLetterFilter.parse(text="NETWR"), 10).total == 2       # in the error
    assert list_page(store, DeadLetterFilter.parse(key="E-1"), 10).total == 1
    assert list_page(store, DeadLetterFilter.parse(sink="erp", route="employees"), 10).total == 1
    window = DeadLetterFilter.parse(since=(T0 + timedelta(minutes=1)).isoformat(),
                                    until=(T0 + timedelta(minutes=3)).isoformat())
    assert list_page(store, window, 10).total == 2
    assert list_page(store, DeadLetterFilter.parse(status="discarded"), 10).describe() == "no dead letters match"
    assert Page([], 5, 10, 5).describe() == "showing none of 5 (offset 10 is past the end)"
    with pytest.raises(FilterError, match="limit"):
        list_page(store, DeadLetterFilter(), limit=0)


def test_text_finds_words_in_the_payload(store, add):
    add(1, route="employees", key="E-1", value=b'{"emp": "needle-42"}')
    add(1, route="employees", key="E-2")
    assert [d.key for d in list_page(store, DeadLetterFilter.parse(text="needle-42"), 10).items] == ["E-1"]
