"""Exact decimal arithmetic in CEL expressions (DESIGN §4: money is exact), against Python's decimal module."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Context, Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncbus.errors import ConfigErrors, MappingError
from syncbus.mapping.expressions import Expression, ExpressionError, ExpressionSpecError

EXACT = Context(prec=1000)
DIVISION = Context(prec=34, rounding=ROUND_HALF_EVEN)

amounts = st.decimals(min_value=-10**12, max_value=10**12, places=4, allow_nan=False, allow_infinity=False)
prices = st.decimals(min_value=0, max_value=10**7, places=2, allow_nan=False, allow_infinity=False)
quantities = st.decimals(min_value=0, max_value=10**4, places=3, allow_nan=False, allow_infinity=False)
floats = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)


def plain(d: Decimal) -> str:
    return format(d if d or not d.is_signed() else d.copy_abs(), "f")


def same(result: Any, expected: Decimal) -> None:
    """Equal in value and written with exactly the same digits (nothing rounded away)."""
    assert isinstance(result, Decimal), result
    assert result == expected
    assert plain(result) == plain(expected)


MUL = Expression("dec(record.a) * dec(record.b)")
ADD = Expression("dec(record.a) + dec(record.b)")
SUB = Expression("dec(record.a) - dec(record.b)")
DIV = Expression("dec(record.a) / dec(record.b)")
ORDER_TOTAL = Expression("sum(record.lines.map(l, dec(l.qty) * dec(l.unit_price)))")


@given(amounts, amounts)
def test_multiply_add_subtract_are_exact(a: Decimal, b: Decimal) -> None:
    rec = {"a": str(a), "b": str(b)}
    same(MUL(rec), EXACT.multiply(a, b))
    same(ADD(rec), EXACT.add(a, b))
    same(SUB(rec), EXACT.subtract(a, b))


@given(amounts, amounts.filter(lambda d: d != 0))
def test_divide_is_decimal128(a: Decimal, b: Decimal) -> None:
    same(DIV({"a": str(a), "b": str(b)}), DIVISION.divide(a, b))


@given(amounts, amounts)
def test_comparisons(a: Decimal, b: Decimal) -> None:
    rec = {"a": str(a), "b": str(b)}
    for op, expected in (("<", a < b), ("<=", a <= b), (">", a > b), (">=", a >= b), ("==", a == b),
                         ("!=", a != b)):
        assert Expression(f"dec(record.a) {op} dec(record.b)")(rec) is expected


@given(st.lists(st.tuples(quantities, prices), max_size=8))
def test_order_total_is_the_exact_sum_of_qty_times_price(lines: list[tuple[Decimal, Decimal]]) -> None:
    record = {"lines": [{"qty": str(q), "unit_price": str(p)} for q, p in lines]}
    expected = Decimal(0)
    for q, p in lines:
        expected = EXACT.add(expected, EXACT.multiply(q, p))
    same(ORDER_TOTAL(record), expected)


@given(floats, st.sampled_from(["1.13", "0.1", "3.0", "-2.5", "1e-3"]))
def test_floats_in_records_are_read_as_written(value: float, literal: str) -> None:
    # The record's float counts with its shortest repr; the literal with its text.
    result = Expression(f"record.price * {literal}")({"price": value})
    same(result, EXACT.multiply(Decimal(repr(value)), Decimal(literal)))


@given(prices, st.integers(min_value=0, max_value=4))
def test_decimal_transform_rounds_the_exact_value_half_up(price: Decimal, places: int) -> None:
    result = Expression('dec(record.price) * dec("1.13")')({"price": str(price)})
    from syncbus.mapping.transforms import compile_chain

    expected = EXACT.multiply(price, Decimal("1.13")).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)
    assert compile_chain(f"decimal({places})")(result) == plain(expected)


def test_the_documented_way_gives_14_13_where_double_gives_14_12(compile_yaml: Any) -> None:
    m = compile_yaml("""
        fields:
          FLOAT: {expr: "double(record.price) * 1.13", transform: "decimal(2)"}
          EXACT: {expr: 'dec(record.price) * dec("1.13")', transform: "decimal(2)"}
          LITERAL: {expr: "dec(record.price) * 1.13", transform: "decimal(2)"}
          PLAIN: {expr: "record.price * 1.13", transform: "decimal(2)"}
          RAW: {expr: "record.price * 1.13"}
          TOTAL: {expr: "sum(record.lines.map(l, dec(l.qty) * dec(l.unit_price)))", transform: "decimal(2)"}
          ROUNDED: {expr: "round(dec(record.price) / 3, 2)"}
    """)
    lines = [{"qty": 3, "unit_price": 0.1}, {"qty": "1.5", "unit_price": "4096.75"}, {"qty": 10, "unit_price": 0.5}]
    out = m.map_object({"price": 12.5, "lines": lines}).outputs[0]
    assert out.payload["FLOAT"] == "14.12"  # the binary float 14.124999999999998
    assert out.payload["EXACT"] == out.payload["LITERAL"] == out.payload["PLAIN"] == "14.13"
    assert out.payload["RAW"] == Decimal("14.125")
    assert out.payload["TOTAL"] == "6150.43"  # 0.3 + 6145.125 + 5.0 = 6150.425 -> half-up
    assert out.payload["ROUNDED"] == Decimal("4.17")
    assert b'"RAW":14.125' in out.body  # a decimal result is an exact JSON number


def test_signed_amount_like_the_finance_flow() -> None:
    e = Expression('record.SHKZG == "H" ? -dec(record.DMBTR) : dec(record.DMBTR)')
    assert e({"SHKZG": "H", "DMBTR": "1234.565"}) == Decimal("-1234.565")
    assert e({"SHKZG": "S", "DMBTR": 980}) == Decimal("980")


def test_conversions_back() -> None:
    rec = {"a": "12.75"}
    assert Expression("string(dec(record.a) * 2)")(rec) == "25.50"
    assert Expression("int(dec(record.a))")(rec) == 12
    assert Expression("int(-dec(record.a))")(rec) == -12  # toward zero, like CEL's int(double)
    assert Expression("double(dec(record.a))")(rec) == 12.75
    assert Expression("dec(record.a).round(1)")(rec) == Decimal("12.8")
    assert Expression("[dec(record.a), 1, 0.5]")(rec) == [Decimal("12.75"), Decimal(1), Decimal("0.5")]


@pytest.mark.parametrize(("source", "record", "message"), [
    ("dec(record.a)", {"a": "twelve"}, "dec(): 'twelve' is not a number"),
    ("dec(record.a)", {"a": None}, "dec(): null is not a number"),
    ("dec(record.a)", {"a": True}, "is a boolean, not a number"),
    ("dec(record.a) / dec(record.b)", {"a": 1, "b": "0.00"}, "division of 1 by zero"),
    ("sum(record.a)", {"a": [1, "x"]}, "sum(): item 1: 'x' is not a number"),
    ("dec(record.a) + 1", {"a": "1e5000"}, "more than 1000 digits"),
    ("dec(record.a) + dec(record.b)", {"a": "1e999", "b": "1e-999"}, "more than 1000 digits"),
])
def test_runtime_errors_name_the_problem(source: str, record: dict[str, Any], message: str) -> None:
    with pytest.raises(ExpressionError) as err:
        Expression(source)(record)
    assert message in str(err.value)
    assert "Python function" not in str(err.value)


def test_a_failed_decimal_error_does_not_leak_into_the_next_one() -> None:
    # CEL's `||` absorbs an error on one side; the remembered problem must not survive it.
    assert Expression('dec(record.a) > 1 || record.b == "x"')({"a": "bad", "b": "x"}) is True
    with pytest.raises(ExpressionError, match="no such key"):
        Expression("dec(record.a) > 1")({})


@pytest.mark.parametrize(("source", "message"), [
    ('dec("abc")', "dec(\"abc\"): 'abc' is not a number"),
    ('dec(record.a) + "1.5"', "decimal '+' needs numbers, not a string"),
    ("dec(record.a) == null", "decimal '==' needs numbers, not a null"),
    ("dec(record.a) in [1, 2]", "'in' does not work with decimals"),
    ("dec(true)", "dec() needs a number or numeric text, not a bool"),
    ("dec(1, 2)", "dec() takes one number"),
    ('sum("abc")', "sum() adds the numbers of a list, not a string"),
    ("round(dec(record.a))", "round() takes a number and the decimal places"),
    ("size(dec(record.a))", "size() of a decimal is not defined"),
    ("dec(record.a).startsWith('1')", "startsWith() works on text, not on a decimal"),
    ("int(record.a) * double(record.b)", "CEL does not mix an int and a double"),
    ('"a" * 2', "cannot use '*' with a string and an int"),
    ('size(record.a) > "x"', "cannot compare an int with a string"),
    ("dubble(record.a)", "unknown function 'dubble'"),
    ("record.a && 1", "'&&' needs true or false on both sides, not an int"),
])
def test_type_errors_are_found_at_load_time(source: str, message: str) -> None:
    with pytest.raises(ExpressionSpecError) as err:
        Expression(source)
    assert message in str(err.value)


def test_type_errors_in_a_mapping_name_file_and_line(compile_yaml: Any) -> None:
    with pytest.raises(ConfigErrors) as err:
        compile_yaml("""
            when: dec(record.amount) * 2
            fields:
              A: {expr: 'dec(record.a) + "x"'}
        """)
    found = {(e.location.line if e.location else 0, e.message.split(":")[0]) for e in err.value.errors}
    assert (7, "bad CEL expression") in found  # the filter gives a decimal, not true/false
    assert (9, "bad CEL expression") in found


def test_mapping_error_from_a_decimal_names_the_field(compile_yaml: Any) -> None:
    m = compile_yaml("""
        fields:
          GROSS: {expr: "dec(record.amount) * 1.13"}
    """)
    with pytest.raises(MappingError) as err:
        m.map_object({"amount": "n/a"})
    assert err.value.field == "GROSS" and "'n/a' is not a number" in str(err.value)
