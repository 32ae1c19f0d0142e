"""When a poll source runs: a cron ``schedule`` in a ``timezone``, or an ``interval``.

Runs happen in *slots*: the instants the schedule names. A slot is the same
instant on every node (cron times; for an interval, multiples of the interval
since the Unix epoch), so several nodes sharing one state store can agree to
run each slot once -- the runner claims the slot in the store before running.

At start a runner claims the latest slot that is due: if it has not run --
syncbus was down at 22:00, or the source never ran -- it runs once, at once;
slots missed in between are not run one by one (each run reads everything
since the cursor anyway).

Daylight saving time is handled as Vixie cron handles it, because that is
what operators expect of "0 2 * * *": when clocks go forward, a time that
does not exist that night runs at the first instant after the gap (croniter
does this); when clocks go back, a *fixed-time* expression (neither minute
nor hour starts with ``*``) runs at the first of the two repeated wall-clock
times only -- a nightly load must not run twice that night -- while
wildcard expressions (``*/20 * * * *``, ``0 * * * *``) keep running through
both passes, since they mean "every so much real time".
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

DEFAULT_INTERVAL = 30.0  # seconds, for a poll source with neither schedule nor interval


def check_cron(expr: str) -> str:
    """The expression, stripped, if croniter understands it with 5 fields; else ValueError."""
    text = " ".join(expr.split())
    if len(text.split(" ")) != 5 or not croniter.is_valid(text):
        raise ValueError(f"invalid cron expression {expr!r}: expected 5 fields "
                         "(minute hour day-of-month month day-of-week), e.g. '0 22 * * *'")
    return text


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}: expected an IANA name such as Asia/Shanghai") from None
    return name


class Schedule(Protocol):
    """Slots as aware UTC datetimes."""

    def latest(self, now: datetime) -> datetime:
        """The latest slot at or before ``now``."""

    def following(self, slot: datetime) -> datetime:
        """The first slot strictly after ``slot``."""

    def describe(self) -> str: ...


class CronSchedule:
    """Slots of a 5-field cron expression in an IANA time zone (see the module docstring on DST)."""

    def __init__(self, expr: str, timezone: str = "UTC") -> None:
        self.expr = check_cron(expr)
        self.timezone = check_timezone(timezone)
        self.zone = ZoneInfo(self.timezone)
        minute, hour = self.expr.split(" ")[:2]
        self.fixed_time = not (minute.startswith("*") or hour.startswith("*"))

    def latest(self, now: datetime) -> datetime:
        # croniter's get_prev is strictly before its start: start one second after
        # ``now`` (truncated), so a slot exactly at ``now`` counts as due.
        start = now.astimezone(self.zone).replace(microsecond=0) + timedelta(seconds=1)
        slots = croniter(self.expr, start)
        while True:
            prev = slots.get_prev(datetime).astimezone(UTC)
            if not self.repeated(prev):
                return prev

    def following(self, slot: datetime) -> datetime:
        slots = croniter(self.expr, slot.astimezone(self.zone))
        while True:
            nxt = slots.get_next(datetime).astimezone(UTC)
            if not self.repeated(nxt):
                return nxt

    def repeated(self, slot: datetime) -> bool:
        """A fixed-time slot in the second pass of the hour the clocks go back: it already ran in the first.

        croniter's own ``fold`` is unreliable, so the wall time is derived
        again from UTC (zoneinfo marks the second pass ``fold=1``).
        """
        if not self.fixed_time:
            return False
        local = slot.astimezone(UTC).astimezone(self.zone)
        return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()

    def describe(self) -> str:
        return f"cron {self.expr} ({self.timezone})"


class IntervalSchedule:
    """Every ``seconds``, aligned to the Unix epoch so every node names the same slots."""

    def __init__(self, seconds: float) -> None:
        if not seconds > 0:
            raise ValueError(f"interval must be positive, not {seconds!r}")
        self.seconds = float(seconds)

    def latest(self, now: datetime) -> datetime:
        ts = now.timestamp()
        return datetime.fromtimestamp(math.floor(ts / self.seconds) * self.seconds, UTC)

    def following(self, slot: datetime) -> datetime:
        nxt = self.latest(slot) + timedelta(seconds=self.seconds)
        while nxt <= slot:  # float rounding at the boundary
            nxt += timedelta(seconds=self.seconds)
        return nxt

    def describe(self) -> str:
        return f"every {self.seconds:g}s"


def schedule_for(schedule: str | None, timezone: str = "UTC", interval: float | None = None) -> Schedule:
    """The schedule a poll source's options describe (``interval`` defaults to 30s)."""
    if schedule is not None:
        return CronSchedule(schedule, timezone)
    return IntervalSchedule(interval if interval is not None else DEFAULT_INTERVAL)
