"""Generated XML writers (issue 11) give exactly what the general path gives: bytes, payload or error.

The general path (build the dict, then the XML codec) is the specification;
``CompiledMapping.writers`` is an optimisation of it. Hypothesis generates
mappings (constants, paths, defaults, required fields, transforms, map
tables, nested objects, lists, attributes, field-level ``when``, names that
XML does not allow) and records (text with markup characters, control
characters and non-ASCII, numbers of every shape, nulls, lists where objects
are expected), and every pair must come out the same both ways.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncbus.errors import ConfigErrors
from syncbus.mapping.compiler import CompiledMapping, compile_spec
from syncbus.mapping.loader import parse_mapping
from syncbus.mapping.transforms import compile_chain
from syncbus.mapping.transforms.values import FAST_DECIMAL
from syncbus.yamlfile import parse_yaml

ROOT = Path(__file__).resolve().parents[2]
KEYS = ["a", "b", "c", "amount", "name", "lines", "n"]
NAMES = ["A", "B", "C", "D", "E", "VBELN", "ns:X", "x-y", "@id", "@kind", "@n", "1bad", "bad name"]
VALID = NAMES[:-2]  # most mappings get valid names (a writer); some get names XML refuses (no writer)
CHAINS = ["trim", "upper", "trim | upper", "decimal(2)", "decimal(0)", "decimal(3)", "zfill(4)", "str",
          "normalize_company", "mask_phone", "date('%Y%m%d')"]

texts = st.text(alphabet=st.sampled_from(list("ab <>&\"'\n\t1.-05 上海有限责任公司\x01\ufffe")), max_size=12)
numbers = st.one_of(st.integers(-10**20, 10**20), st.floats(allow_nan=True, allow_infinity=True),
                    st.decimals(allow_nan=False, allow_infinity=False, places=4).map(str),
                    st.sampled_from(["1.005", "-0.004", "12.345", "9.995", "  7 ", "1e3", "0012", "-0", "2026-11-20",
                                     "2026-11-20T10:15:00+08:00"]))
scalars = st.one_of(st.none(), st.booleans(), texts, numbers)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
                      max_leaves=12)
records = st.dictionaries(st.sampled_from(KEYS), values, max_size=7)


@st.composite
def field_specs(draw: st.DrawFn, depth: int) -> Any:
    kind = draw(st.sampled_from(["path", "full", "const", "nested", "each", "expr"] if depth < 2
                                else ["path", "full", "const", "expr"]))
    if kind == "path":
        return draw(st.sampled_from([*KEYS, "a.b", "lines[0].n", "$.amount"]))
    if kind == "const":
        return {"const": draw(st.one_of(scalars, st.dictionaries(st.sampled_from(["K", "@v"]), texts, max_size=2),
                                        st.lists(texts, max_size=2)))}
    if kind == "nested":
        return draw(objects(depth + 1))
    if kind == "each":
        return {"each": draw(st.sampled_from(KEYS)), "fields": draw(objects(depth + 1))}
    spec: dict[str, Any] = {}
    if kind == "expr":
        # Not `record.a`: CEL gives a map back with its keys in varying order (expressions.py), so
        # even two runs of the general path can name a different value in the same error.
        spec["expr"] = draw(st.sampled_from(['"x<" + string(size(record))', "size(record)",
                                             "record.amount > 1", "[1, 2]"]))
    else:
        spec["from"] = draw(st.sampled_from(KEYS))
    if draw(st.booleans()):
        spec["transform"] = draw(st.sampled_from(CHAINS))
    if draw(st.booleans()):
        spec["default"] = draw(st.one_of(texts, st.integers(-5, 5), st.none(), st.booleans()))
    if draw(st.integers(0, 3)) == 0:
        spec["required"] = True
    if draw(st.integers(0, 3)) == 0:
        spec["map"] = draw(st.dictionaries(st.sampled_from(["a", "1", "1.00", "true", "x"]),
                                           st.one_of(texts, st.integers(0, 9), st.none()), min_size=1, max_size=3))
    if draw(st.integers(0, 4)) == 0:
        spec["when"] = draw(st.sampled_from(["has(record.a)", "record.n == 1", "size(record) > 2"]))
    return spec


@st.composite
def objects(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    pool = NAMES if draw(st.integers(0, 9)) == 0 else VALID
    names = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=5, unique=True))
    return {name: draw(field_specs(depth)) for name in names}


@st.composite
def mappings(draw: st.DrawFn) -> dict[str, Any]:
    target: dict[str, Any] = {"sink": "out", "format": "xml"}
    if draw(st.integers(0, 3)):
        target["root"] = draw(st.sampled_from(["ORDERS05", "root"]))
    fields = draw(objects())
    if "root" not in target and draw(st.booleans()):
        fields = {"DOC": fields}  # one top-level object: the root element
    return {"mapping": "t", "version": 1, "owner": "test", "source": {"topic": "t.in"}, "target": target,
            "fields": fields}


def compile_dict(spec: dict[str, Any], folder: Path) -> CompiledMapping | None:
    text = yaml.safe_dump(spec, allow_unicode=True, sort_keys=False)
    path = folder / "m.yaml"
    try:
        doc = parse_yaml(text, str(path))
        return compile_spec(parse_mapping(doc), str(path), doc.location, folder, source=text.encode())
    except ConfigErrors:
        return None  # a mapping the compiler refuses is not a case here


def outcome(m: CompiledMapping, record: dict[str, Any], writers: tuple[Any, ...]) -> Any:
    saved = m.writers
    m.writers = writers
    try:
        result = m.map_object(record)
    except Exception as exc:
        return ("error", type(exc).__name__, str(exc))
    finally:
        m.writers = saved
    return ("ok", result.key, result.skipped, [(o.target.sink, o.body, o.payload) for o in result.outputs])


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(spec=mappings(), batch=st.lists(records, min_size=1, max_size=4))
def test_writer_equals_general_path(tmp_path_factory: pytest.TempPathFactory, spec: dict[str, Any],
                                    batch: list[dict[str, Any]]) -> None:
    m = compile_dict(spec, tmp_path_factory.mktemp("m"))
    if m is None or not m.writers:
        return
    for record in batch:
        assert outcome(m, record, m.writers) == outcome(m, record, ())


def test_the_reference_mapping_has_a_writer_and_it_is_used() -> None:
    from syncbus.mapping.fastmap import lazy_output_class
    from syncbus.mapping.loader import load_mapping

    m = load_mapping(ROOT / "mappings" / "crm-order-to-erp.yaml")
    assert m.writers and m.writers[0] is not None and m.writers[1] is None  # XML: generated; JSON: codec
    m.input_schema = None
    m.targets[0].schema = None
    order = yaml.safe_load((ROOT / "mappings" / "tests" / "data" / "crm_order.json").read_text("utf-8"))
    fast = m.map_object(order)
    assert type(fast.outputs[0]) is lazy_output_class() or fast.outputs[0].__class__.__name__ == "LazyOutput"
    assert outcome(m, order, m.writers) == outcome(m, order, ())


def test_no_writer_for_layouts_it_does_not_generate(tmp_path: Path) -> None:
    base = {"mapping": "t", "version": 1, "owner": "o", "source": {"topic": "t"}, "fields": {"A": "a", "B": "b"}}
    pretty = compile_dict({**base, "target": {"sink": "s", "format": "xml", "root": "r",
                                              "options": {"pretty": True}}}, tmp_path)
    two_roots = compile_dict({**base, "target": {"sink": "s", "format": "xml"}}, tmp_path)
    as_json = compile_dict({**base, "target": {"sink": "s", "format": "json"}}, tmp_path)
    assert pretty is not None and not pretty.writers
    assert two_roots is not None and not two_roots.writers
    assert as_json is not None and not as_json.writers


@settings(max_examples=2000, deadline=None)
@given(value=st.one_of(numbers, st.floats(min_value=-1e6, max_value=1e6), scalars), places=st.integers(0, 4))
def test_decimal_fast_path_equals_the_decimal_path(value: Any, places: int) -> None:
    """decimal(n) rounds on the digits of plain numbers; a Decimal input always takes the Decimal path.

    For every value the fast path accepts, both must give the same text.
    """
    if type(value) not in (float, str):
        return
    text = repr(value) if type(value) is float else value
    if FAST_DECIMAL(text) is None:
        return  # not a plain number: the fast path hands it to Decimal anyway
    step = compile_chain(f"decimal({places})")
    assert step is not None
    try:
        expected: Any = step(Decimal(text))
    except Exception as exc:
        expected = ("error", type(exc).__name__)
    try:
        got: Any = step(value)
    except Exception as exc:
        got = ("error", type(exc).__name__)
    assert got == expected


def test_decimal_rounds_half_up_exactly() -> None:
    step = compile_chain("decimal(2)")
    assert step is not None
    cases = {1.005: "1.01", -1.005: "-1.01", "9.995": "10.00", "-0.004": "0.00", 90.4538: "90.45",
             "0.125": "0.13", 2.675: "2.68", Decimal("1.234"): "1.23", "1e3": "1000.00"}
    for value, text in cases.items():
        assert step(value) == text, value
