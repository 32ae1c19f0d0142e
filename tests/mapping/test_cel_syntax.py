"""CEL tokens, parser and printer; non-ASCII field names in expressions."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncbus.mapping.cel_print import unparse
from syncbus.mapping.cel_syntax import CelSyntaxError, parse, tokenize
from syncbus.mapping.expressions import Expression, ExpressionSpecError

sys.modules.setdefault("cel.cli", types.ModuleType("cel.cli"))
import cel  # noqa: E402

RECORD = {"数量": 3, "单价": "2.50", "客户": {"名称": "星辰"}, "in": 7, "status": "A", "n": 2, "s": "x",
          "lines": [{"数量": 1}, {"数量": 4}]}


@pytest.mark.parametrize(("source", "expected"), [
    ("record.数量 * 2", 6),
    ('record["数量"] * 2', 6),  # the bracket form keeps working
    ("record.客户.名称", "星辰"),
    ('record.客户["名称"] + "!"', "星辰!"),
    ("dec(record.单价) * record.数量", None),  # checked below: exact decimal
    ("record.lines.map(l, l.数量)", [1, 4]),
    ("record.lines.exists(行, 行.数量 > 3)", True),
    ("has(record.数量) && !has(record.重量)", True),
    ("record.in", 7),  # a reserved word as a field name
    ('"record.数量 stays text" + string(record.数量)', "record.数量 stays text3"),
    ("record.数量 // a comment with record.数量\n + 1", 4),
    ("r'record.数量' + '''x.数量'''", "record.数量x.数量"),
])
def test_non_ascii_field_names(source: str, expected: Any) -> None:
    result = Expression(source)(RECORD)
    if expected is None:
        assert str(result) == "7.50"
    else:
        assert result == expected


def test_strings_are_never_rewritten() -> None:
    e = Expression('record.s == "record.数量" || record.s == \'a.中\'')
    assert e({"s": "record.数量"}) is True
    assert e({"s": "a.中"}) is True
    assert e({"s": "x"}) is False


def test_a_method_call_with_a_non_ascii_name_is_refused() -> None:
    with pytest.raises(ExpressionSpecError):
        Expression("record.数量.长度()")


@pytest.mark.parametrize("bad", ["record.数量 +", "record.", "'open", "1 +* 2", "record[1", "a ? b", "12abc"])
def test_syntax_errors_have_a_position(bad: str) -> None:
    with pytest.raises(CelSyntaxError) as err:
        parse(bad)
    assert 0 <= err.value.pos <= len(bad)


def test_tokens_keep_string_literals_whole() -> None:
    kinds = [(t.kind, t.text) for t in tokenize("record.a == 'x // not a comment' // comment\n&& b\"q\"")]
    assert kinds == [("ident", "record"), ("op", "."), ("ident", "a"), ("op", "=="),
                     ("string", "'x // not a comment'"), ("op", "&&"), ("bytes", 'b"q"'), ("eof", "")]


# Random expressions: printing the parsed tree and running it gives what CEL gives for the text.

names = st.sampled_from(["record.n", "record.数量", 'record["n"]', "record.lines[0].数量", "size(record.s)"])
ints = st.integers(min_value=-50, max_value=50).map(str)
strings = st.sampled_from(['"a"', "'b'", r'"\"q\""', "r'\\d'", '"中文"', "'''t'''"])


def exprs() -> st.SearchStrategy[str]:
    number = st.one_of(ints, names)
    arith = st.recursive(
        number,
        lambda inner: st.one_of(
            st.tuples(inner, st.sampled_from(["+", "-", "*"]), inner).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
            inner.map(lambda x: f"({x})"),
            inner.map(lambda x: f"-{x}"),
        ),
        max_leaves=6,
    )
    comparison = st.tuples(arith, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), arith).map(
        lambda t: f"{t[0]} {t[1]} {t[2]}")
    text = st.lists(strings, min_size=1, max_size=3).map(" + ".join)
    logic = st.recursive(
        st.one_of(comparison, st.just("true"), text.map(lambda s: f"size({s}) > 1")),
        lambda inner: st.one_of(
            st.tuples(inner, st.sampled_from(["&&", "||"]), inner).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
            inner.map(lambda x: f"!({x})"),
            st.tuples(inner, arith, arith).map(lambda t: f"{t[0]} ? {t[1]} : {t[2]}"),
        ),
        max_leaves=5,
    )
    return st.one_of(arith, logic, text, st.lists(arith, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"))


def run(source: str) -> Any:
    try:
        return ("ok", cel.compile(source).execute({"record": RECORD}))
    except Exception as exc:
        return ("error", type(exc).__name__)


@given(exprs())
def test_printing_keeps_the_meaning(source: str) -> None:
    printed = unparse(parse(source))
    ascii_source = printed if "数量" in source else source  # CEL itself cannot read record.数量
    assert run(printed) == run(ascii_source)
    assert unparse(parse(printed)) == printed  # printing is stable
