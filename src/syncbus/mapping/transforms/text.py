"""Text transforms: trim, upper, lower, str, zfill, replace, substr, normalize_company, mask, mask_phone.

They always return text. Numbers and booleans are first turned into their
canonical text (see ``str``); lists and objects are refused. ``None`` passes
through unchanged, so a chain never has to guard against missing values.

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
- ``normalize_company`` also removes zero-width characters and shortens the
  traditional form 有限責任公司 as well.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import Any

from .registry import Transform, TransformExample, register_transform
from .values import TransformSpecError, int_arg, str_arg, to_text

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
    n = int_arg("zfill", "width", width, 0, 1000)

    def zfill(value: Any) -> Any:
        if type(value) is str:
            return value.zfill(n)
        if value is None:
            return None
        return to_text(value, "zfill").zfill(n)

    return zfill


def _replace(old: int | str, new: int | str) -> Transform:
    """Replace every occurrence of the text `old` with `new`."""
    o = str_arg("replace", "old", old)
    w = str_arg("replace", "new", new)
    if not o:
        raise TransformSpecError("replace(): old must not be empty")
    return _text_transform("replace", lambda s: s.replace(o, w))


def _substr(start: int | str, end: int | str | None = None) -> Transform:
    """Characters from `start` up to (not including) `end`; 0-based, negative counts from the end."""
    a = int_arg("substr", "start", start, -1_000_000, 1_000_000)
    b = None if end is None else int_arg("substr", "end", end, -1_000_000, 1_000_000)
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
    ks = int_arg("mask", "keep_start", keep_start, 0, 10_000)
    ke = int_arg("mask", "keep_end", keep_end, 0, 10_000)
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


for _name, _factory, _example in (
    ("trim", _trim, TransformExample("trim", "  ACME Ltd ", "ACME Ltd")),
    ("upper", _upper, TransformExample("upper", "mat-001", "MAT-001")),
    ("lower", _lower, TransformExample("trim | lower", " Zhang.Wei@Example.COM ", "zhang.wei@example.com")),
    ("str", _str, TransformExample("str", 10086, "10086")),
    ("zfill", _zfill, TransformExample("zfill(10)", "C0001", "00000C0001")),
    ("replace", _replace, TransformExample("replace('-', '')", "138-1234-5678", "13812345678")),
    ("substr", _substr, TransformExample("substr(0, 4)", "2026-11-20", "2026")),
    ("normalize_company", _normalize_company,
     TransformExample("normalize_company", " 上海 星辰　贸易有限责任公司 ", "上海 星辰 贸易有限公司")),
    ("mask", _mask, TransformExample("mask(1, 1)", "张三丰", "张*丰")),
    ("mask_phone", _mask_phone, TransformExample("mask_phone", "13812345678", "138****5678")),
):
    register_transform(_name, _factory, example=_example)
del _name, _factory, _example
