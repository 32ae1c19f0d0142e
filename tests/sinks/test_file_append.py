"""The file sink collecting records into files (mode append) on real folders.

The HR side of the file exchange must only ever see complete files: records go
to a hidden ``.<name>.part`` and the file appears under its final name when it
is rotated (size, clock, changed header) or the sink closes.
"""

from __future__ import annotations

import asyncio
import csv
import errno
import io
import json
import os
import resource
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import xmltodict

from syncbus.errors import DeliveryError
from syncbus.formats import XmlCodec
from syncbus.sinks.file import FileSink
from syncbus.sinks.file_writer import publish_path
from tests.sinks.file_support import CSV_GBK, Clock, employee, listing, row, visible

try:
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def drop(tmp_path: Path) -> Path:
    return tmp_path / "drop"


@pytest.fixture
async def open_sink(drop: Path, clock: Clock) -> AsyncIterator[Callable[..., Any]]:
    sinks: list[FileSink] = []

    async def make(**overrides: Any) -> FileSink:
        values: dict[str, Any] = {"name": "hr-drop", "type": "file", "path": str(drop), "mode": "append",
                                  "filename": "employees-{date:%Y%m%d-%H%M%S}-{seq}.{ext}"}
        values.update(overrides)
        sink = FileSink(values, clock=clock)
        sinks.append(sink)
        await sink.start()
        return sink

    yield make
    for sink in sinks:
        await sink.close()


def parse_csv(path: Path, encoding: str = "utf-8") -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_bytes().decode(encoding), newline="")))


# ---------------------------------------------------------------------- the in-progress file


async def test_records_collect_in_a_hidden_part_file_published_on_close(open_sink, make_delivery, drop) -> None:
    sink = await open_sink()
    await sink.send(row(make_delivery, "E001", "Ann"))
    await sink.send(row(make_delivery, "E002", "Bob"))
    final = "employees-20261120-120509-1.csv"
    assert listing(drop) == [f".{final}.part"]  # nothing under a final name yet
    assert visible(drop) == []
    # each record is on disk (fsynced) once its send returned
    assert (drop / f".{final}.part").read_bytes() == b"emp_id,name\r\nE001,Ann\r\nE002,Bob\r\n"
    await sink.close()
    assert listing(drop) == [final]
    assert parse_csv(drop / final) == [["emp_id", "name"], ["E001", "Ann"], ["E002", "Bob"]]


async def test_a_reader_polling_the_folder_only_ever_sees_complete_files(open_sink, make_delivery, drop) -> None:
    """200 concurrent records, files rotated every ~300 bytes; a poller reads every file the moment it appears."""
    sink = await open_sink(rotate={"max_bytes": 300, "every": None})
    seen: dict[str, list[list[str]]] = {}
    problems: list[str] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            for name in visible(drop):
                if name not in seen:
                    rows = parse_csv(drop / name)
                    seen[name] = rows
                    whole = all(len(r) == 2 and r[1].startswith("Name") for r in rows[1:])
                    if rows[0] != ["emp_id", "name"] or not whole:
                        problems.append(f"{name}: {rows}")

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        await asyncio.gather(*(sink.send(row(make_delivery, f"E{i:03}", f"Name {i}")) for i in range(200)))
        await sink.close()
    finally:
        stop.set()
        poller.join()
    for name in visible(drop):  # what appeared after the poller's last look
        seen.setdefault(name, parse_csv(drop / name))
    assert problems == []
    assert len(seen) > 5
    assert all(os.path.getsize(drop / name) <= 300 for name in seen)
    assert sorted(r[0] for rows in seen.values() for r in rows[1:]) == [f"E{i:03}" for i in range(200)]
    assert [n for n in listing(drop) if n.startswith(".")] == []


async def test_size_rotation_numbers_the_files(open_sink, make_delivery, drop) -> None:
    sink = await open_sink(rotate={"max_bytes": 40})  # header 13 bytes + 11 per row: two rows per file
    for i in range(5):
        await sink.send(row(make_delivery, f"E00{i}", "Ann"))
    # the full files are published as soon as the next record needs a new one
    assert visible(drop) == ["employees-20261120-120509-1.csv", "employees-20261120-120509-2.csv"]
    await sink.close()
    names = visible(drop)
    assert names == [f"employees-20261120-120509-{n}.csv" for n in (1, 2, 3)]
    assert [len(parse_csv(drop / n)) - 1 for n in names] == [2, 2, 1]
    assert all(parse_csv(drop / n)[0] == ["emp_id", "name"] for n in names)


async def test_a_record_larger_than_max_bytes_gets_a_file_of_its_own(open_sink, make_delivery, drop) -> None:
    sink = await open_sink(rotate={"max_bytes": 30})
    await sink.send(row(make_delivery, "E1", "Ann"))
    await sink.send(row(make_delivery, "E2", "A" * 100))
    await sink.send(row(make_delivery, "E3", "Cy"))
    await sink.close()
    assert [[r[0] for r in parse_csv(drop / n)[1:]] for n in visible(drop)] == [["E1"], ["E2"], ["E3"]]


async def test_the_clock_rotates_on_the_hour(open_sink, make_delivery, drop, clock) -> None:
    sink = await open_sink(rotate={"every": "1h", "max_bytes": None})
    clock.now = clock.now.replace(hour=10, minute=59, second=30)
    await sink.send(row(make_delivery, "E1", "Ann"))
    clock.advance(seconds=20)  # 10:59:50: same hour
    await sink.send(row(make_delivery, "E2", "Bob"))
    await sink.rotate_due()
    assert visible(drop) == []
    clock.advance(seconds=15)  # 11:00:05: the 10 o'clock file is due even without another record
    await sink.rotate_due()
    assert visible(drop) == ["employees-20261120-105930-1.csv"]
    await sink.send(row(make_delivery, "E3", "Cy"))
    clock.advance(hours=1)
    await sink.send(row(make_delivery, "E4", "Di"))  # the next record finds the 11 o'clock file due
    assert visible(drop) == ["employees-20261120-105930-1.csv", "employees-20261120-110005-1.csv"]
    await sink.close()
    assert [[r[0] for r in parse_csv(drop / n)[1:]] for n in visible(drop)] == [["E1", "E2"], ["E3"], ["E4"]]


async def test_the_timer_publishes_an_idle_file_by_itself(drop, make_delivery) -> None:
    sink = FileSink({"name": "hr-drop", "type": "file", "path": str(drop), "mode": "append",
                     "filename": "employees-{seq}.csv", "rotate": {"every": "1s"}})
    await sink.start()
    try:
        await sink.send(row(make_delivery, "E1", "Ann"))
        deadline = time.monotonic() + 5
        while not visible(drop) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert visible(drop) == ["employees-1.csv"]  # no close, no further record
        assert parse_csv(drop / "employees-1.csv") == [["emp_id", "name"], ["E1", "Ann"]]
    finally:
        await sink.close()


async def test_a_changed_header_starts_a_new_file(open_sink, make_delivery, drop) -> None:
    sink = await open_sink()
    await sink.send(row(make_delivery, "E1", "Ann"))
    await sink.send(employee(make_delivery, b"emp_id,name,dept_code\r\nE2,Bob,D1\r\n", record_id="2"))
    await sink.send(employee(make_delivery, b"emp_id,name,dept_code\r\nE3,Cy,D2\r\n", record_id="3"))
    await sink.close()
    first, second = visible(drop)
    assert parse_csv(drop / first) == [["emp_id", "name"], ["E1", "Ann"]]
    assert parse_csv(drop / second) == [["emp_id", "name", "dept_code"], ["E2", "Bob", "D1"], ["E3", "Cy", "D2"]]


async def test_a_taken_name_is_never_replaced(open_sink, make_delivery, drop) -> None:
    drop.mkdir()
    (drop / "employees-2026-11-20.csv").write_text("picked up later by HR\n")
    (drop / "numbered-1.csv").write_text("not ours\n")
    plain = await open_sink(filename="employees-{date}.csv")
    numbered = await open_sink(filename="numbered-{seq}.csv")
    for sink in (plain, numbered):
        await sink.send(row(make_delivery, "E1", "Ann"))
        await sink.close()
    assert visible(drop) == ["employees-2026-11-20-1.csv", "employees-2026-11-20.csv",
                             "numbered-1.csv", "numbered-2.csv"]
    assert (drop / "employees-2026-11-20.csv").read_text() == "picked up later by HR\n"
    assert (drop / "numbered-1.csv").read_text() == "not ours\n"


async def test_two_sinks_sharing_a_folder_never_share_a_file(drop, make_delivery, clock) -> None:
    """Two syncbus processes (here: two sinks) writing the same names into one drop folder."""
    config = {"name": "hr-drop", "type": "file", "path": str(drop), "mode": "append", "filename": "emp-{seq}.csv"}
    first, second = FileSink(config, clock=clock), FileSink(config, clock=clock)
    await first.start()
    await second.start()
    await asyncio.gather(*(sink.send(row(make_delivery, f"E{i:02}", f"N{i}"))
                           for i in range(20) for sink in [(first, second)[i % 2]]))
    assert len([n for n in listing(drop) if n.endswith(".part")]) == 2
    await first.close()
    await second.close()
    assert visible(drop) == ["emp-1.csv", "emp-2.csv"]
    rows = [r for n in visible(drop) for r in parse_csv(drop / n)[1:]]
    assert sorted(r[0] for r in rows) == [f"E{i:02}" for i in range(20)]


async def test_series_follow_the_template_values(open_sink, make_delivery, drop) -> None:
    sink = await open_sink(filename="{route}-{key}-{seq}.{ext}")
    await sink.send(employee(make_delivery, b"a\r\n1\r\n", key="D1"))
    await sink.send(employee(make_delivery, b"a\r\n2\r\n", key="D2"))
    await sink.send(employee(make_delivery, b"a\r\n3\r\n", key="D1"))
    await sink.send(employee(make_delivery, b'{"a": 4}', "application/json", key="D1"))
    await sink.close()
    assert visible(drop) == ["oa-employee-to-hr-D1-1.csv", "oa-employee-to-hr-D1-1.jsonl",
                             "oa-employee-to-hr-D2-1.csv"]
    assert (drop / "oa-employee-to-hr-D1-1.csv").read_bytes() == b"a\r\n1\r\n3\r\n"


# ---------------------------------------------------------------------- formats and encodings


@pytest.mark.parametrize(("encoding", "bom"), [("utf-8", b""), ("utf-8-sig", b"\xef\xbb\xbf"), ("gbk", b""),
                                               ("gb18030", b"")])
async def test_csv_in_each_encoding(open_sink, make_delivery, drop, encoding: str, bom: bytes) -> None:
    sink = await open_sink(encoding=encoding)
    names = ["张三", "李四", "王五"]
    for i, name in enumerate(names):
        await sink.send(row(make_delivery, f"E{i}", name, header="工号,姓名"))
    await sink.close()
    (final,) = visible(drop)
    expected = "工号,姓名\r\n" + "".join(f"E{i},{n}\r\n" for i, n in enumerate(names))
    python_codec = "utf-8" if encoding == "utf-8-sig" else encoding
    assert (drop / final).read_bytes() == bom + expected.encode(python_codec)


async def test_gbk_bodies_from_the_route_are_kept_or_re_encoded(open_sink, make_delivery, drop) -> None:
    body = "工号,姓名\r\nE1,张三\r\n".encode("gbk")
    kept = await open_sink(filename="kept-{seq}.csv")
    utf8 = await open_sink(filename="utf8-{seq}.csv", encoding="utf-8")
    for sink in (kept, utf8):
        await sink.send(employee(make_delivery, body, CSV_GBK))
        await sink.close()
    assert (drop / "kept-1.csv").read_bytes() == body
    assert (drop / "utf8-1.csv").read_bytes() == "工号,姓名\r\nE1,张三\r\n".encode()


async def test_a_character_gbk_lacks_fails_only_that_record_naming_it(open_sink, make_delivery, drop) -> None:
    sink = await open_sink(encoding="gbk")
    await sink.send(row(make_delivery, "E1", "张三"))
    with pytest.raises(DeliveryError) as caught:
        await sink.send(row(make_delivery, "E2", "吉𠮷"))
    assert not caught.value.retryable
    assert "field 'name' value '吉𠮷' contains '𠮷' (U+20BB7), which gbk cannot encode" in str(caught.value)
    await sink.send(row(make_delivery, "E3", "王五"))
    await sink.close()
    (final,) = visible(drop)
    assert parse_csv(drop / final, "gbk") == [["emp_id", "name"], ["E1", "张三"], ["E3", "王五"]]


async def test_json_lines(open_sink, make_delivery, drop) -> None:
    sink = await open_sink()
    pretty = b'{\n  "emp_id": "E1",\n  "note": "two\\nlines"\n}\n'
    await sink.send(employee(make_delivery, pretty, "application/json"))
    await sink.send(employee(make_delivery, '{"emp_id":"E2","name":"张三"}'.encode(), "application/json"))
    await sink.close()
    (final,) = visible(drop)
    assert final.endswith(".jsonl")
    lines = (drop / final).read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 3
    assert [json.loads(line) for line in lines[:2]] == [{"emp_id": "E1", "note": "two\nlines"},
                                                        {"emp_id": "E2", "name": "张三"}]


async def test_xml_records_inside_one_root(open_sink, make_delivery, drop) -> None:
    sink = await open_sink(encoding="gb18030", xml_root="employees")
    codec = XmlCodec(root="EMP", pretty=True)
    people = [{"ID": "E1", "NAME": "吉𠮷", "NOTE": "line one\nline two"}, {"@status": "A", "ID": "E2", "NAME": "Bob"}]
    for i, person in enumerate(people):
        await sink.send(employee(make_delivery, codec.encode(person), "application/xml", record_id=str(i)))
    await sink.close()
    (final,) = visible(drop)
    data = (drop / final).read_bytes()
    assert data.startswith(b'<?xml version="1.0" encoding="gb18030"?>\n<employees>\n')
    assert data.endswith(b"</employees>\n")
    assert len(data.splitlines()) == 5  # declaration, root, one line per record, closing root
    assert XmlCodec().decode(data) == {"employees": {"EMP": people}}  # expat itself has no gb18030


async def test_append_refuses_other_content(open_sink, make_delivery) -> None:
    sink = await open_sink()
    with pytest.raises(DeliveryError, match="mode append needs csv, json or xml, not text/plain") as caught:
        await sink.send(employee(make_delivery, b"hello", "text/plain"))
    assert not caught.value.retryable


async def test_concurrent_appends_are_whole_rows_and_one_header(open_sink, make_delivery, drop) -> None:
    sink = await open_sink(filename="many-{seq}.csv")
    await asyncio.gather(*[
        sink.send(employee(make_delivery, f'emp_id,name\r\nE{i:03},"Name\r\n{i}"\r\n'.encode(),
                           record_id=str(i)))
        for i in range(200)])
    await sink.close()
    parsed = parse_csv(drop / "many-1.csv")
    assert parsed[0] == ["emp_id", "name"]
    assert sorted(parsed[1:]) == [[f"E{i:03}", f"Name\r\n{i}"] for i in range(200)]


# ---------------------------------------------------------------------- failures and crashes


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE and SIGXFSZ (POSIX)")
async def test_a_failed_append_leaves_no_half_record(open_sink, make_delivery, drop) -> None:
    sink = await open_sink(filename="big-{seq}.csv")
    await sink.send(employee(make_delivery, b"a,b\n" + b"1,2\n" * 250_000))  # 1 MB: above anything else written
    (part,) = [p for p in drop.iterdir()]
    size = part.stat().st_size
    record = employee(make_delivery, b"a,b\n3,4444444444444444\n", record_id="2")
    # A file size limit just past the end: the kernel writes 5 bytes of the record, then refuses (EFBIG).
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 5, hard))
    try:
        with pytest.raises(DeliveryError, match=r"File too large \[EFBIG\]"):
            await sink.send(record)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert part.stat().st_size == size  # truncated back: no "3,44" fragment
    await sink.send(record)
    await sink.close()
    assert (drop / "big-1.csv").read_bytes() == b"a,b\n" + b"1,2\n" * 250_000 + b"3,4444444444444444\n"


async def test_a_deleted_part_file_is_recreated_with_its_records(open_sink, make_delivery, drop) -> None:
    sink = await open_sink(filename="emp-{seq}.csv")
    await sink.send(row(make_delivery, "E1", "Ann"))
    for part in drop.iterdir():
        part.unlink()  # an over-eager cleanup job
    await sink.send(row(make_delivery, "E2", "Bob"))
    await sink.close()
    assert parse_csv(drop / "emp-1.csv") == [["emp_id", "name"], ["E1", "Ann"], ["E2", "Bob"]]


async def test_start_publishes_what_a_crashed_run_left(drop, make_delivery, clock) -> None:
    drop.mkdir()
    # CSV: two whole records, then a record torn inside a quoted line break (never acknowledged)
    (drop / ".emp-1.csv.part").write_bytes(b'emp_id,name\r\nE1,Ann\r\nE2,"Bob\r\nsmith"\r\nE3,"Cy\r\n')
    # XML: no closing root yet, a torn last record
    (drop / ".emp-1.xml.part").write_bytes(
        b'<?xml version="1.0" encoding="utf-8"?>\n<records>\n<E><ID>1</ID></E>\n<E><I')
    (drop / ".emp-2.csv.part").write_bytes(b"emp_id,na")  # not one whole record: dropped
    (drop / ".other-1.csv.part").write_bytes(b"a\r\n1\r\n")  # another template's: left alone
    (drop / "emp-1.csv").write_bytes(b"already published\n")  # the name is taken meanwhile
    sink = FileSink({"name": "hr-drop", "type": "file", "path": str(drop), "mode": "append",
                     "filename": "emp-{seq}.{ext}"}, clock=clock)
    await sink.start()
    await sink.close()
    assert listing(drop) == [".other-1.csv.part", "emp-1-1.csv", "emp-1.csv", "emp-1.xml"]
    assert parse_csv(drop / "emp-1-1.csv") == [["emp_id", "name"], ["E1", "Ann"], ["E2", "Bob\r\nsmith"]]
    assert xmltodict.parse((drop / "emp-1.xml").read_bytes()) == {"records": {"E": {"ID": "1"}}}


@pytest.mark.skipif(fcntl is None, reason="needs flock (POSIX)")
async def test_start_leaves_a_file_another_process_is_writing(drop, clock) -> None:
    drop.mkdir()
    part = drop / ".emp-1.csv.part"
    part.write_bytes(b"emp_id\r\nE1\r\n")
    with open(part, "rb") as held:  # a live writer holds its lock
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        sink = FileSink({"name": "hr-drop", "type": "file", "path": str(drop), "mode": "append",
                         "filename": "emp-{seq}.{ext}"}, clock=clock)
        await sink.start()
        await sink.close()
        assert listing(drop) == [".emp-1.csv.part"]


async def test_a_name_taken_while_the_file_was_in_progress_is_not_replaced(open_sink, make_delivery, drop) -> None:
    plain = await open_sink(filename="employees-{date}.csv")
    numbered = await open_sink(filename="numbered-{seq}.csv")
    for sink in (plain, numbered):
        await sink.send(row(make_delivery, "E1", "Ann"))
    (drop / "employees-2026-11-20.csv").write_text("someone else's\n")
    (drop / "numbered-1.csv").write_text("someone else's\n")
    for sink in (plain, numbered):
        await sink.close()
    assert visible(drop) == ["employees-2026-11-20-1.csv", "employees-2026-11-20.csv",
                             "numbered-1.csv", "numbered-2.csv"]
    assert (drop / "employees-2026-11-20.csv").read_text() == "someone else's\n"
    assert (drop / "numbered-1.csv").read_text() == "someone else's\n"
    assert parse_csv(drop / "numbered-2.csv") == [["emp_id", "name"], ["E1", "Ann"]]


def test_publishing_without_hard_links_falls_back_to_rename(tmp_path: Path, monkeypatch) -> None:
    """SMB/CIFS and some FUSE shares refuse link(): rename, still never over an existing file."""
    (tmp_path / ".emp-1.csv.part").write_bytes(b"emp_id\r\nE1\r\n")
    (tmp_path / "emp-1.csv").write_bytes(b"taken\n")

    def no_links(src: str, dst: str) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted", src)

    monkeypatch.setattr(os, "link", no_links)
    assert publish_path(str(tmp_path), str(tmp_path / ".emp-1.csv.part"), ["emp-1.csv", "emp-2.csv"]) == "emp-2.csv"
    assert listing(tmp_path) == ["emp-1.csv", "emp-2.csv"]
    assert (tmp_path / "emp-1.csv").read_bytes() == b"taken\n"
