"""Faster equivalents of built-in transform steps, for the generated XML writers (issue 11).

In the reference mapping the transforms are most of a record's mapping
cost, and ``decimal(n)`` alone is more than half of that: every value with
more fraction digits than ``n`` (a quantity ``90.4538`` to ``decimal(3)``)
went through ``Decimal`` and ``quantize``. Rounding half-up to ``n`` places
only needs the digit after the last kept one, so it is done here on the
digits themselves, which is exact: a float's digits are its shortest
``repr``, exactly what ``to_decimal`` reads. Any value off that common path
(exponents, signs other than ``-``, surrounding spaces, huge fractions,
other types) is handed to the real step, so results are equal by
construction (tests/mapping/test_xmlgen.py checks it on generated values).

``fast_chain(text, chain)`` returns the chain to use in a writer: ``chain``
itself unless every step of ``text`` has a faster equivalent here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .transforms.registry import TRANSFORMS, _parse
from .transforms.values import FAST_DECIMAL, INT_FAST

Step = Callable[[Any], Any]
_MAX_FRACTION = 60  # longer fractions: the real step (which also guards the Decimal context)


def fast_decimal(places: int, real: Step) -> Step:
    """``decimal(places)``: half-up (away from zero) rounding on the digits; never ``-0.00``."""
    zeros = "." + "0" * places if places else ""
    match = FAST_DECIMAL

    def decimal_fast(value: Any) -> Any:
        t = type(value)
        if t is int and -INT_FAST < value < INT_FAST:
            return f"{value}{zeros}"
        if t is float or t is str:
            m = match(repr(value) if t is float else value)
            if m is not None:
                sign, whole, frac = m.groups()
                frac = frac or ""
                k = len(frac)
                if k <= places:
                    text = f"{whole}.{frac}{'0' * (places - k)}" if places else whole
                    if sign and (whole != "0" or frac.strip("0")):
                        return "-" + text
                    return text
                if k <= _MAX_FRACTION:
                    scaled = int(whole + frac[:places])
                    if frac[places] >= "5":
                        scaled += 1
                    if places:
                        digits = str(scaled).rjust(places + 1, "0")
                        text = f"{digits[:-places]}.{digits[-places:]}"
                    else:
                        text = str(scaled)
                    return "-" + text if sign and scaled else text
        return real(value)

    return decimal_fast


def fast_chain(text: str | None, chain: Step | None) -> Step | None:
    """A faster equal of ``chain`` (compiled from ``text``), or ``chain`` itself."""
    if text is None or chain is None:
        return chain
    try:
        steps = _parse(text)
    except Exception:
        return chain
    if len(steps) != 1:
        return chain
    step = steps[0]
    if (step.name == "decimal" and len(step.args) == 1 and type(step.args[0]) is int and 0 <= step.args[0] <= 30
            and _builtin("decimal", chain)):
        return fast_decimal(step.args[0], chain)
    return chain


def _builtin(name: str, chain: Step) -> bool:
    """The step is still the built-in one (a plugin may have replaced it: then its own code runs)."""
    entry = TRANSFORMS.get(name)
    return (entry is not None and entry.builtin and entry.factory.__module__ == _BUILTIN_MODULES[name]
            and getattr(chain, "__module__", None) == _BUILTIN_MODULES[name])


_BUILTIN_MODULES = {"decimal": "syncbus.mapping.transforms.numbers"}
