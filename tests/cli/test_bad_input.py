"""Issue 2's hostile and broken inputs: each exits 1 fast, with one line, no traceback, little memory."""

from pathlib import Path

import pytest

from tests.formats.hostile import BILLION_LAUGHS

from .conftest import ROOT

MAPPING = str(ROOT / "mappings" / "crm-order-to-erp.yaml")
GOOD = (ROOT / "mappings" / "tests" / "data" / "crm_order.json").read_bytes()


QUADRATIC = (b'<?xml version="1.0"?><!DOCTYPE q [<!ENTITY a "' + b"x" * 50_000 + b'">]><order><order_id>'
             + b"&a;" * 50_000 + b"</order_id></order>")
EXTERNAL = b"""<?xml version="1.0"?><!DOCTYPE o [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<order><order_id>&xxe;</order_id></order>"""
EXTERNAL_HTTP = b"""<?xml version="1.0"?><!DOCTYPE o [<!ENTITY % p SYSTEM "http://127.0.0.1:9/evil.dtd"> %p;]>
<order/>"""


@pytest.fixture(scope="module")
def baseline(cli):
    run = cli("map", MAPPING, "-", stdin=GOOD)
    assert run.code == 0, run.err
    assert b"<VBELN>SO-2026-000123</VBELN>" in run.out.encode()
    return run


def check(run, baseline, *needles: str):
    text = run.out + run.err
    assert run.code == 1, text
    assert "Traceback" not in text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    for needle in needles:
        assert needle in lines[0], lines[0]
    # hostile input must add neither time nor memory beyond a normal run (CPU time: wall time on a shared
    # 2-core machine measures the neighbours). Relative to the normal run only: the start-up alone costs
    # 0.7-1.2 CPU-s here depending on the machine's load, so a fixed bound failed on busy runs; an entity
    # expansion or a read of the whole 100 MB costs seconds, far beyond the margin.
    assert run.cpu_seconds < baseline.cpu_seconds + 0.5, (run, baseline)
    assert run.max_rss_mb < baseline.max_rss_mb + 30, (run.max_rss_mb, baseline.max_rss_mb)


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (BILLION_LAUGHS, "entit"),
        (QUADRATIC, "entit"),
        (EXTERNAL, "entit"),
        (EXTERNAL_HTTP, "invalid xml"),
        (b"[" * 200_000, "nesting"),
        (b'{"order_id": "\xff\xfe"}', "UTF-8"),
        (b'{"order_id": "SO-1", "lines": [', "invalid json"),
        (b"<order><order_id>SO-1</order_id>", "invalid xml"),
    ],
    ids=["billion-laughs", "quadratic-blowup", "external-entity-file", "external-dtd-http", "json-200k-deep",
         "invalid-utf8", "truncated-json", "truncated-xml"],
)
def test_hostile_records(cli, baseline, payload, needle):
    check(cli("map", MAPPING, "-", stdin=payload), baseline, needle)


def test_hostile_record_from_a_file(cli, baseline, tmp_path):
    f = tmp_path / "bomb.xml"
    f.write_bytes(BILLION_LAUGHS)
    check(cli("map", MAPPING, str(f)), baseline, "entit")


def test_100_mb_input_is_refused_without_reading_it(cli, baseline, tmp_path):
    big = tmp_path / "big.json"
    with big.open("wb") as fh:
        fh.truncate(100 * 1024 * 1024)
    check(cli("map", MAPPING, str(big)), baseline, "limit")


def test_100_mb_on_stdin(cli, baseline, tmp_path):
    big = tmp_path / "big.json"
    with big.open("wb") as fh:
        for _ in range(100):
            fh.write(b" " * (1024 * 1024))
    check(cli("map", MAPPING, "-", stdin=big), baseline, "limit")


def _mapping(tmp_path: Path, fields: str, extra: str = "") -> Path:
    p = tmp_path / "m.yaml"
    p.write_text(f"mapping: t\nversion: 1\nowner: o\nsource: {{topic: x}}\n{extra}target: {{sink: s}}\n"
                 f"fields:\n{fields}", encoding="utf-8")
    return p


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ("  A: {frm: x}\n", "m.yaml:7:7: unknown key 'frm'"),
        ("  A: {expr: 'record.a +'}\n", "m.yaml:7:"),
        ("  A: {from: x, transform: 'trim | uppr'}\n", "unknown transform 'uppr'"),
        ("  A: {from: x, transform: 'lookup(nowhere)'}\n", "lookup table 'nowhere' not found"),
    ],
    ids=["typo-key", "bad-cel", "unknown-transform", "missing-lookup"],
)
def test_bad_mappings(cli, baseline, tmp_path, fields, needle):
    path = _mapping(tmp_path, fields)
    for args in (("validate", str(path)), ("map", str(path), "-")):
        check(cli(*args, stdin=b"{}"), baseline, needle)


def test_cyclic_lookup_file(cli, baseline, tmp_path):
    (tmp_path / "lookups").mkdir()
    (tmp_path / "lookups" / "loop.yaml").symlink_to(tmp_path / "lookups" / "loop.yaml")
    path = _mapping(tmp_path, "  A: {from: x, transform: 'lookup(loop)'}\n")
    check(cli("validate", str(path)), baseline, "loop")


def test_missing_required_field_names_target_and_source(cli, baseline):
    run = cli("map", MAPPING, "-", stdin=GOOD.replace(b'"cust_code": "c0001",', b""))
    check(run, baseline, "cust_code")
    no_qty = GOOD.replace(b'"sku": "MAT-003", ', b"")
    run = cli("map", MAPPING, "-", stdin=no_qty)
    check(run, baseline, "sku")
