"""Exact decimal arithmetic for CEL expressions (DESIGN §4: money is exact).

CEL itself only knows ``int`` and binary ``double``: ``12.5 * 1.13`` is
``14.124999999999998`` there, which rounds to 14.12 instead of 14.13. The
``cel`` package also turns any Python value a function returns into one of
CEL's own types (a ``Decimal`` comes back as a ``double``), so a decimal cannot
live inside CEL as a number. It lives there as its exact text instead
(``"14.125"``), and :mod:`.cel_types` rewrites every operator whose operands
are decimals into a call of one of the functions below. Inside them all
arithmetic is Python's ``decimal`` module; no value ever passes through a
binary float (a float from the record is read through its shortest repr, the
digits the sending system wrote).

Precision: ``+``, ``-``, ``*``, ``sum`` and ``round`` are exact (a result that
would need more than 1000 digits is an error, not a silently rounded value).
``/`` is exact when the quotient has at most 34 significant digits and is
otherwise rounded to 34 (IEEE 754 decimal128, half-even); ``%`` is the
remainder with the sign of the dividend, like CEL's ``int`` ``%``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from decimal import (
    ROUND_DOWN,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
)
from typing import Any

__all__ = [
    "DIVISION_CONTEXT", "EXACT_CONTEXT", "FUNCTIONS", "NUMBER_RE", "DecimalProblem", "forget_problem",
    "last_problem",
    "to_decimal", "to_text",
]

# ASCII: optional sign, digits, optional fraction, optional exponent. No NaN, no
# Infinity, no thousands separators: those are never amounts.
NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
MAX_DIGITS = 1000
MAX_TEXT = 2 * MAX_DIGITS

EXACT_CONTEXT = Context(prec=MAX_DIGITS, rounding=ROUND_HALF_UP, Emax=10_000, Emin=-10_000,
                        traps=[InvalidOperation, Inexact, Overflow, DivisionByZero])
ROUNDING_CONTEXT = Context(prec=MAX_DIGITS, rounding=ROUND_HALF_UP, Emax=10_000, Emin=-10_000,
                           traps=[InvalidOperation, Overflow])
DIVISION_CONTEXT = Context(prec=34, rounding=ROUND_HALF_EVEN, Emax=10_000, Emin=-10_000,
                           traps=[InvalidOperation, Overflow, DivisionByZero])


class DecimalProblem(ValueError):
    """A decimal function got something it cannot compute (not a number, division by zero)."""


_last = threading.local()


def last_problem() -> DecimalProblem | None:
    """The problem raised by the latest failing decimal function in this thread, then forgotten.

    The ``cel`` package turns an exception raised in a Python function into a
    ``RuntimeError`` with its own text; this hands the original error (by
    object) to whoever catches that RuntimeError.
    """
    problem: DecimalProblem | None = getattr(_last, "problem", None)
    _last.problem = None
    return problem


def forget_problem() -> None:
    """Called before a run: CEL's ``||``/``&&`` may absorb an error, which must not linger."""
    _last.problem = None


def _fail(message: str) -> DecimalProblem:
    problem = DecimalProblem(message)
    _last.problem = problem
    return problem


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, bool) else ("true" if value else "false")
    return text if len(text) <= 40 else text[:37] + "..."


def to_decimal(value: Any, what: str = "dec()") -> Decimal:
    """The exact decimal a CEL value stands for (int, double via its shortest repr, numeric text)."""
    t = type(value)
    if t is str:
        text = value.strip()
        if len(text) > MAX_TEXT or NUMBER_RE.fullmatch(text) is None:
            raise _fail(f"{what}: {_show(value)} is not a number")
        return Decimal(text)
    if t is int:
        return Decimal(value)
    if t is float:
        if value != value or value in (float("inf"), float("-inf")):
            raise _fail(f"{what}: {_show(value)} is not a finite number")
        return Decimal(repr(value))
    if t is Decimal:
        return value  # type: ignore[no-any-return]
    if value is None:
        raise _fail(f"{what}: null is not a number")
    if t is bool:
        raise _fail(f"{what}: {_show(value)} is a boolean, not a number")
    raise _fail(f"{what}: expected a number, got {type(value).__name__}")


def to_text(number: Decimal) -> str:
    """The carrier text of a decimal inside CEL: plain notation, never ``-0``."""
    if not number and number.is_signed():
        number = number.copy_abs()
    if not -MAX_DIGITS <= number.adjusted() <= MAX_DIGITS:
        raise _fail(f"{number:.3e} has more than {MAX_DIGITS} digits")
    return format(number, "f")


def _exact(op: Callable[[Decimal, Decimal], Decimal], sign: str) -> Callable[[Any, Any], str]:
    def run(a: Any, b: Any) -> str:
        x, y = to_decimal(a, sign), to_decimal(b, sign)
        try:
            return to_text(op(x, y))
        except (Inexact, Overflow):
            raise _fail(f"{sign}: the exact result has more than {MAX_DIGITS} digits") from None
        except InvalidOperation:
            raise _fail(f"{sign}: cannot compute {x} {sign} {y}") from None

    return run


def _divide(a: Any, b: Any) -> str:
    x, y = to_decimal(a, "/"), to_decimal(b, "/")
    if not y:
        raise _fail(f"/: division of {x} by zero")
    try:
        return to_text(DIVISION_CONTEXT.divide(x, y))
    except (Overflow, InvalidOperation):
        raise _fail(f"/: {x} / {y} is out of range") from None


def _remainder(a: Any, b: Any) -> str:
    x, y = to_decimal(a, "%"), to_decimal(b, "%")
    if not y:
        raise _fail(f"%: {x} modulo zero")
    try:
        return to_text(EXACT_CONTEXT.remainder(x, y))
    except (Inexact, Overflow, InvalidOperation):
        raise _fail(f"%: {x} % {y} is out of range") from None


def _negate(a: Any) -> str:
    return to_text(-to_decimal(a, "-"))


def _compare(a: Any, b: Any) -> int:
    x, y = to_decimal(a, "comparison"), to_decimal(b, "comparison")
    return -1 if x < y else (1 if x > y else 0)


def _sum(items: Any) -> str:
    if not isinstance(items, list):
        raise _fail(f"sum(): expected a list, got {_show(items)}")
    total = Decimal(0)
    try:
        for i, item in enumerate(items):
            total = EXACT_CONTEXT.add(total, to_decimal(item, f"sum(): item {i}"))
    except (Inexact, Overflow):
        raise _fail(f"sum(): the exact result has more than {MAX_DIGITS} digits") from None
    return to_text(total)


def _round(a: Any, places: Any) -> str:
    if type(places) is not int or not -30 <= places <= 30:
        raise _fail(f"round(): places must be a whole number from -30 to 30, got {_show(places)}")
    x = to_decimal(a, "round()")
    try:
        return to_text(x.quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP, ROUNDING_CONTEXT))
    except (Inexact, InvalidOperation, Overflow):
        raise _fail(f"round(): {x} has too many digits") from None


def _dec(value: Any) -> str:
    return to_text(to_decimal(value))


def _int(a: Any) -> int:
    """int() of a decimal truncates toward zero, like CEL's int() of a double."""
    x = to_decimal(a, "int()")
    if x.adjusted() > 18:
        raise _fail(f"int(): {x} does not fit a CEL int")
    return int(x.to_integral_value(ROUND_DOWN))


# Names visible to CEL. ``dec`` is what people write; the others are what
# :mod:`.cel_types` writes for operators and are not part of the documented syntax.
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "dec": _dec,
    "_dec_add": _exact(EXACT_CONTEXT.add, "+"),
    "_dec_sub": _exact(EXACT_CONTEXT.subtract, "-"),
    "_dec_mul": _exact(EXACT_CONTEXT.multiply, "*"),
    "_dec_div": _divide,
    "_dec_mod": _remainder,
    "_dec_neg": _negate,
    "_dec_cmp": _compare,
    "_dec_sum": _sum,
    "_dec_round": _round,
    "_dec_int": _int,
}
