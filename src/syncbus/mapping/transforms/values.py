"""Value helpers shared by the built-in transforms: canonical text, exact numbers, argument checks.

Kept apart from the transforms themselves so every family (text, numbers,
dates, lookup) reads values the same way: numbers never pass through binary
floats on their way to text, numeric text is plain ASCII.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from syncbus.errors import SyncbusError, TransformError

from ..decimals import NUMBER_RE

__all__ = [
    "FAST_DECIMAL", "INT_FAST", "StepError", "TransformSpecError", "float_text", "int_arg", "kind_of", "show",
    "str_arg", "to_decimal", "to_text",
]

INT_FAST = 10**18
# "-12.5", "0.75", "3": no exponent, no sign but "-", no leading zeros (those go the slow way)
FAST_DECIMAL = re.compile(r"(-?)(0|[1-9][0-9]{0,17})(?:\.([0-9]*))?").fullmatch


class TransformSpecError(SyncbusError):
    """A transform chain is invalid; found when the mapping is compiled, never per record.

    ``offset`` is the 0-based position in the chain text where the problem
    starts (when known), so the caller can turn it into a column.
    """

    def __init__(self, message: str, offset: int | None = None) -> None:
        self.message = message
        self.offset = offset
        super().__init__(message)


class StepError(TransformError):
    """A step refused a value. Keeps the step, the value and the problem apart so that a
    chain can restate the error with the *original* value (``trim | date(...)`` names
    what the record held, not what ``trim`` made of it).

    ``problem`` may contain the marker ``{value}``, where the value is shown.
    """

    def __init__(self, step: str, value: Any, problem: str) -> None:
        self.step = step
        self.value = value
        self.problem = problem
        super().__init__(f"{step}: {problem.replace('{value}', show(value))}")

    def restated(self, original: Any, before: str) -> StepError:
        """The same error (same class) about ``original``, which earlier steps ``before`` turned into ``value``."""
        again = type(self).__new__(type(self))  # not copy.copy: subclasses take other __init__ arguments
        again.__dict__.update(self.__dict__)
        shown, now = show(original), show(self.value)
        if "{value}" in self.problem:
            text = f"{self.step}: {self.problem.replace('{value}', shown)} (after {before}: {now})"
        else:
            text = f"{self.step}: {self.problem} (value {shown}, after {before}: {now})"
        again.args = (text,)
        return again


def show(value: Any) -> str:
    """The value as it appears in an error message: repr, cut to a readable length."""
    try:
        text = repr(value)
    except ValueError:  # an int longer than Python will turn into text
        return f"<{type(value).__name__} too long to show>"
    return text if len(text) <= 60 else text[:57] + "..."


def kind_of(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def float_text(value: float) -> str:
    text = repr(value)
    if "e" in text:  # 1e+16 -> 10000000000000000: systems downstream rarely read exponents
        return format(Decimal(text), "f")
    return text


def to_text(value: Any, label: str = "str") -> str:
    """Canonical text of a scalar: ``10 -> "10"``, ``1.5 -> "1.5"``, ``True -> "true"``.

    Decimals keep their exact digits (``Decimal("1.50") -> "1.50"``), floats use
    their shortest repr without exponent, dates and times ISO 8601. Lists and
    objects raise TransformError naming ``label``.
    """
    t = type(value)
    if t is str:
        return value  # type: ignore[no-any-return]
    if t is int:
        if -INT_FAST < value < INT_FAST:
            return str(value)
    elif t is bool:
        return "true" if value else "false"
    elif t is float:
        return float_text(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return str(int(value))
        except ValueError:  # more digits than Python converts to text
            raise StepError(label, value, "the integer is too large to convert to text") from None
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    raise StepError(label, value, f"expected text or a number, got {kind_of(value)}")


def to_decimal(value: Any, label: str) -> Decimal:
    """The exact decimal a source value stands for; StepError if it is not a finite number."""
    t = type(value)
    if t is str or isinstance(value, str):
        text = value.strip()
        if NUMBER_RE.fullmatch(text) is None:
            raise StepError(label, value, "{value} is not a number")
        return Decimal(text)
    if t is int:
        return Decimal(value)
    if t is float:
        if not math.isfinite(value):
            raise StepError(label, value, "{value} is not a finite number")
        return Decimal(repr(value))
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise StepError(label, value, "{value} is not a finite number")
        return value
    if isinstance(value, bool):
        raise StepError(label, value, "{value} is a boolean, not a number")
    if isinstance(value, int):
        return Decimal(int(value))
    if isinstance(value, float):
        return to_decimal(float(value), label)
    raise StepError(label, value, f"expected a number, got {kind_of(value)}")


def int_arg(step: str, param: str, value: int | str | None, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TransformSpecError(f"{step}(): {param} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise TransformSpecError(f"{step}(): {param} must be between {low} and {high}, got {value}")
    return value


def str_arg(step: str, param: str, value: int | str | None) -> str:
    if not isinstance(value, str):
        raise TransformSpecError(f"{step}(): {param} must be text in quotes, got {value!r}")
    return value
