"""The transform chain language and every built-in transform (DESIGN §4)."""

from __future__ import annotations

import decimal
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncbus.errors import SyncbusError, TransformError
from syncbus.mapping.lookups import LookupTables
from syncbus.mapping.transforms import (
    TRANSFORMS,
    LookupMiss,
    TransformSpecError,
    compile_chain,
    register_transform,
    to_text,
)


def run(chain: str, value: Any) -> Any:
    return compile_chain(chain)(value)


def spec_error(chain: str, **kwargs: Any) -> TransformSpecError:
    with pytest.raises(TransformSpecError) as info:
        compile_chain(chain, **kwargs)
    return info.value


def run_error(chain: str, value: Any) -> TransformError:
    fn = compile_chain(chain)
    with pytest.raises(TransformError) as info:
        fn(value)
    return info.value


# --------------------------------------------------------------------------- chain parsing


@pytest.mark.parametrize(
    ("chain", "value", "expected"),
    [
        ("trim | upper", "  ab c ", "AB C"),
        ("trim|upper", " x ", "X"),
        ("  trim  |  lower  ", " AbC ", "abc"),
        ("\ttrim\n|\nupper", " a ", "A"),
        ("decimal( 2 )", "1.005", "1.01"),
        ("date('%Y%m%d')", "2026-11-20", "20261120"),
        ('date("%Y%m%d")', "2026-11-20", "20261120"),
        ("mask(3, 4)", "abcdefghij", "abc***ghij"),
        ("mask(3,4)", "abcdefghij", "abc***ghij"),
        ("replace('|', '/')", "a|b", "a/b"),  # a pipe inside quotes does not split the chain
        ("replace(',', ';')", "a,b", "a;b"),
        ("replace(')', ']')", "f(x)", "f(x]"),
        (r"replace('\'', '\"')", "it's", 'it"s'),
        (r"replace('\\', '/')", "a\\b", "a/b"),
        (r"replace('\d', 'D')", "x\\dy", "xDy"),  # unknown escapes keep the backslash
        ("trim | str | zfill(6) | substr(-3)", " 12 ", "012"),
        ("trim | upper | replace('A', 'B') | lower | zfill(5)", " a ", "0000b"),
        ("trim()", " a ", "a"),
        ("substr(+1)", "abc", "bc"),
    ],
)
def test_chains(chain: str, value: Any, expected: Any) -> None:
    assert run(chain, value) == expected


def test_one_step_chain_is_the_transform_itself() -> None:
    assert compile_chain("trim") is TRANSFORMS["trim"].factory()
    assert compile_chain("  upper ") is TRANSFORMS["upper"].factory()
    assert compile_chain("decimal(2)").__name__ == "decimal_"


@pytest.mark.parametrize(
    ("chain", "message", "offset"),
    [
        ("", "empty transform chain", 0),
        ("   ", "empty transform chain", 0),
        ("trim |", "expected a transform name after the last '|'", 6),
        ("| trim", "expected a transform name at position 0, found '|'", 0),
        ("trim | | upper", "expected a transform name at position 7, found '|'", 7),
        ("trim upper", "expected '|' or '(' at position 5, found 'upper'", 5),
        ("decimal(2", "missing ')' in 'decimal(2'", 0),
        ("trim | date('%Y%m%d'", "missing ')' in \"date('%Y%m%d'\"", 7),
        ("date('%Y%m%d", "unterminated string starting at position 5", 5),
        ('date("%Y', "unterminated string starting at position 5", 5),
        ("mask(1,)", "bad argument ')' at position 7", 7),
        ("mask(,1)", "bad argument ','", 5),
        ("mask(1 2)", "bad argument '2'", 7),
        ("decimal(2.5)", "bad argument '2.5' at position 8 in 'decimal(2.5)': arguments are whole", 8),
        ("decimal(12ab)", "bad argument '12ab' at position 8", 8),
        ("zfill(-)", "bad argument '-' at position 6", 6),
        ("zfill(" + "9" * 5000 + ")", "bad argument '" + "9" * 30 + "' at position 6", 6),
        ("trim; upper", "unexpected ';' at position 4", 4),
        ("trim ) ", "expected '|' or '(' at position 5, found ')'", 5),
        ("3trim", "bad argument '3trim' at position 0", 0),
        ("trim | upper!", "unexpected '!' at position 12", 12),
    ],
)
def test_syntax_errors(chain: str, message: str, offset: int) -> None:
    err = spec_error(chain)
    assert message in str(err)
    assert err.offset == offset
    assert isinstance(err, SyncbusError)


def test_unknown_transform_names_the_known_ones_and_suggests() -> None:
    err = spec_error("trim | uper")
    assert str(err).startswith("unknown transform 'uper'; did you mean 'upper'? (known: date, datetime,")
    assert err.offset == 7
    assert "mask_phone" in str(err) and "zfill" in str(err)
    assert "did you mean" not in str(spec_error("frobnicate"))


@pytest.mark.parametrize(
    ("chain", "message"),
    [
        ("decimal", "decimal() takes 1 argument (places), got 0"),
        ("decimal()", "decimal() takes 1 argument (places), got 0"),
        ("decimal(1, 2)", "decimal() takes 1 argument (places), got 2"),
        ("mask(3)", "mask() takes 2 arguments (keep_start, keep_end), got 1"),
        ("trim(1)", "trim() takes no arguments, got 1"),
        ("substr", "substr() takes 1 to 2 arguments (start, end), got 0"),
        ("substr(1, 2, 3)", "substr() takes 1 to 2 arguments (start, end), got 3"),
        ("date", "date() takes 1 to 3 arguments (out, in, tz), got 0"),
    ],
)
def test_wrong_argument_counts(chain: str, message: str) -> None:
    assert str(spec_error(chain)) == message


@pytest.mark.parametrize(
    ("chain", "message"),
    [
        ("decimal('2')", "decimal(): places must be a whole number, got '2'"),
        ("decimal(two)", "decimal(): places must be a whole number, got 'two'"),
        ("decimal(-1)", "decimal(): places must be between 0 and 30, got -1"),
        ("decimal(31)", "decimal(): places must be between 0 and 30, got 31"),
        ("zfill(-1)", "zfill(): width must be between 0 and 1000"),
        ("mask(-1, 2)", "mask(): keep_start must be between 0 and 10000"),
        ("date(8)", "date(): format must be text in quotes, got 8"),
        ("date(YYYYMMDD)", "date(): the format 'YYYYMMDD' has no % directives"),
        ("datetime('yyyy-MM-dd')", "datetime(): the format 'yyyy-MM-dd' has no % directives"),
        ("replace('', 'x')", "replace(): old must not be empty"),
        ("replace(1, 'x')", "replace(): old must be text in quotes, got 1"),
        ("substr('a')", "substr(): start must be a whole number"),
    ],
)
def test_bad_argument_values(chain: str, message: str) -> None:
    err = spec_error("trim | " + chain)
    assert str(err).startswith(message)
    assert err.offset == 7  # points at the failing step


# --------------------------------------------------------------------------- None and text


NONE_CHAINS = [
    "trim", "upper", "lower", "str", "int", "float", "date('%Y')", "datetime('%H')", "decimal(2)",
    "zfill(3)", "mask_phone", "mask(1, 1)", "normalize_company", "replace('a', 'b')", "substr(1)",
    "trim | upper | zfill(4)",
]


@pytest.mark.parametrize("chain", NONE_CHAINS)
def test_none_passes_through(chain: str) -> None:
    assert run(chain, None) is None


def test_none_passes_through_lookup(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text("a: b\n")
    assert compile_chain("lookup(t)", lookups=LookupTables(tmp_path))(None) is None


def test_every_builtin_is_covered_by_the_none_test() -> None:
    covered = {c.split("(")[0].split("|")[0].strip() for c in NONE_CHAINS} | {"lookup"}
    assert covered == set(TRANSFORMS)


@pytest.mark.parametrize(
    ("chain", "value", "expected"),
    [
        ("trim", "  a b  ", "a b"),
        ("trim", "\u3000a\u3000", "a"),  # ideographic space is whitespace
        ("trim", "", ""),
        ("trim", 10, "10"),  # text transforms return text
        ("upper", "straße", "STRASSE"),
        ("upper", True, "TRUE"),
        ("lower", "ÄBC", "äbc"),
        ("lower", Decimal("1E+3"), "1000"),
    ],
)
def test_text_transforms(chain: str, value: Any, expected: str) -> None:
    assert run(chain, value) == expected


@pytest.mark.parametrize("chain", ["trim", "upper", "lower", "str", "zfill(3)", "mask_phone", "mask(1, 1)",
                                   "normalize_company", "replace('a', 'b')", "substr(1)"])
@pytest.mark.parametrize(("value", "kind"), [([1], "a list"), ({"a": 1}, "an object"), (b"x", "a bytes")])
def test_text_transforms_refuse_lists_and_objects(chain: str, value: Any, kind: str) -> None:
    err = run_error(chain, value)
    assert str(err) == f"{chain.split('(')[0]}: expected text or a number, got {kind}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("x", "x"),
        (10, "10"),
        (-7, "-7"),
        (1.5, "1.5"),
        (10.0, "10.0"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1e20, "100000000000000000000"),
        (1e-7, "0.0000001"),
        (Decimal("1.50"), "1.50"),
        (Decimal("1E+3"), "1000"),
        (Decimal("-0.000"), "-0.000"),
        (True, "true"),
        (False, "false"),
        (date(2026, 11, 20), "2026-11-20"),
        (datetime(2026, 11, 20, 10, 15), "2026-11-20T10:15:00"),
        (time(8, 30), "08:30:00"),
    ],
)
def test_str(value: Any, expected: str) -> None:
    assert run("str", value) == expected
    assert to_text(value) == expected


def test_str_of_an_integer_too_long_for_text() -> None:
    assert str(run_error("str", 10**5000)) == "str: the integer is too large to convert to text"


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (12, 12),
        (-3, -3),
        ("0012", 12),
        ("12.0", 12),
        (" 42 ", 42),
        ("+5", 5),
        ("-0", 0),
        ("1e3", 1000),
        ("1.5e1", 15),
        (12.0, 12),
        (-0.0, 0),
        (Decimal("7.000"), 7),
        ("123456789012345678901234567890", 123456789012345678901234567890),
    ],
)
def test_int(value: Any, expected: int) -> None:
    result = run("int", value)
    assert result == expected and type(result) is int


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1.5", "int: '1.5' is not a whole number"),
        (1.5, "int: 1.5 is not a whole number"),
        ("abc", "int: 'abc' is not a number"),
        ("", "int: '' is not a number"),
        ("1,000", "int: '1,000' is not a number"),
        ("1_000", "int: '1_000' is not a number"),
        ("NaN", "int: 'NaN' is not a number"),
        ("１２", "int: '１２' is not a number"),  # full-width digits are not numeric text
        (float("inf"), "int: inf is not a finite number"),
        (float("nan"), "int: nan is not a finite number"),
        (True, "int: True is a boolean, not a number"),
        ([1], "int: expected a number, got a list"),
        ("1e999999999", "int: '1e999999999' is too large"),
        ("1e-999999999", "int: '1e-999999999' is not a whole number"),
    ],
)
def test_int_errors(value: Any, message: str) -> None:
    assert str(run_error("int", value)) == message


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1.5, 1.5), (2, 2.0), ("1.25", 1.25), (" -3 ", -3.0), (Decimal("0.1"), 0.1), ("1e3", 1000.0)],
)
def test_float(value: Any, expected: float) -> None:
    result = run("float", value)
    assert result == expected and type(result) is float


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("x", "float: 'x' is not a number"),
        ("1e999", "float: '1e999' is out of range"),
        (float("nan"), "float: nan is not a finite number"),
        (False, "float: False is a boolean, not a number"),
        (Decimal("Infinity"), "float: Decimal('Infinity') is not a finite number"),
    ],
)
def test_float_errors(value: Any, message: str) -> None:
    assert str(run_error("float", value)) == message


@pytest.mark.parametrize(
    ("places", "value", "expected"),
    [
        (3, 2.5, "2.500"),
        (2, "1.005", "1.01"),
        (2, 1.005, "1.01"),  # the float as written, not its binary value 1.00499999...
        (2, 2.675, "2.68"),
        (2, -1.005, "-1.01"),  # half-up = away from zero
        (2, "-2.675", "-2.68"),
        (2, 0, "0.00"),
        (2, -0.0, "0.00"),
        (2, "-0.001", "0.00"),  # never "-0.00"
        (2, "1e3", "1000.00"),
        (2, "1E-2", "0.01"),
        (0, 3, "3"),
        (0, "2.5", "3"),
        (0, "-2.5", "-3"),
        (0, 2.4999, "2"),
        (2, 12, "12.00"),
        (2, -12, "-12.00"),
        (2, " 7.1 ", "7.10"),
        (2, "+.5", "0.50"),
        (2, "5.", "5.00"),
        (2, Decimal("1.2345"), "1.23"),
        (2, Decimal("-0"), "0.00"),
        (4, 0.1 + 0.2, "0.3000"),
        (2, 10**30, "1000000000000000000000000000000.00"),  # beyond the int fast path
        (2, 1e16, "10000000000000000.00"),
        (30, "1", "1." + "0" * 30),
        (2, "1e-999999999", "0.00"),
        (8, "0.00000001", "0.00000001"),  # str() of this Decimal would be 1E-8
        (10, 1e-9, "0.0000000010"),
    ],
)
def test_decimal(places: int, value: Any, expected: str) -> None:
    assert run(f"decimal({places})", value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "decimal(2): 'abc' is not a number"),
        ("", "decimal(2): '' is not a number"),
        ("1.2.3", "decimal(2): '1.2.3' is not a number"),
        ("12 345", "decimal(2): '12 345' is not a number"),
        ("NaN", "decimal(2): 'NaN' is not a number"),
        ("Infinity", "decimal(2): 'Infinity' is not a number"),
        (float("nan"), "decimal(2): nan is not a finite number"),
        (float("-inf"), "decimal(2): -inf is not a finite number"),
        (Decimal("NaN"), "decimal(2): Decimal('NaN') is not a finite number"),
        (True, "decimal(2): True is a boolean, not a number"),
        ({"v": 1}, "decimal(2): expected a number, got an object"),
        ("1e999999999", "decimal(2): '1e999999999' has too many digits"),
        (10**200, f"decimal(2): {str(10**200)[:57]}... has too many digits"),
    ],
)
def test_decimal_errors(value: Any, message: str) -> None:
    assert str(run_error("decimal(2)", value)) == message


def _reference(text: str, places: int) -> str:
    ctx = decimal.Context(prec=200)
    rounded = Decimal(text).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP, context=ctx)
    if not rounded:
        rounded = abs(rounded)
    return format(rounded, "f")


PLACES = st.integers(min_value=0, max_value=8)


@given(st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**15), max_value=10**15), PLACES)
def test_decimal_matches_half_up_quantize_for_decimals(value: Decimal, places: int) -> None:
    expected = _reference(str(value), places)
    assert compile_chain(f"decimal({places})")(value) == expected
    assert compile_chain(f"decimal({places})")(str(value)) == expected


@given(st.integers(min_value=-(10**40), max_value=10**40), PLACES)
def test_decimal_matches_half_up_quantize_for_ints(value: int, places: int) -> None:
    assert compile_chain(f"decimal({places})")(value) == _reference(str(value), places)


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15), PLACES)
def test_decimal_of_floats_rounds_the_written_value(value: float, places: int) -> None:
    assert compile_chain(f"decimal({places})")(value) == _reference(repr(value), places)


@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=999), PLACES)
def test_decimal_of_exact_halves_rounds_away_from_zero(whole: int, frac: int, places: int) -> None:
    # x.<frac>5 at one place beyond `places` always rounds up in magnitude.
    digits = f"{frac:0{places}d}"[-places:] if places else ""
    text = f"{whole}.{digits}5" if places else f"{whole}.5"
    up = Decimal(f"{whole}.{digits}" if places else str(whole)) + Decimal(1).scaleb(-places)
    assert compile_chain(f"decimal({places})")(text) == format(up, "f")
    assert compile_chain(f"decimal({places})")("-" + text) == "-" + format(up, "f")


# --------------------------------------------------------------------------- padding and masking


@pytest.mark.parametrize(
    ("width", "value", "expected"),
    [
        (6, 12, "000012"),
        (6, "12", "000012"),
        (6, "1234567", "1234567"),  # longer values unchanged
        (6, "", "000000"),
        (6, "-12", "-00012"),  # after the sign, like Python's str.zfill
        (6, Decimal("1.5"), "0001.5"),
        (0, "7", "7"),
    ],
)
def test_zfill(width: int, value: Any, expected: str) -> None:
    assert run(f"zfill({width})", value) == expected


@given(st.text(max_size=30), st.integers(min_value=0, max_value=40))
def test_zfill_length(text: str, width: int) -> None:
    result = compile_chain(f"zfill({width})")(text)
    assert len(result) == max(width, len(text))
    assert result.endswith(text.lstrip("+-"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (13812345678, "138****5678"),
        ("13812345678", "138****5678"),
        ("138-1234-5678", "138-****-5678"),  # separators stay, digits are counted
        ("138 1234 5678", "138 **** 5678"),
        ("+86 138 1234 5678", "+86 138 **** 5678"),  # a country code written apart is kept
        ("+86-13812345678", "+86-138****5678"),
        ("+8613812345678", "+861******5678"),  # not written apart: counted, so more is hidden
        ("(010) 8765-4321", "(010) ****-4321"),
        ("１３８１２３４５６７８", "１３８****５６７８"),  # full-width digits are masked too
        ("12345678", "123*5678"),
        ("1234567", "****567"),  # under 8 digits: only the end, at most half
        ("123456", "***456"),
        ("12345", "***45"),
        ("1234", "**34"),
        ("1", "*"),
        ("", ""),
        ("n/a", "n/a"),
        ("ext. 12", "ext. *2"),
        ("+1-555-1234", "+1-***-*234"),
        ("+0-", "+*-"),  # nothing after the "country code": it is the number
    ],
)
def test_mask_phone(value: Any, expected: str) -> None:
    assert run("mask_phone", value) == expected


@given(st.text(alphabet="0123456789 -+()", max_size=25))
def test_mask_phone_hides_something_and_keeps_the_shape(text: str) -> None:
    result = compile_chain("mask_phone")(text)
    assert len(result) == len(text)
    for a, b in zip(text, result, strict=True):
        assert b == a or (b == "*" and a.isdecimal())
    digits = sum(c.isdecimal() for c in text)
    if digits:
        assert "*" in result
        # 3 + 4 digits, or at most half of a short number, plus a country code written apart
        assert sum(c.isdecimal() for c in result) <= max(7, digits // 2) + 3


@pytest.mark.parametrize(
    ("args", "value", "expected"),
    [
        ("3, 4", "abcdefghij", "abc***ghij"),
        ("3, 4", 13812345678, "138****5678"),
        ("1, 1", "张三丰", "张*丰"),
        ("1, 0", "张三", "张*"),
        ("1, 1", "张三", "张*"),  # too short to keep both ends: at most half stays, the start first
        ("3, 4", "abcdefg", "abc****"),
        ("3, 4", "abc", "a**"),
        ("0, 4", "abcd", "**cd"),
        ("0, 0", "abc", "***"),
        ("2, 2", "", ""),
        ("1, 1", "a", "*"),
    ],
)
def test_mask(args: str, value: Any, expected: str) -> None:
    assert run(f"mask({args})", value) == expected


NO_STARS = st.text(alphabet=st.characters(blacklist_characters="*"), max_size=30)


@given(NO_STARS, st.integers(min_value=0, max_value=12), st.integers(min_value=0, max_value=12))
def test_mask_length_and_visible_parts(text: str, keep_start: int, keep_end: int) -> None:
    result = compile_chain(f"mask({keep_start}, {keep_end})")(text)
    n = len(text)
    assert len(result) == n
    visible = [i for i, ch in enumerate(result) if ch != "*"]
    assert all(result[i] == text[i] for i in visible)
    if keep_start + keep_end < n:
        assert result == text[:keep_start] + "*" * (n - keep_start - keep_end) + text[n - keep_end :]
    else:  # too short: at most half stays visible, and only from the two ends
        assert len(visible) <= n // 2
        assert all(i < keep_start or i >= n - keep_end for i in visible)


# --------------------------------------------------------------------------- companies, replace, substr


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ＡＢＣ有限责任公司 ", "ABC有限公司"),
        ("  Acme   Trading\t Co.\n", "Acme Trading Co."),
        ("北京\u3000某某科技有限责任公司", "北京 某某科技有限公司"),
        ("某某（北京）有限责任公司", "某某(北京)有限公司"),  # NFKC: full-width brackets
        ("台灣某某有限責任公司", "台灣某某有限公司"),
        ("某某股份有限公司", "某某股份有限公司"),
        ("\ufeffAcme\u200b Ltd", "Acme Ltd"),  # invisible characters from copy and paste
        ("", ""),
    ],
)
def test_normalize_company(value: str, expected: str) -> None:
    assert run("normalize_company", value) == expected


def test_replace_and_substr() -> None:
    assert run("replace('有限责任公司', '有限公司')", "X有限责任公司") == "X有限公司"
    assert run("replace(a, b)", "banana") == "bbnbnb"  # bare words are text too
    assert run("substr(0, 3)", "ABCDEF") == "ABC"
    assert run("substr(-4)", 13812345678) == "5678"
    assert run("substr(10)", "abc") == ""


# --------------------------------------------------------------------------- dates


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-20", "20261120"),
        ("2026-11-20T10:15:00+08:00", "20261120"),
        ("2026-11-20T23:59:59-05:00", "20261120"),  # the date as written, no zone conversion
        ("2026-11-20T10:15:00Z", "20261120"),
        ("2026-11-20T10:15:00.123456", "20261120"),
        ("2026-11-20 10:15", "20261120"),
        (" 2026-11-20 ", "20261120"),
        ("20261120", "20261120"),  # ISO basic format, as SAP writes it
        (20261120, "20261120"),
        (date(2026, 11, 20), "20261120"),
        (datetime(2026, 11, 20, 23, 0, tzinfo=timezone(timedelta(hours=8))), "20261120"),
    ],
)
def test_date(value: Any, expected: str) -> None:
    assert run("date('%Y%m%d')", value) == expected


FAST_PIECES = st.sampled_from(["%Y", "%m", "%d", "%H", "%M", "%S", "%f", "%%", "-", ":", "T", " ", "年", "x"])


@given(
    st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31)),
    st.lists(FAST_PIECES, min_size=1, max_size=8),
    st.sampled_from(["%Y", "%H", "%j", "%b"]),
)
def test_date_formats_agree_with_strftime(moment: datetime, pieces: list[str], extra: str) -> None:
    fmt = "".join(pieces) + extra  # with %j or %b strftime itself is used
    fmt_arg = fmt.replace("\\", "\\\\").replace("'", "\\'")
    assert compile_chain(f"datetime('{fmt_arg}')")(moment.isoformat()) == moment.strftime(fmt)
    assert compile_chain(f"date('{fmt_arg}')")(moment.isoformat()) == moment.date().strftime(fmt)


def test_date_formats() -> None:
    assert run("date('%d.%m.%Y')", "2026-11-20T10:15:00") == "20.11.2026"
    assert run("date('%Y-%m-%d %H:%M')", "2026-11-20T10:15:00") == "2026-11-20 00:00"  # the date only
    assert run("date('%Y%%%m')", "2026-11-20") == "2026%11"
    assert run("date('%d %b %Y, %A')", "2026-11-20") == "20 Nov 2026, Friday"
    assert run("datetime('%H:%M:%S.%f')", "2026-11-20T10:15:00.5") == "10:15:00.500000"


@pytest.mark.parametrize(
    ("value", "fmt", "expected"),
    [
        ("2026-11-20T10:15:30+08:00", "%Y%m%d%H%M%S", "20261120101530"),
        ("2026-11-20T10:15:30+08:00", "%Y-%m-%dT%H:%M:%S%z", "2026-11-20T10:15:30+0800"),
        ("2026-11-20T10:15:30Z", "%H:%M %Z", "10:15 UTC"),
        ("2026-11-20", "%Y-%m-%d %H:%M:%S", "2026-11-20 00:00:00"),
        (date(2026, 11, 20), "%H%M%S", "000000"),
        ("20261120T101530", "%Y-%m-%d %H:%M:%S", "2026-11-20 10:15:30"),
    ],
)
def test_datetime(value: Any, fmt: str, expected: str) -> None:
    assert run(f"datetime('{fmt}')", value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2026-13-01", "date('%Y%m%d'): '2026-13-01' is not an ISO 8601 date or date-time"),
        ("20.11.2026", "date('%Y%m%d'): '20.11.2026' is not an ISO 8601 date or date-time"),
        ("", "date('%Y%m%d'): '' is not an ISO 8601 date or date-time"),
        ("00000000", "date('%Y%m%d'): '00000000' is not an ISO 8601 date or date-time"),
        (1.5, "date('%Y%m%d'): expected an ISO 8601 date, got a float"),
        (True, "date('%Y%m%d'): expected an ISO 8601 date, got a bool"),
        ([], "date('%Y%m%d'): expected an ISO 8601 date, got a list"),
    ],
)
def test_date_errors(value: Any, message: str) -> None:
    assert str(run_error("date('%Y%m%d')", value)) == message


def test_datetime_error_names_the_step() -> None:
    message = "datetime('%H'): 'soon' is not an ISO 8601 date or date-time"
    assert str(run_error("datetime('%H')", "soon")) == message


# --------------------------------------------------------------------------- lookup


@pytest.fixture
def tables(tmp_path: Path) -> LookupTables:
    (tmp_path / "departments.yaml").write_text("Sales: S01\n'10': TEN\ntrue: T\n", encoding="utf-8")
    return LookupTables(tmp_path)


def test_lookup(tables: LookupTables) -> None:
    fn = compile_chain("trim | lookup(departments)", lookups=tables)
    assert fn(" Sales ") == "S01"
    assert compile_chain("lookup('departments')", lookups=tables)(10) == "TEN"  # keys compared as text
    assert compile_chain("lookup(\"departments\")", lookups=tables)(True) == "T"


def test_lookup_miss_is_a_distinct_transform_error(tables: LookupTables) -> None:
    fn = compile_chain("lookup(departments)", lookups=tables)
    with pytest.raises(LookupMiss) as info:
        fn("Marketing")
    assert isinstance(info.value, TransformError)
    assert str(info.value) == "lookup(departments): no entry for 'Marketing'"
    assert (info.value.table, info.value.key) == ("departments", "Marketing")


def test_lookup_is_read_once_at_compile_time(tables: LookupTables, tmp_path: Path) -> None:
    fn = compile_chain("lookup(departments)", lookups=tables)
    (tmp_path / "departments.yaml").unlink()
    assert fn("Sales") == "S01"
    assert compile_chain("lookup(departments)", lookups=tables)("Sales") == "S01"


def test_lookup_spec_errors(tables: LookupTables) -> None:
    assert "no lookup table directory is configured" in str(spec_error("lookup(departments)"))
    err = spec_error("trim | lookup(nope)", lookups=tables)
    assert "lookup table 'nope' not found" in str(err)
    assert err.offset == 7
    assert "invalid lookup table name '../x'" in str(spec_error("lookup('../x')", lookups=tables))
    assert str(spec_error("lookup", lookups=tables)) == "lookup() takes 1 argument (table), got 0"


def test_lookup_refuses_lists(tables: LookupTables) -> None:
    fn = compile_chain("lookup(departments)", lookups=tables)
    with pytest.raises(TransformError, match=r"lookup\(departments\): expected text or a number, got a list"):
        fn(["Sales"])


# --------------------------------------------------------------------------- registry


@pytest.fixture
def plugin_names() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        TRANSFORMS.pop(name, None)


def test_every_builtin_has_a_one_line_doc() -> None:
    for entry in TRANSFORMS.values():
        assert entry.builtin
        assert entry.doc and "\n" not in entry.doc and len(entry.doc) <= 110, entry.name
    assert TRANSFORMS["decimal"].usage == "decimal(places)"
    assert TRANSFORMS["substr"].usage == "substr(start, [end])"
    assert TRANSFORMS["trim"].usage == "trim"
    assert TRANSFORMS["lookup"].wants_lookups


def test_register_a_plugin_transform(plugin_names: list[str]) -> None:
    def suffix(text: str, times: int = 1) -> Any:
        """Append `text` `times` times."""
        return lambda v: f"{v}{text * times}"

    plugin_names.append("suffix")
    entry = register_transform("suffix", suffix)
    assert (entry.doc, entry.usage) == ("Append `text` `times` times.", "suffix(text, [times])")
    assert not entry.builtin
    assert compile_chain("upper | suffix('!', 3)")("a") == "A!!!"
    assert str(spec_error("suffix(1, 2, 3)")) == "suffix() takes 1 to 2 arguments (text, times), got 3"


def test_plugin_errors_become_transform_errors(plugin_names: list[str]) -> None:
    def explode() -> Any:
        def run_it(value: Any) -> Any:
            raise KeyError("boom")

        return run_it

    def picky(n: int | str) -> Any:
        if not isinstance(n, int):
            raise ValueError("n must be a number")
        return lambda v: v

    plugin_names += ["explode", "picky"]
    register_transform("explode", explode, doc="Always fails.")
    register_transform("picky", picky, doc="Checks its argument.")
    with pytest.raises(TransformError, match=r"^explode: 'x': 'boom'$"):
        compile_chain("explode")("x")
    err = spec_error("trim | picky(x)")
    assert (str(err), err.offset) == ("picky(x): n must be a number", 7)


def test_plugin_lookups_and_variadic(plugin_names: list[str], tables: LookupTables) -> None:
    def first_of(*tables_: int | str, lookups: LookupTables | None = None) -> Any:
        """Value from the first table that has the key."""
        assert lookups is not None
        maps = [lookups.get(str(t)) for t in tables_]
        return lambda v: next(m[v] for m in maps if v in m)

    plugin_names.append("first_of")
    entry = register_transform("first_of", first_of)
    assert entry.usage == "first_of(...)"
    assert compile_chain("first_of(departments, departments)", lookups=tables)("Sales") == "S01"


def test_registration_mistakes(plugin_names: list[str]) -> None:
    with pytest.raises(TransformSpecError, match="already registered"):
        register_transform("trim", lambda: str.strip, doc="x")
    with pytest.raises(TransformSpecError, match="not an identifier"):
        register_transform("has space", lambda: str.strip, doc="x")
    with pytest.raises(TransformSpecError, match="needs a one-line doc string"):
        register_transform("nodoc", lambda: str.strip)
    plugin_names.append("trim2")
    register_transform("trim2", lambda: str.strip, doc="Strip.")
    register_transform("trim2", lambda: str.upper, doc="Upper.", replace=True)
    assert compile_chain("trim2")("a") == "A"
    assert "nodoc" not in TRANSFORMS
