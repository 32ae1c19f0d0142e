"""Date transforms: ``date(out[, in[, tz]])`` and ``datetime(out[, in[, tz]])``.

``out`` is an strftime format. The input is read as ISO 8601 (what
``datetime.fromisoformat`` reads: ``Z``, offsets, ``20261120``, a space
instead of ``T``), or with the strptime format ``in`` for inputs that are not
ISO 8601 (``date('%Y%m%d', '%d.%m.%Y')``; ISO input is still accepted). Date
and datetime objects and 8-digit numbers (``20261120``) are read too.

``tz`` (an IANA zone such as ``Asia/Shanghai``, ``UTC``, or an offset such as
``+08:00``) converts the moment to that zone before formatting; a date-time
written without an offset is taken as UTC, and a date without a time is not
converted. Without ``tz`` the date and time are used as written, never
converted between zones. ``date()`` ignores the time part (``%H`` gives ``00``).

Errors name the value the record held: ``trim | date(...)`` reports the
untrimmed text (see ``StepError.restated``).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .registry import Transform, TransformExample, register_transform
from .values import StepError, TransformSpecError, kind_of, str_arg

_SAMPLE_DATETIME = datetime(2026, 11, 20, 10, 15, 30)
_fromisoformat = datetime.fromisoformat
_strptime = datetime.strptime
_OFFSET_RE = re.compile(r"([+-])([01][0-9]|2[0-3]):?([0-5][0-9])")
_ISO = "is not an ISO 8601 date or date-time"


def _format_arg(step: str, fmt: int | str | None, param: str = "format") -> str:
    text = str_arg(step, param, fmt)
    if "%" not in text:
        raise TransformSpecError(
            f"{step}(): the {param} {text!r} has no % directives (did you mean '%Y%m%d'?)"
        )
    try:
        _SAMPLE_DATETIME.strftime(text)
    except ValueError as exc:
        raise TransformSpecError(f"{step}(): invalid {param} {text!r}: {exc}") from None
    return text


def _input_format_arg(step: str, fmt: int | str | None) -> str | None:
    """The strptime format, checked by a round trip on a sample moment; '' or absent: ISO only."""
    if fmt is None or fmt == "":
        return None
    text = _format_arg(step, fmt, "input format")
    try:
        _strptime(_SAMPLE_DATETIME.strftime(text), text)
    except ValueError as exc:
        raise TransformSpecError(f"{step}(): the input format {text!r} cannot be read back: {exc}") from None
    return text


def _zone_arg(step: str, tz: int | str | None) -> tzinfo | None:
    if tz is None or tz == "":
        return None
    name = str_arg(step, "tz", tz)
    m = _OFFSET_RE.fullmatch(name)
    if m:
        sign = -1 if m.group(1) == "-" else 1
        return timezone(sign * timedelta(hours=int(m.group(2)), minutes=int(m.group(3))))
    if name.upper() == "UTC" or name == "Z":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise TransformSpecError(f"{step}(): unknown time zone {name!r} (use e.g. 'Asia/Shanghai', 'UTC' or "
                                 "'+08:00')") from None


def _parse_iso(value: Any, label: str) -> date:
    """A datetime or date as written in the source: no time zone conversion."""
    if type(value) is str:
        try:
            return _fromisoformat(value.strip())
        except ValueError:
            raise StepError(label, value, "{value} " + _ISO) from None
    if isinstance(value, date):  # datetime is a date too
        return value
    if isinstance(value, str):
        text = value.strip()
    elif isinstance(value, int) and not isinstance(value, bool):
        text = str(value)  # 20261120 from a system that sends dates as numbers
    else:
        raise StepError(label, value, f"expected an ISO 8601 date, got {kind_of(value)}")
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise StepError(label, value, "{value} " + _ISO) from None


def _reader(label: str, in_format: str | None) -> Callable[[Any], date]:
    if in_format is None:
        return lambda value: _parse_iso(value, label)

    def read(value: Any) -> date:
        if isinstance(value, date):
            return value
        if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
            text = str(value).strip()
            try:
                return _strptime(text, in_format)
            except ValueError:
                pass
            try:
                return _fromisoformat(text)
            except ValueError:
                raise StepError(label, value, f"{{value}} matches neither {in_format!r} nor ISO 8601") from None
        raise StepError(label, value, f"expected a date, got {kind_of(value)}")

    return read


def _in_zone(moment: date, zone: tzinfo) -> date:
    if not isinstance(moment, datetime):
        return moment  # a date without a time has no zone to convert from
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone)


def _label(step: str, pattern: str, in_format: int | str | None, tz: int | str | None) -> str:
    args = [repr(pattern)]
    if in_format is not None or tz is not None:
        args.append(repr(in_format if in_format is not None else ""))
    if tz is not None:
        args.append(repr(tz))
    return f"{step}({', '.join(args)})"


# strftime costs microseconds per call; formats made of these directives (nearly all
# that mappings use) are compiled into one %-template instead, several times faster.
_FAST_DIRECTIVES = {
    "Y": ("%04d", "year"),
    "m": ("%02d", "month"),
    "d": ("%02d", "day"),
    "H": ("%02d", "hour"),
    "M": ("%02d", "minute"),
    "S": ("%02d", "second"),
    "f": ("%06d", "microsecond"),
}
_DATE_ATTRS = frozenset({"year", "month", "day"})


@dataclass(frozen=True, slots=True)
class _FastFormat:
    template: str
    attrs: tuple[str, ...]

    def render(self) -> Callable[[date], str]:
        template = self.template
        if len(self.attrs) > 1:
            values = operator.attrgetter(*self.attrs)  # returns a tuple
            return lambda moment: template % values(moment)
        if self.attrs:
            value = operator.attrgetter(self.attrs[0])
            return lambda moment: template % (value(moment),)
        return lambda moment: template % ()


def _fast_format(pattern: str) -> _FastFormat | None:
    parts: list[str] = []
    attrs: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch != "%":
            parts.append(ch)
            i += 1
            continue
        directive = pattern[i + 1 : i + 2]
        if directive == "%":
            parts.append("%%")
        elif directive in _FAST_DIRECTIVES:
            spec, attr = _FAST_DIRECTIVES[directive]
            parts.append(spec)
            attrs.append(attr)
        else:
            return None
        i += 2
    return _FastFormat("".join(parts), tuple(attrs))


def _formatter(pattern: str, *, date_only: bool) -> Callable[[date], str]:
    fast = _fast_format(pattern)
    if fast is not None and (not date_only or _DATE_ATTRS.issuperset(fast.attrs)):
        return fast.render()
    if date_only:
        return lambda moment: (moment.date() if isinstance(moment, datetime) else moment).strftime(pattern)
    return lambda moment: moment.strftime(pattern)


def _date(out: int | str, in_: int | str | None = None, tz: int | str | None = None) -> Transform:
    """A date in, the date formatted with strftime `out`; optional strptime format `in` and time zone `tz`.

    ``date('%Y%m%d')``: ISO 8601 in. ``date('%Y%m%d', '%d.%m.%Y')``: also
    ``20.11.2026``. ``date('%Y-%m-%d', '', 'Asia/Shanghai')``: the date in
    Shanghai of ``2026-11-20T18:00:00Z`` is ``2026-11-21``.
    """
    pattern = _format_arg("date", out)
    parse_in = _input_format_arg("date", in_)
    zone = _zone_arg("date", tz)
    label = _label("date", pattern, in_, tz)
    render = _formatter(pattern, date_only=True)
    read = _reader(label, parse_in)
    if zone is None:

        def date_(value: Any) -> Any:
            if value is None:
                return None
            return render(read(value))

        return date_

    def date_tz(value: Any) -> Any:
        if value is None:
            return None
        return render(_in_zone(read(value), zone))

    return date_tz


def _datetime(out: int | str, in_: int | str | None = None, tz: int | str | None = None) -> Transform:
    """A date-time (or a date, at 00:00) in, strftime `out`; optional strptime format `in` and time zone `tz`.

    ``datetime('%Y-%m-%d %H:%M', '', 'Asia/Shanghai')`` turns
    ``2026-11-20T02:15:00Z`` into ``2026-11-20 10:15``; a date-time without an
    offset is taken as UTC when `tz` is given.
    """
    pattern = _format_arg("datetime", out)
    parse_in = _input_format_arg("datetime", in_)
    zone = _zone_arg("datetime", tz)
    label = _label("datetime", pattern, in_, tz)
    render = _formatter(pattern, date_only=False)
    read = _reader(label, parse_in)

    def datetime_(value: Any) -> Any:
        if value is None:
            return None
        parsed = read(value)
        if not isinstance(parsed, datetime):
            parsed = datetime(parsed.year, parsed.month, parsed.day)
        if zone is not None:
            parsed = _in_zone(parsed, zone)
        return render(parsed)

    return datetime_


for _name, _factory, _example in (
    ("date", _date, TransformExample("date('%Y%m%d', '%d.%m.%Y')", "20.11.2026", "20261120")),
    ("datetime", _datetime,
     TransformExample("datetime('%Y-%m-%d %H:%M', '', 'Asia/Shanghai')", "2026-11-20T02:15:00Z", "2026-11-20 10:15")),
):
    register_transform(_name, _factory, example=_example)
del _name, _factory, _example
