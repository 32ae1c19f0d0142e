"""The OA ↔ HR flow for real (DESIGN §9): CSV files in drop folders, a real `syncbus run`, both buses.

OA drops a GBK CSV export into its outbox; ``file_drop`` publishes one record
per row; the route ``oa-employee-to-hr`` (the shipped mapping: department
lookup, masked phones) writes HR's CSV files with the file sink, which
publishes complete files only. HR's changes go back the same way through
``hr-employee-to-oa`` into GBK files for the OA. Tests look only at folders,
the command line and /metrics, as the partners and on-call staff would.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.harness import Node, wait_until

ROOT = Path(__file__).resolve().parents[2]
DEPARTMENTS = ["销售部", "市场部", "财务部", "会计部", "人力资源部", "信息技术部", "采购部", "仓储物流部", "总经办"]
OA_COLUMNS = "emp_id,name,dept_name,phone,email,hire_date,status"


def write_config(root: Path, suffix: str) -> dict[str, Path]:
    """The shipped OA ↔ HR mappings (topics and route names made unique per test), drop folders, sinks."""
    folders = {name: root / name for name in ("oa-outbox", "hr-drop", "hr-outbox", "oa-inbox")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    mappings = root / "config" / "mappings"
    shutil.copytree(ROOT / "mappings" / "lookups", mappings / "lookups")
    shutil.copytree(ROOT / "mappings" / "schemas", mappings / "schemas")
    for name, topic in (("oa-employee-to-hr", "oa.employees"), ("hr-employee-to-oa", "hr.employees")):
        text = (ROOT / "mappings" / f"{name}.yaml").read_text("utf-8")
        assert f"mapping: {name}\n" in text and f"topic: {topic}\n" in text
        text = text.replace(f"mapping: {name}\n", f"mapping: {name}{suffix}\n")
        (mappings / f"{name}.yaml").write_text(text.replace(f"topic: {topic}\n", f"topic: {topic}{suffix}\n"),
                                               encoding="utf-8")
    (root / "config" / "connectors").mkdir()
    (root / "config" / "connectors" / "oa-hr.yaml").write_text(textwrap.dedent(f"""\
        sources:
          - {{name: oa-employees-csv, type: file_drop, path: "{folders['oa-outbox']}", encoding: gbk,
             key: emp_id, settle: 600ms, interval: 200ms, topic: oa.employees{suffix}}}
          - {{name: hr-employees-csv, type: file_drop, path: "{folders['hr-outbox']}", encoding: utf-8,
             key: emp_id, settle: 600ms, interval: 200ms, topic: hr.employees{suffix}}}
        sinks:
          - {{name: hr-drop, type: file, path: "{folders['hr-drop']}", mode: append,
             filename: "employees-{{date:%Y%m%d-%H%M%S}}-{{seq}}.csv", rotate: {{every: 1s}},
             retry: {{attempts: 4, initial: 20ms, max: 100ms}}}}
          - {{name: oa-inbox, type: file, path: "{folders['oa-inbox']}", mode: append, format: csv, encoding: gbk,
             filename: "employees-{{date:%Y%m%d-%H%M%S}}-{{seq}}.csv", rotate: {{every: 1s}},
             retry: {{attempts: 4, initial: 20ms, max: 100ms}}}}
        """), encoding="utf-8")
    return folders


@pytest.fixture
def flow(tmp_path: Path, bus_url: str, suffix: str) -> Iterator[tuple[Node, dict[str, Path]]]:
    folders = write_config(tmp_path, suffix)
    node = Node(tmp_path / "config", bus_url, f"sqlite:///{tmp_path}/store.db").start()
    try:
        yield node, folders
    finally:
        code = node.stop()
        assert code == 0, node.tail()


def oa_export(n: int) -> list[list[str]]:
    return [[str(20000 + i), f"员工{i}", DEPARTMENTS[i % len(DEPARTMENTS)], f"139{i:08d}",
             f"Emp{i}@Example.COM", f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}", "active"] for i in range(1, n + 1)]


def as_csv(header: str, rows: list[list[str]]) -> str:
    return header + "\r\n" + "".join(",".join(r) + "\r\n" for r in rows)


def published_rows(folder: Path, encoding: str) -> list[dict[str, str]]:
    """Rows of every complete (published) CSV file in ``folder``; in-progress files are hidden."""
    rows: list[dict[str, str]] = []
    for path in sorted(folder.glob("employees-*.csv")):
        rows += list(csv.DictReader(io.StringIO(path.read_bytes().decode(encoding), newline="")))
    return rows


def dead_letters(node: Node, route: str) -> list[dict[str, Any]]:
    return json.loads(node.cli("dlq", "list", "--route", route, "--json").stdout)


def test_the_department_tables_are_inverses() -> None:
    names = yaml.safe_load((ROOT / "mappings" / "lookups" / "departments.yaml").read_text("utf-8"))
    codes = yaml.safe_load((ROOT / "mappings" / "lookups" / "department-names.yaml").read_text("utf-8"))
    assert {code: name for name, code in names.items()} == codes


def test_oa_export_reaches_hr_and_hr_changes_reach_oa(flow: tuple[Node, dict[str, Path]], suffix: str) -> None:
    node, folders = flow
    rows = oa_export(100)
    malformed_at, unknown_at = 37, 64          # data rows; the file's line is the row number + 1
    rows[malformed_at - 1] = rows[malformed_at - 1] + ["多余的一列"]
    rows[unknown_at - 1][2] = "宇宙探索部"
    data = as_csv(OA_COLUMNS, rows).encode("gbk")
    (folders["oa-outbox"] / "employees.csv").write_bytes(data)

    processed = folders["oa-outbox"] / "processed"
    wait_until(lambda: (processed / "employees.csv.result.json").exists(), 60, what="the export to be processed")
    assert (processed / "employees.csv").read_bytes() == data
    assert not (folders["oa-outbox"] / "employees.csv").exists()
    result = json.loads((processed / "employees.csv.result.json").read_text("utf-8"))
    assert (result["file"], result["rows"], result["published"]) == ("employees.csv", 100, 99)
    assert result["refused"] == [{"line": malformed_at + 1, "reason": "8 cells but the header has 7 columns"}]

    wait_until(lambda: len(published_rows(folders["hr-drop"], "utf-8")) >= 98, 60, what="98 rows in HR's files")
    time.sleep(1.5)  # one more rotation: nothing else arrives
    hr = published_rows(folders["hr-drop"], "utf-8")
    expected_ids = {r[0] for i, r in enumerate(rows, 1) if i not in (malformed_at, unknown_at)}
    assert len(hr) == 98 and {r["emp_id"] for r in hr} == expected_ids
    first = next(r for r in hr if r["emp_id"] == "20001")
    assert first == {"emp_id": "20001", "name": "员工1", "dept_code": "D110", "phone": "139****0001",
                     "email": "emp1@example.com", "hire_date": "2024-02-02", "status": "A"}
    assert not [p for p in folders["hr-drop"].iterdir() if p.name.startswith(".")], "an unpublished HR file"

    route = f"oa-employee-to-hr{suffix}"
    wait_until(lambda: len(dead_letters(node, route)) == 2, 30, what="two dead letters")
    by_reason = {d["reason"]: d for d in dead_letters(node, route)}
    assert set(by_reason) == {"schema", "mapping"}
    assert by_reason["schema"]["error"].startswith(f"employees.csv:{malformed_at + 1}: ")
    assert "field 'dept_code' (from 'dept_name')" in by_reason["mapping"]["error"]
    assert node.metric("syncbus_records_received_total", source="oa-employees-csv") == 100

    # on call: the malformed row's value is its raw line; edited into a JSON object and replayed, it is mapped
    letter = by_reason["schema"]
    record = json.loads(node.cli("dlq", "show", letter["id"]).stdout)["record"]
    assert record["value"] == ",".join(rows[malformed_at - 1])
    assert record["headers"]["syncbus-file"] == "employees.csv"
    assert record["headers"]["syncbus-line"] == str(malformed_at + 1)
    fixed = node.config_dir / "fixed.json"
    fixed.write_text(json.dumps(dict(zip(OA_COLUMNS.split(","), rows[malformed_at - 1][:7], strict=True)),
                                    ensure_ascii=False), encoding="utf-8")
    node.cli("dlq", "edit", letter["id"], "--file", str(fixed), "--reason", "dropped the extra cell")
    node.cli("dlq", "replay", letter["id"], "--reason", "fixed")
    wait_until(lambda: len(published_rows(folders["hr-drop"], "utf-8")) == 99, 60, what="the fixed row in HR")
    assert rows[malformed_at - 1][0] in {r["emp_id"] for r in published_rows(folders["hr-drop"], "utf-8")}

    # HR → OA: HR's changes (UTF-8 with a BOM, as Excel writes it) come back as GBK files for the OA
    changes = as_csv("emp_id,name,dept_code,phone,email,hire_date,status",
                     [["20001", "员工1", "D210", "13900000001", "emp1@example.com", "2024-02-02", "A"],
                      ["20002", "员工2", "D999", "13900000002", "", "", "I"],
                      ["20003", "员工3", "D100", "13900000003", "", "", "L"]])
    (folders["hr-outbox"] / "changes.csv").write_bytes(changes.encode("utf-8-sig"))
    wait_until(lambda: len(published_rows(folders["oa-inbox"], "gbk")) >= 2, 60, what="OA's file")
    oa = sorted(published_rows(folders["oa-inbox"], "gbk"), key=lambda r: r["emp_id"])  # Kafka: by partition
    assert oa == [
        {"emp_id": "20001", "name": "员工1", "dept_name": "会计部", "phone": "139****0001",
         "email": "emp1@example.com", "hire_date": "2024-02-02", "status": "active"},
        {"emp_id": "20003", "name": "员工3", "dept_name": "销售部", "phone": "139****0003", "email": "",
         "hire_date": "", "status": "on_leave"}]
    [unknown] = dead_letters(node, f"hr-employee-to-oa{suffix}")
    assert unknown["reason"] == "mapping" and "D999" in json.dumps(unknown, ensure_ascii=False)
    assert (folders["hr-outbox"] / "processed" / "changes.csv.result.json").exists()


def test_an_undecodable_file_fails_whole_and_a_growing_file_is_never_read_half_way(
        flow: tuple[Node, dict[str, Path]]) -> None:
    node, folders = flow
    outbox = folders["oa-outbox"]
    # UTF-8 text with a stray byte that is invalid in GBK and in UTF-8 alike: undecodable, not "mostly fine"
    broken = as_csv(OA_COLUMNS, oa_export(5)).encode("utf-8") + b"\xff" + "20099,尾行\r\n".encode()
    for encoding in ("gbk", "utf-8"):
        with pytest.raises(UnicodeDecodeError):
            broken.decode(encoding)
    (outbox / "broken.csv").write_bytes(broken)
    wait_until(lambda: (outbox / "failed" / "broken.csv.reason").exists(), 60, what="broken.csv in failed/")
    assert (outbox / "failed" / "broken.csv").read_bytes() == broken
    reason = (outbox / "failed" / "broken.csv.reason").read_text("utf-8")
    assert "not gbk: line 2, " in reason and "nothing of this file was published" in reason  # 员 in UTF-8

    # a file appended to in chunks, each sooner than the settle time (600ms), mid-row included
    data = as_csv(OA_COLUMNS, oa_export(60)).encode("gbk")
    path = outbox / "growing.csv"
    step = len(data) // 12
    with path.open("wb") as f:
        for start in range(0, len(data), step):
            f.write(data[start:start + step])
            f.flush()
            time.sleep(0.25)
    wait_until(lambda: (outbox / "processed" / "growing.csv.result.json").exists(), 60, what="growing.csv done")
    assert (outbox / "processed" / "growing.csv").read_bytes() == data
    result = json.loads((outbox / "processed" / "growing.csv.result.json").read_text("utf-8"))
    assert (result["rows"], result["published"], result["refused"]) == (60, 60, [])
    assert sorted(p.name for p in outbox.iterdir()) == ["failed", "processed"]
    assert sorted(p.name for p in (outbox / "failed").iterdir()) == ["broken.csv", "broken.csv.reason"]
    # nothing of broken.csv reached the bus: exactly the 60 rows of growing.csv did
    wait_until(lambda: len(published_rows(folders["hr-drop"], "utf-8")) >= 60, 60, what="60 rows in HR's files")
    assert node.metric("syncbus_records_received_total", source="oa-employees-csv") == 60
    assert not dead_letters(node, next(p.stem for p in (node.config_dir / "mappings").glob("oa-*.yaml")))
