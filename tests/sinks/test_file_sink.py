"""The file sink on real folders: atomic per-record files, appended CSV and JSON Lines, errors, names."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import resource
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from syncbus.errors import ConfigError, DeliveryError
from syncbus.sinks.base import Delivery
from syncbus.sinks.file import FileSink, FileSinkConfig

CSV_UTF8 = "text/csv; charset=utf-8"
CSV_GBK = "text/csv; charset=gbk"
NOON = datetime(2026, 11, 20, 12, 5, 9)


def employee(make_delivery: Callable[..., Delivery], body: bytes, content_type: str = CSV_UTF8,
             record_id: str = "rec-1", key: str | None = "E001", **more: Any) -> Delivery:
    return make_delivery(route="oa-employee-to-hr", sink="hr-drop", record_id=record_id, key=key,
                         idempotency_key=f"oa-employee-to-hr:{key}:{record_id}", body=body,
                         content_type=content_type, **more)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
async def open_sink(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    sinks: list[FileSink] = []

    async def make(**overrides: Any) -> FileSink:
        values: dict[str, Any] = {"name": "hr-drop", "type": "file", "path": str(tmp_path / "drop")}
        values.update(overrides)
        sink = FileSink(values, clock=lambda: NOON)
        sinks.append(sink)
        await sink.start()
        return sink

    yield make
    for sink in sinks:
        await sink.close()


# ---------------------------------------------------------------------- per record


async def test_per_record_writes_the_body_bytes_and_a_replay_overwrites(open_sink, make_delivery,
                                                                         tmp_path) -> None:
    sink = await open_sink()
    drop = tmp_path / "drop"
    assert drop.is_dir()  # created at start
    body = "emp_id,name\r\nE001,张三\r\n".encode("gbk")
    await sink.send(employee(make_delivery, body, CSV_GBK))
    assert listing(drop) == ["oa-employee-to-hr-rec-1.csv"]
    assert (drop / "oa-employee-to-hr-rec-1.csv").read_bytes() == body
    replay = "emp_id,name\r\nE001,李四\r\n".encode("gbk")
    await sink.send(employee(make_delivery, replay, CSV_GBK))
    assert listing(drop) == ["oa-employee-to-hr-rec-1.csv"]  # same file, no temp files left
    assert (drop / "oa-employee-to-hr-rec-1.csv").read_bytes() == replay


async def test_per_record_failure_leaves_no_temp_file(open_sink, make_delivery, tmp_path) -> None:
    sink = await open_sink()
    drop = tmp_path / "drop"
    (drop / "oa-employee-to-hr-rec-1.json").mkdir()  # the final name is taken by a folder
    (drop / "oa-employee-to-hr-rec-1.json" / "keep").write_text("x")
    with pytest.raises(DeliveryError) as caught:
        await sink.send(employee(make_delivery, b'{"emp_id": "E001"}', "application/json"))
    assert not caught.value.retryable
    assert "cannot write" in str(caught.value) and "oa-employee-to-hr-rec-1.json" in str(caught.value)
    assert listing(drop) == ["oa-employee-to-hr-rec-1.json"]


async def test_extension_follows_the_content_type(open_sink, make_delivery, tmp_path) -> None:
    sink = await open_sink(filename="{record_id}.{ext}")
    for rid, ctype in [("a", "application/xml; charset=utf-8"), ("b", "application/json"),
                       ("c", "text/csv"), ("d", "application/soap+xml"), ("e", "text/plain"),
                       ("f", "application/octet-stream")]:
        await sink.send(employee(make_delivery, b"x", ctype, record_id=rid))
    assert listing(tmp_path / "drop") == ["a.xml", "b.json", "c.csv", "d.xml", "e.txt", "f.bin"]


async def test_filename_template_and_unsafe_record_values(open_sink, make_delivery, tmp_path) -> None:
    sink = await open_sink(filename="{sink}_{key}_{date}_{time}.{ext}")
    await sink.send(employee(make_delivery, b"{}", "application/json", key="E 7"))
    await sink.send(employee(make_delivery, b"{}", "application/json", key="../../etc/passwd"))
    await sink.send(employee(make_delivery, b"{}", "application/json", key=None))
    assert listing(tmp_path / "drop") == [
        "hr-drop_E_7_2026-11-20_120509.json",
        "hr-drop__._.._etc_passwd_2026-11-20_120509.json",  # no slash left, no leading dot
        "hr-drop___2026-11-20_120509.json",
    ]
    assert listing(tmp_path) == ["drop"]  # nothing escaped the folder


def test_filename_template_is_checked_at_config_time() -> None:
    base = {"name": "hr-drop", "type": "file", "path": "/tmp/x"}
    for template, problem in [("{route}/{date}.csv", "must be a file name, not a path"),
                              ("{employee}.csv", "unknown field {employee}"),
                              ("{route.__class__}.csv", "unknown field"),
                              ("{route!r}.csv", "unknown field"),
                              (".{route}.csv", "must not start with '.'"),
                              ("{route", "filename '{route'")]:
        with pytest.raises(ValidationError, match=problem):
            FileSinkConfig.model_validate({**base, "filename": template})
    assert FileSinkConfig.model_validate(base).filename == "{route}-{record_id}.{ext}"
    append = FileSinkConfig.model_validate({**base, "mode": "append"})
    assert append.filename == "{route}-{date}.{ext}"
    assert append.format_problem("xml") == "mode append needs csv or json, not xml (use mode per_record for xml)"
    assert append.format_problem("csv") is None
    assert FileSinkConfig.model_validate(base).format_problem("xml") is None


# ---------------------------------------------------------------------- append


async def test_append_csv_writes_the_header_once(open_sink, make_delivery, tmp_path) -> None:
    sink = await open_sink(mode="append")
    await sink.send(employee(make_delivery, b"emp_id,name\r\nE001,Ann\r\n"))
    await sink.send(employee(make_delivery, b"emp_id,name\r\nE002,Bob\r\nE003,Cy\r\n", record_id="rec-2"))
    path = tmp_path / "drop" / "oa-employee-to-hr-2026-11-20.csv"
    assert listing(tmp_path / "drop") == [path.name]
    assert path.read_bytes() == b"emp_id,name\r\nE001,Ann\r\nE002,Bob\r\nE003,Cy\r\n"


async def test_append_csv_keeps_gbk_and_utf8_bytes(open_sink, make_delivery, tmp_path) -> None:
    gbk = await open_sink(mode="append", filename="gbk-{date}.csv")
    utf8 = await open_sink(mode="append", filename="utf8-{date}.csv")
    header = "工号,姓名\r\n"
    names = ["张三", "李四", "王五"]
    for i, name in enumerate(names):
        text = f"{header}E{i},{name}\r\n"
        await gbk.send(employee(make_delivery, text.encode("gbk"), CSV_GBK, record_id=str(i)))
        await utf8.send(employee(make_delivery, b"\xef\xbb\xbf" + text.encode(), CSV_UTF8, record_id=str(i)))
    expected = header + "".join(f"E{i},{n}\r\n" for i, n in enumerate(names))
    assert (tmp_path / "drop" / "gbk-2026-11-20.csv").read_bytes() == expected.encode("gbk")
    # The BOM of the first body stays at the start of the file; later bodies lose theirs with the header.
    assert (tmp_path / "drop" / "utf8-2026-11-20.csv").read_bytes() == b"\xef\xbb\xbf" + expected.encode()


async def test_append_csv_with_quoted_newlines(open_sink, make_delivery, tmp_path) -> None:
    sink = await open_sink(mode="append", filename="q.csv")
    first = b'emp_id,"note\nlong"\nE1,"line one\nline two"\n'
    second = b'emp_id,"note\nlong"\nE2,"say ""hi""\nbye"\n'
    await sink.send(employee(make_delivery, first))
    await sink.send(employee(make_delivery, second, record_id="2"))
    text = (tmp_path / "drop" / "q.csv").read_bytes().decode()
    parsed = list(csv.reader(io.StringIO(text, newline="")))
    assert parsed == [["emp_id", "note\nlong"], ["E1", "line one\nline two"], ["E2", 'say "hi"\nbye']]


async def test_append_csv_refuses_a_different_header(open_sink, make_delivery, tmp_path) -> None:
    sink = await open_sink(mode="append", filename="h.csv")
    await sink.send(employee(make_delivery, b"emp_id,name\nE1,Ann\n"))
    with pytest.raises(DeliveryError) as caught:
        await sink.send(employee(make_delivery, b"emp_id,name,dept_code\nE2,Bob,D1\n"))
    assert not caught.value.retryable
    assert "the CSV header of" in str(caught.value) and "(emp_id,name)" in str(caught.value)
    assert (tmp_path / "drop" / "h.csv").read_bytes() == b"emp_id,name\nE1,Ann\n"


async def test_append_csv_without_header_and_missing_final_newline(open_sink, make_delivery,
                                                                   tmp_path) -> None:
    sink = await open_sink(mode="append", filename="n.csv")
    await sink.send(employee(make_delivery, b"a,b\r\n1,2"))  # no line end after the last row
    await sink.send(employee(make_delivery, b"3,4\r\n", "text/csv; header=absent"))
    assert (tmp_path / "drop" / "n.csv").read_bytes() == b"a,b\r\n1,2\r\n3,4\r\n"


async def test_append_json_lines(open_sink, make_delivery, tmp_path) -> None:
    sink = await open_sink(mode="append")
    pretty = b'{\n  "emp_id": "E1",\n  "note": "two\\nlines"\n}\n'
    await sink.send(employee(make_delivery, pretty, "application/json"))
    await sink.send(employee(make_delivery, '{"emp_id":"E2","name":"张三"}'.encode(), "application/json"))
    path = tmp_path / "drop" / "oa-employee-to-hr-2026-11-20.jsonl"
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 3
    assert [json.loads(line) for line in lines[:2]] == [{"emp_id": "E1", "note": "two\nlines"},
                                                        {"emp_id": "E2", "name": "张三"}]


async def test_append_refuses_xml(open_sink, make_delivery) -> None:
    sink = await open_sink(mode="append")
    with pytest.raises(DeliveryError, match="mode append needs csv or json, not application/xml") as caught:
        await sink.send(employee(make_delivery, b"<a/>", "application/xml"))
    assert not caught.value.retryable


async def test_append_refuses_utf16_csv(open_sink, make_delivery) -> None:
    sink = await open_sink(mode="append")
    with pytest.raises(DeliveryError, match="cannot append CSV in charset 'utf-16'") as caught:
        await sink.send(employee(make_delivery, "a\r\n1\r\n".encode("utf-16"), "text/csv; charset=utf-16"))
    assert not caught.value.retryable


async def test_concurrent_appends_are_whole_rows_and_one_header(open_sink, make_delivery, tmp_path) -> None:
    sink = await open_sink(mode="append", filename="many.csv")
    await asyncio.gather(*[
        sink.send(employee(make_delivery, f'emp_id,name\r\nE{i:03},"Name\r\n{i}"\r\n'.encode(),
                           record_id=str(i)))
        for i in range(200)])
    text = (tmp_path / "drop" / "many.csv").read_bytes().decode()
    parsed = list(csv.reader(io.StringIO(text, newline="")))
    assert parsed[0] == ["emp_id", "name"]
    assert sorted(parsed[1:]) == [[f"E{i:03}", f"Name\r\n{i}"] for i in range(200)]


async def test_append_recreates_a_removed_folder(open_sink, make_delivery, tmp_path) -> None:
    sink = await open_sink(mode="append", filename="r.csv")
    shutil.rmtree(tmp_path / "drop")
    await sink.send(employee(make_delivery, b"a\n1\n"))
    assert (tmp_path / "drop" / "r.csv").read_bytes() == b"a\n1\n"


# ---------------------------------------------------------------------- errors


@contextlib.contextmanager
def unwritable(folder: Path) -> Iterator[None]:
    """Make a folder unwritable for this process: chmod for users; root ignores modes, so chattr +i."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root on a filesystem without chattr +i: cannot make a folder unwritable")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(folder)], check=True)


@pytest.mark.parametrize("mode", ["per_record", "append"])
async def test_permission_error_is_permanent(open_sink, make_delivery, tmp_path, mode) -> None:
    sink = await open_sink(mode=mode)
    with unwritable(tmp_path / "drop"):
        with pytest.raises(DeliveryError) as caught:
            await sink.send(employee(make_delivery, b"a\n1\n"))
        assert not caught.value.retryable
        assert "cannot write" in str(caught.value)
        assert "[EACCES]" in str(caught.value) or "[EPERM]" in str(caught.value)
    assert listing(tmp_path / "drop") == []


async def test_start_refuses_a_folder_it_may_not_create(tmp_path: Path) -> None:
    parent = tmp_path / "locked"
    parent.mkdir()
    with unwritable(parent):
        sink = FileSink({"name": "hr-drop", "type": "file", "path": str(parent / "drop")})
        with pytest.raises(ConfigError, match=r"hr-drop: cannot write .*drop"):
            await sink.start()
        await sink.close()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
async def test_disk_full_is_retryable(open_sink, make_delivery, tmp_path) -> None:
    sink = await open_sink(mode="append", filename="full.csv")
    (tmp_path / "drop" / "full.csv").symlink_to("/dev/full")  # every write: ENOSPC
    with pytest.raises(DeliveryError) as caught:
        await sink.send(employee(make_delivery, b"a\n1\n"))
    assert caught.value.retryable
    assert "No space left on device [ENOSPC]" in str(caught.value)


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE and SIGXFSZ (POSIX)")
async def test_a_failed_append_leaves_no_half_record(open_sink, make_delivery, tmp_path) -> None:
    sink = await open_sink(mode="append", filename="big.csv")
    path = tmp_path / "drop" / "big.csv"
    start = b"a,b\n" + b"1,2\n" * 250_000  # 1 MB: larger than anything else this process writes meanwhile
    path.write_bytes(start)
    record = employee(make_delivery, b"a,b\n3,4444444444444444\n")
    # A file size limit just past the end: the kernel writes 5 bytes of the record, then refuses (EFBIG).
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(start) + 5, hard))
    try:
        with pytest.raises(DeliveryError, match=r"File too large \[EFBIG\]"):
            await sink.send(record)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert path.read_bytes() == start  # truncated back: no "3,44" fragment
    await sink.send(record)
    assert path.read_bytes() == start + b"3,4444444444444444\n"
