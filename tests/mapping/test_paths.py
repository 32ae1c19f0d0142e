import pytest

from syncbus.mapping.paths import MISSING, PathError, compile_getter, parse_path


@pytest.mark.parametrize(
    ("text", "parts", "absolute"),
    [
        ("order_id", ("order_id",), False),
        ("customer.code", ("customer", "code"), False),
        ("lines[0].sku", ("lines", 0, "sku"), False),
        ("lines.1.sku", ("lines", 1, "sku"), False),
        ("lines[-1]", ("lines", -1), False),
        ("$.order_id", ("order_id",), True),
        ("@currency", ("@currency",), False),
        ("#text", ("#text",), False),
    ],
)
def test_parse(text, parts, absolute):
    p = parse_path(text)
    assert p.parts == parts
    assert p.absolute is absolute


@pytest.mark.parametrize("bad", ["", "a..b", "a.", "a[x]", "a[0]b"])
def test_bad_paths(bad):
    with pytest.raises(PathError):
        parse_path(bad)


def test_getters_never_raise():
    rec = {"a": {"b": [1, {"c": "x"}]}, "s": "text"}
    assert compile_getter(parse_path("a.b[1].c"))(rec) == "x"
    assert compile_getter(parse_path("a.b[5].c"))(rec) is MISSING
    assert compile_getter(parse_path("s.x"))(rec) is MISSING
    assert compile_getter(parse_path("missing"))(rec) is MISSING
    assert compile_getter(parse_path("a.b.c"))(rec) is MISSING
    assert compile_getter(parse_path("missing"))("not a dict") is MISSING
