"""Slots of cron and interval schedules (sources/schedule.py): the same instants on every node."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from syncbus.sources.schedule import CronSchedule, IntervalSchedule, check_cron, check_timezone, schedule_for


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_cron_slots_are_in_the_schedules_time_zone() -> None:
    nightly = CronSchedule("0 22 * * *", "Asia/Shanghai")  # 22:00 in Shanghai is 14:00 UTC
    assert nightly.latest(utc(2026, 11, 20, 13, 59, 59)) == utc(2026, 11, 19, 14)
    assert nightly.latest(utc(2026, 11, 20, 14, 0, 0)) == utc(2026, 11, 20, 14)  # a slot at `now` is due
    assert nightly.latest(utc(2026, 11, 20, 15, 30)) == utc(2026, 11, 20, 14)
    assert nightly.following(utc(2026, 11, 20, 14)) == utc(2026, 11, 21, 14)
    assert nightly.describe() == "cron 0 22 * * * (Asia/Shanghai)"


def test_cron_follows_daylight_saving_time() -> None:
    berlin = CronSchedule("0 2 * * *", "Europe/Berlin")
    # 02:00 local is 00:00 UTC in summer, 01:00 UTC in winter (clocks go back on 2026-10-25)
    assert berlin.latest(utc(2026, 10, 24, 12)) == utc(2026, 10, 24, 0)
    assert berlin.latest(utc(2026, 10, 26, 12)) == utc(2026, 10, 26, 1)


def test_interval_slots_are_epoch_aligned() -> None:
    every = IntervalSchedule(30)
    now = utc(2026, 11, 20, 10, 0, 47)
    assert every.latest(now) == utc(2026, 11, 20, 10, 0, 30)
    assert every.following(every.latest(now)) == utc(2026, 11, 20, 10, 1, 0)
    assert every.following(now) == utc(2026, 11, 20, 10, 1, 0)  # strictly after, from any instant
    sub = IntervalSchedule(0.2)
    slot = sub.latest(now + timedelta(microseconds=250_000))
    assert slot == now + timedelta(microseconds=200_000)
    assert sub.following(slot) - slot == timedelta(microseconds=200_000)


def test_schedule_for_options() -> None:
    assert isinstance(schedule_for("*/5 * * * *", "UTC"), CronSchedule)
    assert schedule_for(None, interval=10).describe() == "every 10s"
    assert schedule_for(None).describe() == "every 30s"  # the default interval


@pytest.mark.parametrize("expr", ["0 25 * * *", "* * * *", "0 0 * * * *", "nightly", ""])
def test_bad_cron_is_refused(expr: str) -> None:
    with pytest.raises(ValueError, match="invalid cron expression"):
        check_cron(expr)


def test_timezone_names() -> None:
    assert check_timezone("Asia/Shanghai") == "Asia/Shanghai"
    with pytest.raises(ValueError, match="unknown time zone 'Asia/Shangai'"):
        check_timezone("Asia/Shangai")
    with pytest.raises(ValueError, match="unknown time zone"):
        check_timezone("../../etc/passwd")
