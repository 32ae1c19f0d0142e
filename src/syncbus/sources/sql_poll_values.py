"""Database values as JSON, for ``sql_poll``: the records it publishes and the cursor it stores.

Two different needs, so two functions:

* **Records** (:func:`row_json`) are read by mappings and people. Money must
  stay exact and dates unambiguous, so DECIMAL/NUMERIC values become exact
  decimal text (``"1234.50"``, never a binary float and never ``"1.2E+3"``),
  dates and timestamps ISO 8601 text, binary data base64. A column that is a
  binary float in the database (REAL, DOUBLE) stays a JSON number: it was
  never exact, and turning it into text would only hide that.
* **Cursor values** (:func:`encode` / :func:`decode`) are bound back into the
  next query. They must come back as the *same Python type* the driver gave
  us: an ISO string compared with a PostgreSQL ``timestamptz`` happens to
  work, but on SQLite the text stored in the file is compared byte by byte,
  and in :meth:`~syncbus.sources.sql_poll.SqlPollSource.later` decimals must
  compare as numbers, not as text. So types JSON lacks are tagged:
  ``{"datetime": "2026-11-20T14:00:00+00:00"}``, ``{"decimal": "10.50"}``.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import orjson

from ..errors import SyncbusError


class CursorValueError(SyncbusError):
    """A stored cursor value cannot be turned back into a database value (not written by sql_poll)."""


def decimal_text(value: Decimal) -> str:
    """Exact positional text of a decimal: ``Decimal("1E+3")`` is ``"1000"``, ``NaN`` stays ``"NaN"``."""
    return format(value, "f") if value.is_finite() else str(value)


def _default(value: Any) -> Any:
    """orjson's fallback for what it cannot write itself (it does datetime, date, time and UUID)."""
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dt.timedelta):
        return f"{value.total_seconds():g}"  # interval columns: seconds, as text
    return str(value)  # arrays of exotic types, ranges, network addresses: their text form


def _clean(value: Any) -> Any:
    """Non-finite floats have no JSON number; orjson would write null and lose them."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def row_json(names: Sequence[str], values: Sequence[Any], *, omit_nulls: bool = False) -> bytes:
    """One row as a JSON object, columns in query order."""
    obj = {name: _clean(value) for name, value in zip(names, values, strict=True)
           if not (omit_nulls and value is None)}
    return orjson.dumps(obj, default=_default, option=orjson.OPT_NON_STR_KEYS)


def text(value: Any) -> str:
    """A value as record-key text (the same form it has in the record's JSON)."""
    if isinstance(value, str):
        return value
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, dt.date | dt.time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)


_TAGS = ("datetime", "date", "time", "decimal", "uuid", "bytes")


def encode(value: Any) -> Any:
    """A watermark or key value as JSON that :func:`decode` turns back into the same type."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CursorValueError(f"a watermark or key of {value!r} cannot be stored")
        return value
    if isinstance(value, dt.datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"date": value.isoformat()}
    if isinstance(value, dt.time):
        return {"time": value.isoformat()}
    if isinstance(value, Decimal):
        return {"decimal": str(value)}
    if isinstance(value, uuid.UUID):
        return {"uuid": str(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"bytes": base64.b64encode(bytes(value)).decode("ascii")}
    raise CursorValueError(f"a watermark or key of type {type(value).__name__} cannot be stored; "
                           "use a column of a number, text, date or timestamp type")


def decode(obj: Any) -> Any:
    """The database value :func:`encode` wrote; :class:`CursorValueError` for anything else."""
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, dict) and len(obj) == 1:
        [(tag, raw)] = obj.items()
        if tag in _TAGS and isinstance(raw, str):
            try:
                if tag == "datetime":
                    return dt.datetime.fromisoformat(raw)
                if tag == "date":
                    return dt.date.fromisoformat(raw)
                if tag == "time":
                    return dt.time.fromisoformat(raw)
                if tag == "decimal":
                    return Decimal(raw)
                if tag == "uuid":
                    return uuid.UUID(raw)
                return base64.b64decode(raw.encode("ascii"), validate=True)
            except (ValueError, ArithmeticError) as exc:
                raise CursorValueError(f"stored cursor value {obj!r} is not a valid {tag}: {exc}") from None
    raise CursorValueError(f"stored cursor value {obj!r} was not written by sql_poll")
