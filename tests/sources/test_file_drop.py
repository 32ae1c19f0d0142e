"""The ``file_drop`` source on real folders: settle, read, page, move, fail, and the crash contract.

The poll runner tests (test_poller.py) cover scheduling; here the source is
driven page by page the way the runner drives it (poll → publish → store the
cursor → ``committed``), so a crash can be placed between any two steps.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from syncbus.bus.embedded import EmbeddedBus
from syncbus.metrics import Metrics
from syncbus.record import H_FILE, H_LINE
from syncbus.sources.base import PollBatch
from syncbus.sources.file_drop import H_MALFORMED, FileDropConfig, FileDropSource
from syncbus.sources.poller import PollRunner
from syncbus.sources.publisher import Publisher
from syncbus.tracing import TraceRecorder

from .helpers import State, topic_records

HEADER = "emp_id,name,dept_name,phone\r\n"


def employees(n: int, start: int = 1) -> str:
    return HEADER + "".join(f"{i},员工{i},销售部,1391234{i:04d}\r\n" for i in range(start, start + n))


def source(folder: Path, **options: Any) -> FileDropSource:
    return FileDropSource({"name": "oa", "type": "file_drop", "topic": "oa.employees", "path": str(folder),
                           "encoding": "gbk", "key": "emp_id", "settle": 0, **options})


async def drain(src: FileDropSource, cursor: Any = None, limit: int = 500) -> tuple[list[Any], Any]:
    """Poll page after page, committing each like the runner does."""
    records: list[Any] = []
    while True:
        batch = await src.poll(cursor, full=cursor is None, limit=limit)
        records += batch.records
        if batch.records or batch.cursor != cursor:
            await src.committed(batch)
        cursor = batch.cursor
        if not batch.more:
            return records, cursor


@pytest.fixture
def drop(tmp_path: Path) -> Path:
    folder = tmp_path / "outbox"
    folder.mkdir()
    return folder


# -- options ------------------------------------------------------------------------------


def test_defaults_and_refused_options(drop: Path) -> None:
    cfg = FileDropConfig.model_validate({"name": "x", "type": "file_drop", "topic": "t", "path": str(drop)})
    assert (cfg.pattern, cfg.format, cfg.encoding, cfg.delimiter, cfg.settle) == ("*.csv", "csv", "utf-8", ",", 5.0)
    assert cfg.interval == 5.0 and cfg.schedule is None
    cron = FileDropConfig.model_validate({"name": "x", "type": "file_drop", "topic": "t", "path": "p",
                                          "schedule": "0 22 * * *"})
    assert cron.interval is None  # a schedule is not combined with the default interval
    for bad in ({"encoding": "utf-16"}, {"encoding": "klingon"}, {"delimiter": ";;"}, {"pattern": "a/*.csv"},
                {"format": "xlsx"}, {"settle": "-1s"}):
        with pytest.raises(ValidationError):
            FileDropConfig.model_validate({"name": "x", "type": "file_drop", "topic": "t", "path": "p", **bad})


# -- reading -------------------------------------------------------------------------------


async def test_gbk_csv_rows_become_records_with_file_line_key_and_column_order(drop: Path) -> None:
    (drop / "employees.csv").write_bytes(employees(3).encode("gbk"))
    (drop / "notes.txt").write_text("not matched")
    (drop / ".employees.csv.part").write_bytes(employees(1).encode("gbk"))  # hidden: a writer's temp file
    batch = await source(drop).poll(None, full=True, limit=100)
    assert [r.key for r in batch.records] == ["1", "2", "3"]
    first = batch.records[0]
    assert list(orjson.loads(first.value).items()) == [
        ("emp_id", "1"), ("name", "员工1"), ("dept_name", "销售部"), ("phone", "13912340001")]
    assert [(r.headers[H_FILE], r.headers[H_LINE]) for r in batch.records] == [
        ("employees.csv", "2"), ("employees.csv", "3"), ("employees.csv", "4")]
    assert first.content_type == "application/json" and not batch.more


async def test_a_file_is_read_only_after_it_stopped_changing_for_settle(drop: Path) -> None:
    src = source(drop, settle=0.3)
    path = drop / "employees.csv"
    data = employees(40).encode("gbk")
    path.write_bytes(data[:100])
    assert (await src.poll(None, full=True, limit=500)).records == []  # first look
    for chunk in range(100, len(data), 150):  # appended in chunks, each within the settle time
        await asyncio.sleep(0.15)
        with path.open("ab") as f:
            f.write(data[chunk:chunk + 150])
        assert (await src.poll(None, full=True, limit=500)).records == [], "read half-way"
    assert (await src.poll(None, full=True, limit=500)).records == []  # seen complete only now
    await asyncio.sleep(0.35)
    batch = await src.poll(None, full=True, limit=500)
    assert [r.key for r in batch.records] == [str(i) for i in range(1, 41)]


async def test_an_old_mtime_does_not_count_as_settled(drop: Path) -> None:
    """cp -p / rsync keep the source's mtime: only our own looks tell that the file stopped growing."""
    path = drop / "employees.csv"
    path.write_bytes(employees(2).encode("gbk"))
    os.utime(path, (1_000_000_000, 1_000_000_000))
    src = source(drop, settle=0.2)
    assert (await src.poll(None, full=True, limit=10)).records == []
    await asyncio.sleep(0.25)
    assert len((await src.poll(None, full=True, limit=10)).records) == 2


async def test_malformed_rows_are_marked_and_the_rest_goes_through(drop: Path) -> None:
    lines = employees(9).splitlines(keepends=True)
    lines[7] = "7,员工7,销售部,13912340007,多余\r\n"  # line 8 (the header is line 1): one cell too many
    (drop / "employees.csv").write_bytes("".join(lines).encode("gbk"))
    src = source(drop)
    records, _ = await drain(src)
    assert len(records) == 9
    bad = [r for r in records if H_MALFORMED in r.headers]
    assert len(bad) == 1
    assert bad[0].headers[H_MALFORMED] == "employees.csv:8: 5 cells but the header has 4 columns"
    assert bad[0].value.decode() == "7,员工7,销售部,13912340007,多余"  # the raw line, as UTF-8
    assert bad[0].headers[H_LINE] == "8" and bad[0].key is None
    result = json.loads((drop / "processed" / "employees.csv.result.json").read_text())
    assert result["rows"] == 9 and result["published"] == 8
    assert result["refused"] == [{"line": 8, "reason": "5 cells but the header has 4 columns"}]


async def test_done_file_moves_bytes_unchanged_with_a_result_file(drop: Path) -> None:
    data = employees(3).encode("gbk")
    (drop / "employees.csv").write_bytes(data)
    mtime = (drop / "employees.csv").stat().st_mtime_ns
    records, cursor = await drain(source(drop))
    assert len(records) == 3
    assert not (drop / "employees.csv").exists()
    moved = drop / "processed" / "employees.csv"
    assert moved.read_bytes() == data and moved.stat().st_mtime_ns == mtime
    result = json.loads((drop / "processed" / "employees.csv.result.json").read_text())
    assert (result["file"], result["rows"], result["published"], result["refused"]) == ("employees.csv", 3, 3, [])
    assert result["encoding"] == "gbk" and len(result["sha256"]) == 64
    # the same name dropped again the next day does not replace the first
    (drop / "employees.csv").write_bytes(employees(2, start=10).encode("gbk"))
    again, _ = await drain(source(drop), cursor)
    assert [r.key for r in again] == ["10", "11"]
    assert moved.read_bytes() == data
    assert (drop / "processed" / "employees-1.csv.result.json").exists()
    assert len((drop / "processed" / "employees-1.csv").read_bytes()) > 0


@pytest.mark.parametrize(("name", "data", "why"), [
    ("utf8-declared-gbk.csv", "emp_id,name\r\n1,张伟\r\n".encode() + b"\xff\xfe2,x\r\n", "not gbk: line 3"),
    ("no-header.csv", b",name\r\n1,a\r\n", "header column 1 is empty"),
    ("no-key.csv", "id;name\r\n1;a\r\n".encode("gbk"), "no key column 'emp_id'"),
])
async def test_an_undecodable_file_goes_to_failed_with_a_reason_and_publishes_nothing(
        drop: Path, name: str, data: bytes, why: str) -> None:
    (drop / name).write_bytes(data)
    (drop / "good.csv").write_bytes(employees(1).encode("gbk"))
    records, _ = await drain(source(drop))
    assert [r.headers[H_FILE] for r in records] == ["good.csv"]
    assert (drop / "failed" / name).read_bytes() == data
    reason = (drop / "failed" / f"{name}.reason").read_text()
    assert reason.startswith(f"{name}: cannot be read as csv in gbk:") and why in reason
    assert not (drop / name).exists()


async def test_a_file_over_max_bytes_goes_to_failed(drop: Path) -> None:
    (drop / "big.csv").write_bytes(employees(50).encode("gbk"))
    records, _ = await drain(source(drop, max_bytes="1KiB"))
    assert records == []
    assert "larger than max_bytes (1024)" in (drop / "failed" / "big.csv.reason").read_text()


# -- the cursor and crashes ----------------------------------------------------------------


async def test_pages_continue_at_the_cursor_and_ids_repeat_after_a_crash(drop: Path) -> None:
    (drop / "a.csv").write_bytes(employees(5).encode("gbk"))
    src = source(drop)
    page1 = await src.poll(None, full=True, limit=2)
    assert [r.key for r in page1.records] == ["1", "2"] and page1.more
    assert page1.cursor == {"files": {"a.csv": {"size": (drop / "a.csv").stat().st_size,
                                                "mtime_ns": (drop / "a.csv").stat().st_mtime_ns,
                                                "line": 3, "done": False}}}
    page2 = await src.poll(page1.cursor, full=False, limit=2)
    # crash: page 2 was published but its cursor never stored; a new process re-polls from page 1's cursor
    reborn = source(drop)
    again = await reborn.poll(page1.cursor, full=False, limit=2)
    assert [r.id for r in again.records] == [r.id for r in page2.records]
    assert [r.key for r in again.records] == ["3", "4"]
    assert len({r.id for r in page1.records + page2.records}) == 4
    rest, _ = await drain(reborn, again.cursor, limit=2)
    assert [r.key for r in rest] == ["5"]
    assert (drop / "processed" / "a.csv").exists()


async def test_a_crash_between_the_stored_cursor_and_the_move_moves_without_rereading(drop: Path) -> None:
    (drop / "a.csv").write_bytes(employees(2).encode("gbk"))
    batch = await source(drop).poll(None, full=True, limit=10)
    assert batch.cursor["files"]["a.csv"]["done"]
    # crash before committed(): the file is still there; the next process gets the stored cursor
    reborn = source(drop)
    after = await reborn.poll(batch.cursor, full=False, limit=10)
    assert after.records == []
    assert (drop / "processed" / "a.csv").exists() and (drop / "processed" / "a.csv.result.json").exists()
    assert after.cursor == {"files": {}}


async def test_a_file_replaced_after_a_crash_is_read_as_a_new_file(drop: Path) -> None:
    path = drop / "a.csv"
    path.write_bytes(employees(3).encode("gbk"))
    first = await source(drop).poll(None, full=True, limit=10)
    path.write_bytes(employees(4).encode("gbk"))  # the partner re-exported before we moved it
    os.utime(path, ns=(path.stat().st_mtime_ns + 10**9,) * 2)
    again = await source(drop).poll(first.cursor, full=False, limit=10)
    assert [r.key for r in again.records] == ["1", "2", "3", "4"]
    assert not {r.id for r in again.records} & {r.id for r in first.records}


async def test_nothing_new_returns_the_given_cursor(drop: Path) -> None:
    src = source(drop)
    assert (await src.poll(None, full=True, limit=10)) == PollBatch([], None, False)
    cursor = {"files": {}}
    assert (await src.poll(cursor, full=False, limit=10)).cursor is cursor


async def test_a_missing_folder_fails_the_poll_and_check(tmp_path: Path) -> None:
    src = source(tmp_path / "nope")
    assert await src.check() is False
    with pytest.raises(FileNotFoundError):
        await src.poll(None, full=True, limit=10)


# -- other formats ---------------------------------------------------------------------------


async def test_json_lines_json_and_xml(drop: Path) -> None:
    (drop / "a.jsonl").write_text('{"id": 1}\n\n{"id": 2, "x": [1]}\nnot json\n[3]\n', encoding="utf-8")
    records, _ = await drain(source(drop, format="jsonl", pattern="*.jsonl", encoding="utf-8", key="id"))
    assert [(r.headers[H_LINE], r.key, H_MALFORMED in r.headers) for r in records] == [
        ("1", "1", False), ("3", "2", False), ("4", None, True), ("5", None, True)]
    assert records[2].headers[H_MALFORMED].startswith("a.jsonl:4: invalid JSON:")

    (drop / "b.json").write_text('[\n  {"id": "a", "v": "x,]"},\n  {"id": "b"},\n  7\n]\n', encoding="utf-8")
    (drop / "c.json").write_text('\n\n{"id": "c"}', encoding="utf-8")
    records, _ = await drain(source(drop, format="json", pattern="*.json", encoding="utf-8", key="id"))
    assert [(r.headers[H_FILE], r.headers[H_LINE], r.key) for r in records] == [
        ("b.json", "2", "a"), ("b.json", "3", "b"), ("b.json", "4", None), ("c.json", "3", "c")]
    assert records[2].headers[H_MALFORMED] == "b.json:4: element 2 of the array is a number, not an object"

    xml = ('<?xml version="1.0" encoding="GBK"?>\n<employees>\n  <employee id="1"><name>张伟</name></employee>\n'
           '  <employee id="2">\n    <name>李娜</name>\n  </employee>\n</employees>\n')
    (drop / "d.xml").write_bytes(xml.encode("gbk"))
    records, _ = await drain(source(drop, format="xml", pattern="*.xml", encoding="utf-8", key="@id"))
    assert [(r.headers[H_LINE], r.key, orjson.loads(r.value)) for r in records] == [
        ("3", "1", {"@id": "1", "name": "张伟"}), ("4", "2", {"@id": "2", "name": "李娜"})]


async def test_hostile_xml_goes_to_failed(drop: Path) -> None:
    bomb = ('<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>\n'
            '<r><e>&b;</e></r>\n')
    (drop / "bomb.xml").write_text(bomb, encoding="utf-8")
    records, _ = await drain(source(drop, format="xml", pattern="*.xml", encoding="utf-8"))
    assert records == []
    assert "entity" in (drop / "failed" / "bomb.xml.reason").read_text()


# -- with the poll runner and a real bus -------------------------------------------------------


async def test_runner_publishes_every_row_and_moves_the_file(drop: Path, tmp_path: Path, state: State) -> None:
    (drop / "employees.csv").write_bytes(employees(7).encode("gbk"))
    bus = EmbeddedBus(str(tmp_path / "bus.db"))
    await bus.start()
    metrics = Metrics()
    try:
        src = source(drop, batch_size=3)
        runner = PollRunner(src, Publisher(bus, metrics, TraceRecorder(state)), state, metrics, node="n1")
        result = await runner.run()
        assert (result.records, result.pages) == (7, 3)
        records = await topic_records(bus, "oa.employees")
        assert [r.key for r in records] == [str(i) for i in range(1, 8)]
        assert all(r.headers[H_FILE] == "employees.csv" for r in records)
        assert (drop / "processed" / "employees.csv").exists()
        assert state.get_checkpoint("oa") == {"files": {"employees.csv": {
            "size": (drop / "processed" / "employees.csv").stat().st_size,
            "mtime_ns": (drop / "processed" / "employees.csv").stat().st_mtime_ns, "line": 8, "done": True}}}
        again = await runner.run()  # the moved file is dropped from the cursor, nothing re-read
        assert again.records == 0 and state.get_checkpoint("oa") == {"files": {}}
    finally:
        await bus.stop()
