"""Cron slots in real time zones: a zone without DST (Asia/Shanghai) and one with it (Europe/Berlin).

The instants are written out in UTC, computed by hand from the zones' rules
(Shanghai is UTC+8 all year; Berlin is UTC+1, UTC+2 from the last Sunday of
March 01:00 UTC to the last Sunday of October 01:00 UTC -- in 2026 the 29th
of March and the 25th of October).
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from syncbus.sources.schedule import CronSchedule


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def slots_after(schedule: CronSchedule, start: datetime, n: int) -> list[datetime]:
    out, slot = [], start
    for _ in range(n):
        slot = schedule.following(slot)
        out.append(slot)
    return out


def test_nightly_in_shanghai_is_14_utc_every_day() -> None:
    nightly = CronSchedule("0 22 * * *", "Asia/Shanghai")
    assert slots_after(nightly, utc(2026, 2, 26, 12), 4) == [
        utc(2026, 2, 26, 14), utc(2026, 2, 27, 14), utc(2026, 2, 28, 14), utc(2026, 3, 1, 14)]  # month end
    assert nightly.latest(utc(2026, 12, 31, 15)) == utc(2026, 12, 31, 14)
    assert nightly.latest(utc(2027, 1, 1, 13, 59)) == utc(2026, 12, 31, 14)  # 21:59 in Shanghai on New Year's Day
    slot = nightly.latest(utc(2026, 1, 1))
    for _ in range(400):  # no DST: always exactly a day apart
        nxt = nightly.following(slot)
        assert nxt - slot == timedelta(days=1) and nxt.hour == 14
        slot = nxt


def test_nightly_in_berlin_moves_with_daylight_saving_time() -> None:
    nightly = CronSchedule("0 22 * * *", "Europe/Berlin")
    assert slots_after(nightly, utc(2026, 3, 27, 12), 4) == [
        utc(2026, 3, 27, 21), utc(2026, 3, 28, 21),   # CET: 22:00 is 21:00 UTC
        utc(2026, 3, 29, 20), utc(2026, 3, 30, 20)]   # CEST from the 29th: 20:00 UTC
    assert slots_after(nightly, utc(2026, 10, 23, 12), 4) == [
        utc(2026, 10, 23, 20), utc(2026, 10, 24, 20),
        utc(2026, 10, 25, 21), utc(2026, 10, 26, 21)]  # back to CET on the 25th
    assert nightly.latest(utc(2026, 10, 25, 20, 30)) == utc(2026, 10, 24, 20)  # 21:30 CET: not yet due


def test_a_time_the_clocks_skip_runs_right_after_the_gap() -> None:
    early = CronSchedule("30 2 * * *", "Europe/Berlin")
    # 29 March: 02:00-03:00 does not exist; 02:30 runs at 03:00 CEST (01:00 UTC), once
    assert slots_after(early, utc(2026, 3, 28, 12), 3) == [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30),
                                                          utc(2026, 3, 31, 0, 30)]
    assert early.latest(utc(2026, 3, 29, 1, 10)) == utc(2026, 3, 29, 1)


def test_a_fixed_time_the_clocks_repeat_runs_once() -> None:
    early = CronSchedule("30 2 * * *", "Europe/Berlin")
    # 25 October: 02:00-03:00 happens twice (CEST, then CET); the nightly job runs at the first 02:30 only
    assert slots_after(early, utc(2026, 10, 24, 12), 3) == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30),
                                                           utc(2026, 10, 27, 1, 30)]
    assert early.latest(utc(2026, 10, 25, 1, 45)) == utc(2026, 10, 25, 0, 30)  # 02:45 CET: the 02:30 CET is skipped
    assert early.following(utc(2026, 10, 25, 0, 30)) == utc(2026, 10, 26, 1, 30)


@pytest.mark.parametrize(("expr", "per_hour"), [("*/30 * * * *", 2), ("0 * * * *", 1), ("15 */1 * * *", 1)])
def test_wildcard_schedules_keep_their_pace_through_the_repeated_hour(expr: str, per_hour: int) -> None:
    every = CronSchedule(expr, "Europe/Berlin")
    start = utc(2026, 10, 24, 22)  # 00:00 CEST on the 25th; five real hours follow up to 03:00 UTC
    got = [s for s in slots_after(every, start, 20) if s <= utc(2026, 10, 25, 3)]
    assert len(got) == 5 * per_hour  # the repeated 02:xx hour runs twice: it is real time
    assert all(b > a for a, b in itertools.pairwise(got))


def test_slots_are_the_same_instants_whatever_the_nodes_local_zone() -> None:
    nightly = CronSchedule("0 22 * * *", "Asia/Shanghai")
    from zoneinfo import ZoneInfo

    now = utc(2026, 11, 20, 15, 30)
    for zone in ("America/New_York", "Europe/Berlin", "Asia/Kolkata"):
        local_now = now.astimezone(ZoneInfo(zone))  # a node whose clock is set to another zone
        assert nightly.latest(local_now) == utc(2026, 11, 20, 14)
        assert nightly.following(nightly.latest(local_now)) == utc(2026, 11, 21, 14)
