"""The transform language of mapping files (DESIGN §4): ``"trim | upper"``, ``"decimal(2)"``.

A chain is parsed once, when a mapping is compiled, into one plain callable
``value -> value``. Nothing is parsed or looked up per record: a one-step chain
*is* the step's function, and every step function is a closure with its
arguments already validated and pre-computed. Mistakes in the chain text
(unknown names, wrong argument counts, bad formats) are therefore reported at
load time as :class:`TransformSpecError`, with the offset of the failing step
so the compiler can point at file:line:col.

At run time a step raises :class:`~syncbus.errors.TransformError` naming the
step and the value (``decimal(2): 'abc' is not a number``); the compiler adds
the target field. ``None`` passes through every built-in unchanged, so a chain
never has to guard against missing values.

Conventions shared by the built-ins (documented here once, tested in
tests/mapping/test_transforms.py):

- Text transforms (trim, upper, lower, zfill, mask, mask_phone, replace,
  substr, normalize_company) always return text. Numbers and booleans are first
  turned into their canonical text (see ``str``); lists and objects are refused.
- Numbers never pass through binary floats on their way to text: a float is
  read through its shortest repr (``1.005`` stays ``1.005``), so ``decimal(2)``
  rounds what the source system wrote, not its binary approximation.
- Numeric text is ASCII: optional sign, digits, optional fraction, optional
  exponent, surrounding spaces ignored. No thousands separators, no
  ``NaN``/``Infinity``, no underscores; booleans are not numbers.

Chain syntax: ``name`` or ``name(arg, ...)`` joined by ``|``; an argument is a
whole number (``-3``), text in single or double quotes (a backslash escapes a
quote or a backslash and is literal otherwise; ``|`` inside quotes is text) or a
bare name (``lookup(departments)`` = ``lookup('departments')``).

Decisions where DESIGN §4 is silent:

- ``zfill(n)`` behaves like Python's ``str.zfill``: zeros go after a leading
  sign (``-12 -> "-00012"``); longer values are unchanged.
- ``mask_phone`` counts and masks digits (any script, so full-width digits are
  masked too) and keeps separators: ``138-1234-5678 -> 138-****-5678``. A
  country code written apart (``+86 ``, ``+1-``) is kept and not counted. With
  fewer than 8 digits only the end stays visible: at most 4 digits and at most
  half (``1234567 -> ****567``).
- ``mask(s, e)`` works on characters; when the text is too short to keep both
  ends and hide something, at most half of it stays visible, the start first
  (``mask(1, 1)``: ``张三 -> 张*``).
- ``date``/``datetime`` read what ``datetime.fromisoformat`` reads (``Z``,
  offsets, ``20261120``, a space instead of ``T``), plus date/datetime objects
  and 8-digit numbers. The date and time are used as written, never converted
  between zones. ``date()`` ignores the time part (``%H`` gives ``00``).
- ``decimal(n)`` rounds half away from zero (ROUND_HALF_UP), never prints
  ``-0.00``, and refuses numbers with more than about 130 digits.
- ``normalize_company`` also removes zero-width characters and shortens the
  traditional form 有限責任公司 as well.

Plugins add transforms with :func:`register_transform`; ``TRANSFORMS`` is the
registry (name -> :class:`TransformDef`) the generated docs are built from.
"""

from __future__ import annotations

import difflib
import inspect
import math
import operator
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import MAX_EMAX, MIN_EMIN, ROUND_HALF_UP, Context, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from syncbus.errors import SyncbusError, TransformError

if TYPE_CHECKING:
    from syncbus.mapping.lookups import LookupTables

__all__ = [
    "TRANSFORMS",
    "LookupMiss",
    "Transform",
    "TransformDef",
    "TransformSpecError",
    "compile_chain",
    "register_transform",
    "to_text",
]

Transform = Callable[[Any], Any]


class TransformSpecError(SyncbusError):
    """A transform chain is invalid; found when the mapping is compiled, never per record.

    ``offset`` is the 0-based position in the chain text where the problem
    starts (when known), so the caller can turn it into a column.
    """

    def __init__(self, message: str, offset: int | None = None) -> None:
        self.message = message
        self.offset = offset
        super().__init__(message)


class LookupMiss(TransformError):
    """A value is not in its lookup table. Distinct so the compiler can apply the field's ``default``."""

    def __init__(self, table: str, key: str) -> None:
        self.table = table
        self.key = key
        super().__init__(f"lookup({table}): no entry for {_show(key)}")


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True, slots=True)
class TransformDef:
    """One registered transform: how to build it and how to describe it."""

    name: str
    factory: Callable[..., Transform]
    doc: str
    params: tuple[str, ...]
    required: int  # how many of ``params`` must be given
    variadic: bool
    wants_lookups: bool  # the factory takes ``lookups=`` (keyword-only)
    builtin: bool  # built-ins only raise TransformError; plugin steps are guarded

    @property
    def usage(self) -> str:
        """How to write it in a chain, e.g. ``decimal(places)``."""
        if not self.params and not self.variadic:
            return self.name
        names = [*self.params[: self.required], *(f"[{p}]" for p in self.params[self.required :])]
        if self.variadic:
            names.append("...")
        return f"{self.name}({', '.join(names)})"


TRANSFORMS: dict[str, TransformDef] = {}

_NAME_RE = re.compile(r"[^\W\d]\w*")


def register_transform(
    name: str, factory: Callable[..., Transform], *, doc: str | None = None, replace: bool = False
) -> TransformDef:
    """Add a transform usable in chains as ``name`` or ``name(args...)``.

    ``factory(*args)`` is called once per use in a mapping, at compile time, with
    the parsed arguments (``int`` or ``str``) and returns the per-value function.
    It should validate its arguments and raise TransformSpecError (ValueError and
    TypeError are converted). A factory that declares a keyword-only ``lookups``
    parameter receives the mapping's LookupTables. ``doc`` (default: the first
    line of the factory's docstring) is the one line shown in generated docs.
    """
    if not _NAME_RE.fullmatch(name):
        raise TransformSpecError(f"transform name {name!r} is not an identifier")
    if name in TRANSFORMS and not replace:
        raise TransformSpecError(f"transform {name!r} is already registered (pass replace=True)")
    line = (doc or inspect.getdoc(factory) or "").strip().splitlines()
    if not line or not line[0].strip():
        raise TransformSpecError(f"transform {name!r} needs a one-line doc string")
    params: list[str] = []
    required = 0
    variadic = wants_lookups = False
    for p in inspect.signature(factory).parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            params.append(p.name)
            if p.default is p.empty:
                required += 1
        elif p.kind is p.VAR_POSITIONAL:
            variadic = True
        elif p.kind is p.KEYWORD_ONLY and p.name == "lookups":
            wants_lookups = True
        elif p.kind is p.KEYWORD_ONLY and p.default is p.empty:
            raise TransformSpecError(f"transform {name!r}: keyword-only parameter {p.name!r} cannot be given")
    entry = TransformDef(
        name=name,
        factory=factory,
        doc=line[0].strip(),
        params=tuple(params),
        required=required,
        variadic=variadic,
        wants_lookups=wants_lookups,
        builtin=factory.__module__ == __name__,
    )
    TRANSFORMS[name] = entry
    return entry


# --------------------------------------------------------------------------- parsing

_TOKEN_RE = re.compile(
    r"""
      (?P<ws>\s+)
    | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    | (?P<int>[+-]?[0-9]{1,18}(?![\w.]))
    | (?P<name>[^\W\d]\w*(?:-\w+)*)
    | (?P<punct>[|(),])
    """,
    re.VERBOSE | re.DOTALL,
)
_BAD_NUMBER_RE = re.compile(r"[+-]?[\w.]+")
_UNESCAPE_RE = re.compile(r"\\(['\"\\])")


@dataclass(frozen=True, slots=True)
class _Step:
    name: str
    args: tuple[int | str, ...]
    start: int
    text: str  # the step as written, for messages


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    tokens: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            ch = text[pos]
            if ch in "'\"":
                raise TransformSpecError(f"unterminated string starting at position {pos} in {text!r}", pos)
            if ch in "+-0123456789":
                bad = _BAD_NUMBER_RE.match(text, pos)
                word = bad.group()[:30] if bad else ch
                raise TransformSpecError(
                    f"bad argument {word!r} at position {pos} in {text!r}: "
                    "arguments are whole numbers, 'quoted text' or names", pos
                )
            raise TransformSpecError(f"unexpected {ch!r} at position {pos} in {text!r}", pos)
        kind = m.lastgroup or ""
        if kind != "ws":
            tokens.append((kind, m.group(), pos))
        pos = m.end()
    return tokens


def _arg_value(kind: str, raw: str) -> int | str:
    if kind == "int":
        return int(raw)
    if kind == "str":
        return _UNESCAPE_RE.sub(r"\1", raw[1:-1])
    return raw  # a bare identifier, e.g. a lookup table name


def _parse(text: str) -> list[_Step]:
    tokens = _tokenize(text)
    if not tokens:
        raise TransformSpecError("empty transform chain", 0)
    steps: list[_Step] = []
    i = 0
    while True:
        if i >= len(tokens):
            raise TransformSpecError(f"expected a transform name after the last '|' in {text!r}", len(text))
        kind, raw, start = tokens[i]
        if kind != "name":
            raise TransformSpecError(f"expected a transform name at position {start}, found {raw!r}", start)
        name = raw
        i += 1
        args: list[int | str] = []
        end = start + len(raw)
        if i < len(tokens) and tokens[i][1] == "(":
            i += 1
            expect_arg = True
            while True:
                if i >= len(tokens):
                    raise TransformSpecError(f"missing ')' in {text[start:]!r}", start)
                kind, raw, pos = tokens[i]
                i += 1
                if raw == ")" and (not expect_arg or not args):
                    end = pos + 1
                    break
                if expect_arg and kind in ("int", "str", "name"):
                    args.append(_arg_value(kind, raw))
                    expect_arg = False
                elif not expect_arg and raw == ",":
                    expect_arg = True
                else:
                    raise TransformSpecError(
                        f"bad argument {raw!r} at position {pos} in {text[start:]!r}", pos
                    )
        steps.append(_Step(name, tuple(args), start, text[start:end]))
        if i >= len(tokens):
            return steps
        kind, raw, pos = tokens[i]
        if raw != "|":
            raise TransformSpecError(f"expected '|' or '(' at position {pos}, found {raw!r} in {text!r}", pos)
        i += 1


# --------------------------------------------------------------------------- compiling


def compile_chain(text: str, *, lookups: LookupTables | None = None) -> Transform:
    """Compile ``"step | step(args) | ..."`` into one function ``value -> value``.

    Raises TransformSpecError (LookupSpecError for lookup table problems) for
    anything wrong in the text; the returned function raises TransformError.
    """
    return _compose([_build(step, lookups) for step in _parse(text)])


def _build(step: _Step, lookups: LookupTables | None) -> Transform:
    entry = TRANSFORMS.get(step.name)
    if entry is None:
        close = difflib.get_close_matches(step.name, TRANSFORMS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        known = ", ".join(sorted(TRANSFORMS))
        raise TransformSpecError(f"unknown transform {step.name!r}{hint} (known: {known})", step.start)
    got = len(step.args)
    if got < entry.required or (got > len(entry.params) and not entry.variadic):
        raise TransformSpecError(f"{step.name}() {_arity(entry)}, got {got}", step.start)
    kwargs: dict[str, Any] = {"lookups": lookups} if entry.wants_lookups else {}
    try:
        fn = entry.factory(*step.args, **kwargs)
    except TransformSpecError as exc:
        if exc.offset is None:
            exc.offset = step.start
        raise
    except (TypeError, ValueError) as exc:
        raise TransformSpecError(f"{step.text}: {exc}", step.start) from None
    if not callable(fn):
        raise TransformSpecError(f"{step.text}: the factory did not return a function", step.start)
    return fn if entry.builtin else _guarded(fn, step.text)


def _arity(entry: TransformDef) -> str:
    n, m = entry.required, len(entry.params)
    names = f" ({', '.join(entry.params)})" if entry.params else ""
    if entry.variadic:
        return f"takes at least {n} argument{'s' * (n != 1)}{names}"
    if m == 0:
        return "takes no arguments"
    if n == m:
        return f"takes {n} argument{'s' * (n != 1)}{names}"
    return f"takes {n} to {m} arguments{names}"


def _compose(fns: list[Transform]) -> Transform:
    # Specialised so that short chains cost one or two extra calls, not a loop.
    if len(fns) == 1:
        return fns[0]
    if len(fns) == 2:
        f, g = fns

        def chain2(value: Any) -> Any:
            return g(f(value))

        return chain2
    if len(fns) == 3:
        f, g, h = fns

        def chain3(value: Any) -> Any:
            return h(g(f(value)))

        return chain3
    steps = tuple(fns)

    def chain(value: Any) -> Any:
        for fn in steps:
            value = fn(value)
        return value

    return chain


def _guarded(fn: Transform, label: str) -> Transform:
    """Plugin steps may raise anything; the route must only ever see TransformError."""

    def guarded(value: Any) -> Any:
        try:
            return fn(value)
        except TransformError:
            raise
        except Exception as exc:
            raise TransformError(f"{label}: {_show(value)}: {exc}") from exc

    return guarded


# --------------------------------------------------------------------------- value helpers


def _show(value: Any) -> str:
    """The value as it appears in an error message: repr, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def _float_text(value: float) -> str:
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
        if -_INT_FAST < value < _INT_FAST:
            return str(value)
    elif t is bool:
        return "true" if value else "false"
    elif t is float:
        return _float_text(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return str(int(value))
        except ValueError:  # more digits than Python converts to text
            raise TransformError(f"{label}: the integer is too large to convert to text") from None
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    raise TransformError(f"{label}: expected text or a number, got {_kind(value)}")


# "-12.5", "0.75", "3": no exponent, no sign but "-", no leading zeros (those go the slow way)
_FAST_DECIMAL = re.compile(r"(-?)(0|[1-9][0-9]{0,17})(?:\.([0-9]*))?").fullmatch
_NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _to_decimal(value: Any, label: str) -> Decimal:
    """The exact decimal a source value stands for; TransformError if it is not a finite number."""
    t = type(value)
    if t is str or isinstance(value, str):
        text = value.strip()
        if _NUMBER_RE.fullmatch(text) is None:
            raise TransformError(f"{label}: {_show(value)} is not a number")
        return Decimal(text)
    if t is int:
        return Decimal(value)
    if t is float:
        if not math.isfinite(value):
            raise TransformError(f"{label}: {_show(value)} is not a finite number")
        return Decimal(repr(value))
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise TransformError(f"{label}: {_show(value)} is not a finite number")
        return value
    if isinstance(value, bool):
        raise TransformError(f"{label}: {_show(value)} is a boolean, not a number")
    if isinstance(value, int):
        return Decimal(int(value))
    if isinstance(value, float):
        return _to_decimal(float(value), label)
    raise TransformError(f"{label}: expected a number, got {_kind(value)}")


def _int_arg(step: str, param: str, value: int | str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TransformSpecError(f"{step}(): {param} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise TransformSpecError(f"{step}(): {param} must be between {low} and {high}, got {value}")
    return value


def _str_arg(step: str, param: str, value: int | str) -> str:
    if not isinstance(value, str):
        raise TransformSpecError(f"{step}(): {param} must be text in quotes, got {value!r}")
    return value


# --------------------------------------------------------------------------- text


def _text_transform(name: str, op: Callable[[str], str]) -> Transform:
    def text_step(value: Any) -> Any:
        if type(value) is str:
            return op(value)
        if value is None:
            return None
        return op(to_text(value, name))

    text_step.__name__ = name
    return text_step


_TRIM = _text_transform("trim", str.strip)
_UPPER = _text_transform("upper", str.upper)
_LOWER = _text_transform("lower", str.lower)


def _trim() -> Transform:
    """Remove leading and trailing whitespace."""
    return _TRIM


def _upper() -> Transform:
    """Upper-case text."""
    return _UPPER


def _lower() -> Transform:
    """Lower-case text."""
    return _LOWER


def _str_step(value: Any) -> Any:
    if type(value) is str or value is None:
        return value
    return to_text(value, "str")


def _str() -> Transform:
    """Canonical text of a value: 10 -> "10", 1.5 -> "1.5", true -> "true", decimals exact."""
    return _str_step


def _zfill(width: int | str) -> Transform:
    """Left-pad with zeros to `width` characters, after a leading sign (Python's str.zfill)."""
    n = _int_arg("zfill", "width", width, 0, 1000)

    def zfill(value: Any) -> Any:
        if type(value) is str:
            return value.zfill(n)
        if value is None:
            return None
        return to_text(value, "zfill").zfill(n)

    return zfill


def _replace(old: int | str, new: int | str) -> Transform:
    """Replace every occurrence of the text `old` with `new`."""
    o = _str_arg("replace", "old", old)
    w = _str_arg("replace", "new", new)
    if not o:
        raise TransformSpecError("replace(): old must not be empty")
    return _text_transform("replace", lambda s: s.replace(o, w))


def _substr(start: int | str, end: int | str | None = None) -> Transform:
    """Characters from `start` up to (not including) `end`; 0-based, negative counts from the end."""
    a = _int_arg("substr", "start", start, -1_000_000, 1_000_000)
    b = None if end is None else _int_arg("substr", "end", end, -1_000_000, 1_000_000)
    return _text_transform("substr", lambda s: s[a:b])


_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))
_COMPANY_FORMS = (("有限责任公司", "有限公司"), ("有限責任公司", "有限公司"))


def _normalize_company_text(text: str) -> str:
    text = " ".join(unicodedata.normalize("NFKC", text).translate(_INVISIBLE).split())
    for long, short in _COMPANY_FORMS:
        if long in text:
            text = text.replace(long, short)
    return text


_NORMALIZE_COMPANY = _text_transform("normalize_company", _normalize_company_text)


def _normalize_company() -> Transform:
    """Company name for matching: NFKC, trimmed, inner whitespace collapsed, 有限责任公司 -> 有限公司."""
    return _NORMALIZE_COMPANY


# --------------------------------------------------------------------------- masking


def _mask_chars(text: str, keep_start: int, keep_end: int) -> str:
    n = len(text)
    if keep_start + keep_end >= n:
        # Too short to keep both ends and still hide something: show at most half, the start first.
        keep_start = min(keep_start, n // 2)
        keep_end = min(keep_end, n // 2 - keep_start)
    return text[:keep_start] + "*" * (n - keep_start - keep_end) + text[n - keep_end :]


def _mask(keep_start: int | str, keep_end: int | str) -> Transform:
    """Keep the first `keep_start` and last `keep_end` characters, `*` for the rest (at most half shown)."""
    ks = _int_arg("mask", "keep_start", keep_start, 0, 10_000)
    ke = _int_arg("mask", "keep_end", keep_end, 0, 10_000)
    return _text_transform("mask", lambda s: _mask_chars(s, ks, ke))


# "+86 138..." / "+1-555...": a country code written apart is kept and not counted.
_COUNTRY_CODE_RE = re.compile(r"\+[0-9]{1,3}[ .-]")


def _mask_phone_text(text: str) -> str:
    # Digits (any script, e.g. full-width) are counted and masked wherever they are;
    # separators stay. Fewer than 8 digits: only the last digits stay, at most 4 and at most half.
    if text.isdecimal():
        n = len(text)
        if n >= 8:
            return text[:3] + "*" * (n - 7) + text[-4:]
        return _mask_chars(text, 0, min(4, n // 2))
    m = _COUNTRY_CODE_RE.match(text)
    skip = m.end() if m else 0
    digits = [i for i, ch in enumerate(text) if ch.isdecimal()]
    if skip and digits[-1:] and digits[-1] >= skip:
        digits = [i for i in digits if i >= skip]
    n = len(digits)
    if n == 0:
        return text
    keep_start, keep_end = (3, 4) if n >= 8 else (0, min(4, n // 2))
    chars = list(text)
    for i in digits[keep_start : n - keep_end]:
        chars[i] = "*"
    return "".join(chars)


_MASK_PHONE = _text_transform("mask_phone", _mask_phone_text)


def _mask_phone() -> Transform:
    """Keep the first 3 and last 4 digits, `*` for the other digits (13812345678 -> 138****5678)."""
    return _MASK_PHONE


# --------------------------------------------------------------------------- numbers


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
            raise TransformError(f"int: {_show(value)} is not a finite number")
        if not value.is_integer():
            raise TransformError(f"int: {_show(value)} is not a whole number")
        return int(value)
    number = _to_decimal(value, "int")
    if number.adjusted() >= _MAX_INT_DIGITS:
        raise TransformError(f"int: {_show(value)} is too large")
    if number != number.to_integral_value():
        raise TransformError(f"int: {_show(value)} is not a whole number")
    return int(number)


def _int() -> Transform:
    """Whole number from a number or numeric text ("0012" -> 12, "12.0" -> 12; "1.5" is an error)."""
    return _int_step


def _float_step(value: Any) -> Any:
    t = type(value)
    if t is float:
        if not math.isfinite(value):
            raise TransformError(f"float: {_show(value)} is not a finite number")
        return value
    if value is None:
        return None
    result = float(_to_decimal(value, "float"))
    if not math.isfinite(result):
        raise TransformError(f"float: {_show(value)} is out of range")
    return result


def _float() -> Transform:
    """Floating-point number from a number or numeric text."""
    return _float_step


# Enough digits for any amount a business system holds; a coefficient longer than this
# makes quantize() raise instead of building a huge number (e.g. from "1e999999999").
_DECIMAL_CONTEXT = Context(prec=160, rounding=ROUND_HALF_UP, Emax=MAX_EMAX, Emin=MIN_EMIN,
                           traps=[InvalidOperation])
_INT_FAST = 10**18


def _decimal(places: int | str) -> Transform:
    """Number as text with exactly `places` decimals, rounded half-up (away from zero); exact, no floats."""
    n = _int_arg("decimal", "places", places, 0, 30)
    label = f"decimal({n})"
    quantum = Decimal(1).scaleb(-n)
    zeros = "." + "0" * n if n else ""
    ctx = _DECIMAL_CONTEXT

    def decimal_(value: Any) -> Any:
        t = type(value)
        if t is int and -_INT_FAST < value < _INT_FAST:
            return f"{value}{zeros}"
        if t is float or t is str:
            # Fast path: a plain number with no more than n places needs no rounding,
            # only zero padding (most prices and quantities). Everything else: Decimal.
            m = _FAST_DECIMAL(repr(value) if t is float else value)
            if m is not None:
                sign, whole, frac = m.groups()
                frac = frac or ""
                if len(frac) <= n:
                    text = f"{whole}.{frac}{'0' * (n - len(frac))}" if n else whole
                    if sign and (whole != "0" or frac.strip("0")):
                        return "-" + text
                    return text
        if value is None:
            return None
        number = _to_decimal(value, label)
        try:
            rounded = number.quantize(quantum, ROUND_HALF_UP, ctx)
        except InvalidOperation:
            raise TransformError(f"{label}: {_show(value)} has too many digits") from None
        if not rounded and rounded.is_signed():
            rounded = rounded.copy_abs()  # -0.001 -> "0.00", never "-0.00"
        text = str(rounded)  # faster than format(); exponent form only for tiny values
        return format(rounded, "f") if "E" in text else text

    return decimal_


# --------------------------------------------------------------------------- dates

_SAMPLE_DATETIME = datetime(2026, 11, 20, 10, 15, 30)
_fromisoformat = datetime.fromisoformat


def _format_arg(step: str, fmt: int | str) -> str:
    text = _str_arg(step, "format", fmt)
    if "%" not in text:
        raise TransformSpecError(
            f"{step}(): the format {text!r} has no % directives (did you mean '%Y%m%d'?)"
        )
    try:
        _SAMPLE_DATETIME.strftime(text)
    except ValueError as exc:
        raise TransformSpecError(f"{step}(): invalid format {text!r}: {exc}") from None
    return text


def _parse_iso(value: Any, label: str) -> date:
    """A datetime or date as written in the source: no time zone conversion."""
    if type(value) is str:
        try:
            return _fromisoformat(value.strip())
        except ValueError:
            raise TransformError(f"{label}: {_show(value)} is not an ISO 8601 date or date-time") from None
    if isinstance(value, date):  # datetime is a date too
        return value
    if isinstance(value, str):
        text = value.strip()
    elif isinstance(value, int) and not isinstance(value, bool):
        text = str(value)  # 20261120 from a system that sends dates as numbers
    else:
        raise TransformError(f"{label}: expected an ISO 8601 date, got {_kind(value)}")
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise TransformError(f"{label}: {_show(value)} is not an ISO 8601 date or date-time") from None


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


def _date(fmt: int | str) -> Transform:
    """ISO 8601 date or date-time in, the date formatted with strftime `fmt` out (no zone conversion)."""
    pattern = _format_arg("date", fmt)
    label = f"date({pattern!r})"
    render = _formatter(pattern, date_only=True)

    def date_(value: Any) -> Any:
        if value is None:
            return None
        return render(_parse_iso(value, label))

    return date_


def _datetime(fmt: int | str) -> Transform:
    """ISO 8601 date-time (or date, at 00:00:00) in, strftime `fmt` out (no zone conversion)."""
    pattern = _format_arg("datetime", fmt)
    label = f"datetime({pattern!r})"
    render = _formatter(pattern, date_only=False)

    def datetime_(value: Any) -> Any:
        if value is None:
            return None
        parsed = _parse_iso(value, label)
        if not isinstance(parsed, datetime):
            parsed = datetime(parsed.year, parsed.month, parsed.day)
        return render(parsed)

    return datetime_


# --------------------------------------------------------------------------- lookups


def _lookup(table: int | str, *, lookups: LookupTables | None = None) -> Transform:
    """Value from the lookup table mappings/lookups/<table>.yaml|csv; a miss is an error (LookupMiss)."""
    name = str(table)
    if lookups is None:
        raise TransformSpecError(f"lookup({name}): no lookup table directory is configured")
    entries = lookups.get(name)
    get = entries.get
    label = f"lookup({name})"

    def lookup(value: Any) -> Any:
        key = value if type(value) is str else (None if value is None else to_text(value, label))
        if key is None:
            return None
        found = get(key)
        if found is None:
            raise LookupMiss(name, key)
        return found

    return lookup


for _name, _factory in (
    ("trim", _trim),
    ("upper", _upper),
    ("lower", _lower),
    ("str", _str),
    ("int", _int),
    ("float", _float),
    ("date", _date),
    ("datetime", _datetime),
    ("decimal", _decimal),
    ("zfill", _zfill),
    ("mask_phone", _mask_phone),
    ("mask", _mask),
    ("normalize_company", _normalize_company),
    ("replace", _replace),
    ("substr", _substr),
    ("lookup", _lookup),
):
    register_transform(_name, _factory)
del _name, _factory
