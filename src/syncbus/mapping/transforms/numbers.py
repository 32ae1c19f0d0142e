"""Number transforms: int, float, decimal(places).

Numbers never pass through binary floats on their way to text: a float is
read through its shortest repr (``1.005`` stays ``1.005``), so ``decimal(2)``
rounds what the source system wrote, not its binary approximation. Numeric
text is ASCII: optional sign, digits, optional fraction, optional exponent,
surrounding spaces ignored. No thousands separators, no ``NaN``/``Infinity``,
no underscores; booleans are not numbers.

``decimal(n)`` rounds half away from zero (ROUND_HALF_UP), never prints
``-0.00``, and refuses numbers with more than about 130 digits. A ``Decimal``
(the result of an exact expression such as ``dec(record.price) * 1.13``) is
rounded exactly as well.
"""

from __future__ import annotations

import math
from decimal import MAX_EMAX, MIN_EMIN, ROUND_HALF_UP, Context, Decimal, InvalidOperation
from typing import Any

from .registry import Transform, TransformExample, register_transform
from .values import FAST_DECIMAL, INT_FAST, StepError, int_arg, to_decimal

_MAX_INT_DIGITS = 4000  # below Python's int<->text limit; anything longer is not a business number


def _int_step(value: Any) -> Any:
    t = type(value)
    if t is int:
        return value
    if value is None:
        return None
    if t is str and len(value) <= 18 and value.isascii() and value.isdigit():
        return int(value)  # the common "0012" case without the Decimal round trip
    if t is float:
        if not math.isfinite(value):
            raise StepError("int", value, "{value} is not a finite number")
        if not value.is_integer():
            raise StepError("int", value, "{value} is not a whole number")
        return int(value)
    number = to_decimal(value, "int")
    if number.adjusted() >= _MAX_INT_DIGITS:
        raise StepError("int", value, "{value} is too large")
    if number != number.to_integral_value():
        raise StepError("int", value, "{value} is not a whole number")
    return int(number)


def _int() -> Transform:
    """Whole number from a number or numeric text ("0012" -> 12, "12.0" -> 12; "1.5" is an error)."""
    return _int_step


def _float_step(value: Any) -> Any:
    t = type(value)
    if t is float:
        if not math.isfinite(value):
            raise StepError("float", value, "{value} is not a finite number")
        return value
    if value is None:
        return None
    result = float(to_decimal(value, "float"))
    if not math.isfinite(result):
        raise StepError("float", value, "{value} is out of range")
    return result


def _float() -> Transform:
    """Floating-point number from a number or numeric text."""
    return _float_step


# Enough digits for any amount a business system holds; a coefficient longer than this
# makes quantize() raise instead of building a huge number (e.g. from "1e999999999").
_DECIMAL_CONTEXT = Context(prec=160, rounding=ROUND_HALF_UP, Emax=MAX_EMAX, Emin=MIN_EMIN,
                           traps=[InvalidOperation])


_MAX_FAST_FRACTION = 60  # longer fractions go through Decimal (which also guards the context's precision)


def _decimal(places: int | str) -> Transform:
    """Number as text with exactly `places` decimals, rounded half-up (away from zero); exact, no floats."""
    n = int_arg("decimal", "places", places, 0, 30)
    label = f"decimal({n})"
    quantum = Decimal(1).scaleb(-n)
    zeros = "." + "0" * n if n else ""
    ctx = _DECIMAL_CONTEXT

    def decimal_(value: Any) -> Any:
        t = type(value)
        if t is int and -INT_FAST < value < INT_FAST:
            return f"{value}{zeros}"
        if t is float or t is str:
            # Fast path on the digits (exact: a float's digits are its shortest repr, which is what
            # to_decimal reads). Up to n places: zero padding; more: half-up needs only the first
            # dropped digit. Anything else (exponents, spaces, huge fractions): Decimal below.
            m = FAST_DECIMAL(repr(value) if t is float else value)
            if m is not None:
                sign, whole, frac = m.groups()
                frac = frac or ""
                k = len(frac)
                if k <= n:
                    text = f"{whole}.{frac}{'0' * (n - k)}" if n else whole
                    if sign and (whole != "0" or frac.strip("0")):
                        return "-" + text
                    return text
                if k <= _MAX_FAST_FRACTION:
                    scaled = int(whole + frac[:n])
                    if frac[n] >= "5":
                        scaled += 1
                    if n:
                        digits = str(scaled).rjust(n + 1, "0")
                        text = f"{digits[:-n]}.{digits[-n:]}"
                    else:
                        text = str(scaled)
                    return "-" + text if sign and scaled else text  # never "-0.00"
        if value is None:
            return None
        number = to_decimal(value, label)
        try:
            rounded = number.quantize(quantum, ROUND_HALF_UP, ctx)
        except InvalidOperation:
            raise StepError(label, value, "{value} has too many digits") from None
        if not rounded and rounded.is_signed():
            rounded = rounded.copy_abs()  # -0.001 -> "0.00", never "-0.00"
        text = str(rounded)  # faster than format(); exponent form only for tiny values
        return format(rounded, "f") if "E" in text else text

    return decimal_


for _name, _factory, _example in (
    ("int", _int, TransformExample("int", "0012", 12)),
    ("float", _float, TransformExample("float", "12.50", 12.5)),
    ("decimal", _decimal, TransformExample("decimal(2)", "1234.565", "1234.57")),
):
    register_transform(_name, _factory, example=_example)
del _name, _factory, _example
