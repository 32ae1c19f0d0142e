import pytest

from syncbus.mapping.expressions import Expression, ExpressionError, ExpressionSpecError


def test_filter_and_value():
    when = Expression('record.status == "APPROVED"')
    assert when.test({"status": "APPROVED", "lines": [{"qty": 1}]}) is True
    assert when.test({"status": "DRAFT"}) is False
    assert Expression("double(record.amount) * 2.0")({"amount": 10}) == 20.0


def test_item_variable_inside_each():
    assert Expression("item.qty * 2")({"x": 1}, {"qty": 3}) == 6
    assert Expression("record.lines.exists(l, l.qty > 1)")({"lines": [{"qty": 2}]}) is True


@pytest.mark.parametrize("bad", ["record.amount *", "foo.x == 1", "record.x ==", "1 +"])
def test_compile_errors(bad):
    with pytest.raises(ExpressionSpecError):
        Expression(bad)


def test_runtime_errors_are_clear():
    with pytest.raises(ExpressionError, match="no such key 'status'"):
        Expression('record.status == "A"').test({})
    with pytest.raises(ExpressionError, match="not true or false"):
        Expression("record.amount").test({"amount": 1})


def test_memoised_results_respect_cel_types():
    # 1, 1.0 and true hash equal in Python but are different values in CEL
    e = Expression("type(record.v) == int")
    assert e({"v": 1}) is True
    assert e({"v": 1.0}) is False
    assert e({"v": True}) is False
    assert e({"v": 1}) is True


def test_whole_record_use_is_not_pruned():
    e = Expression("size(record) == 2")
    assert e({"a": 1, "b": 2}) is True
    assert e({"a": 1}) is False


def test_pruning_ignores_names_in_strings():
    e = Expression('record.a == "record.b"')
    assert e({"a": "record.b", "b": [1, 2]}) is True
