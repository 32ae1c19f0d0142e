"""The file sink on real folders: one file per record, names, encodings, errors, config.

Collected (append mode) files, rotation and crash repair are in test_file_append.py.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from syncbus.errors import ConfigError, DeliveryError
from syncbus.sinks.file import FileSink, FileSinkConfig
from syncbus.sinks.file_writer import PartFile
from tests.sinks.file_support import CSV_GBK, NOON, employee, listing


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


def folder_becomes_a_file(folder: Path) -> None:
    """A drop folder no write can go into, for root too (root ignores modes, and chattr needs ext4):
    the path now names a regular file, so every create under it fails with ENOTDIR."""
    shutil.rmtree(folder)
    folder.write_text("not a folder\n")


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


async def test_per_record_re_encodes_when_the_sink_sets_an_encoding(open_sink, make_delivery, tmp_path) -> None:
    sink = await open_sink(encoding="gb18030", filename="{key}.{ext}")
    await sink.send(employee(make_delivery, "emp_id,name\r\nE001,吉𠮷\r\n".encode(), key="csv"))
    xml = '<?xml version="1.0" encoding="utf-8"?>\n<EMP><NAME>吉𠮷</NAME></EMP>'.encode()
    await sink.send(employee(make_delivery, xml, "application/xml", key="xml"))
    bom = await open_sink(path=str(tmp_path / "bom"), encoding="utf-8-sig", filename="{key}.{ext}")
    await bom.send(employee(make_delivery, "emp_id,name\r\nE001,张三\r\n".encode(), key="excel"))
    drop = tmp_path / "drop"
    assert (drop / "csv.csv").read_bytes() == "emp_id,name\r\nE001,吉𠮷\r\n".encode("gb18030")
    assert (drop / "xml.xml").read_bytes() == \
        '<?xml version="1.0" encoding="gb18030"?>\n<EMP><NAME>吉𠮷</NAME></EMP>'.encode("gb18030")
    assert (tmp_path / "bom" / "excel.csv").read_bytes() == b"\xef\xbb\xbf" + "emp_id,name\r\nE001,张三\r\n".encode()


async def test_per_record_unencodable_character_names_the_field(open_sink, make_delivery, tmp_path) -> None:
    sink = await open_sink(encoding="gbk")
    body = "emp_id,name\r\nE001,吉𠮷\r\n".encode()
    with pytest.raises(DeliveryError) as caught:
        await sink.send(employee(make_delivery, body, payload={"emp_id": "E001", "name": "吉𠮷"}))
    assert not caught.value.retryable
    assert str(caught.value) == ("hr-drop: field 'name' value '吉𠮷' contains '𠮷' (U+20BB7), which gbk cannot "
                                 "encode; use encoding gb18030 or utf-8")
    assert listing(tmp_path / "drop") == []


async def test_extension_follows_the_content_type(open_sink, make_delivery, tmp_path) -> None:
    sink = await open_sink(filename="{record_id}.{ext}")
    for rid, ctype in [("a", "application/xml; charset=utf-8"), ("b", "application/json"),
                       ("c", "text/csv"), ("d", "application/soap+xml"), ("e", "text/plain"),
                       ("f", "application/octet-stream")]:
        await sink.send(employee(make_delivery, b"x", ctype, record_id=rid))
    assert listing(tmp_path / "drop") == ["a.xml", "b.json", "c.csv", "d.xml", "e.txt", "f.bin"]


async def test_a_sink_with_a_format_refuses_other_records(open_sink, make_delivery, tmp_path) -> None:
    sink = await open_sink(format="csv")
    with pytest.raises(DeliveryError, match="the sink writes csv, the route sends application/json") as caught:
        await sink.send(employee(make_delivery, b"{}", "application/json"))
    assert not caught.value.retryable
    assert listing(tmp_path / "drop") == []


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


async def test_date_and_time_take_strftime_formats(open_sink, make_delivery, tmp_path) -> None:
    sink = await open_sink(filename="employees-{date:%Y%m%d-%H%M%S}-{seq:03d}-{time:%H}.{ext}")
    await sink.send(employee(make_delivery, b"a\n1\n"))
    assert listing(tmp_path / "drop") == ["employees-20261120-120509-001-12.csv"]


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize("mode", ["per_record", "append"])
async def test_a_folder_that_cannot_hold_files_is_permanent(open_sink, make_delivery, tmp_path, mode) -> None:
    sink = await open_sink(mode=mode)
    folder_becomes_a_file(tmp_path / "drop")
    with pytest.raises(DeliveryError) as caught:
        await sink.send(employee(make_delivery, b"a\n1\n"))
    assert not caught.value.retryable
    assert "cannot write" in str(caught.value) and "[ENOTDIR]" in str(caught.value)
    assert (tmp_path / "drop").read_text() == "not a folder\n"


async def test_start_refuses_a_folder_it_may_not_create(tmp_path: Path) -> None:
    (tmp_path / "locked").write_text("a file where a folder should be\n")
    sink = FileSink({"name": "hr-drop", "type": "file", "path": str(tmp_path / "locked" / "drop")})
    with pytest.raises(ConfigError, match=r"hr-drop: cannot write .*drop: Not a directory \[ENOTDIR\]"):
        await sink.start()
    await sink.close()


@pytest.mark.parametrize(("code", "retryable"), [
    (errno.EACCES, False), (errno.EPERM, False), (errno.EROFS, False), (errno.EFBIG, False),
    (errno.ENOSPC, True), (errno.EIO, True), (errno.ESTALE, True), (errno.EDQUOT, True),
])
def test_os_errors_are_classified_by_errno(code: int, retryable: bool) -> None:
    sink = FileSink({"name": "hr-drop", "type": "file", "path": "/srv/hr"})
    err = sink._os_error(OSError(code, os.strerror(code)), "/srv/hr/x.csv")
    assert err.retryable is retryable
    assert str(err) == f"hr-drop: cannot write /srv/hr/x.csv: {os.strerror(code)} [{errno.errorcode[code]}]"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_disk_full_fails_an_append_without_changing_the_file(tmp_path: Path) -> None:
    fd = os.open("/dev/full", os.O_WRONLY)
    part = PartFile(str(tmp_path), "x.csv", fd, "csv", "records", NOON, None)
    try:
        with pytest.raises(OSError) as caught:
            part.append(b"a,b\r\n1,2\r\n")
        assert caught.value.errno == errno.ENOSPC
        assert part.size == 0
    finally:
        part.close()


# ---------------------------------------------------------------------- config


def test_filename_template_is_checked_at_config_time() -> None:
    base = {"name": "hr-drop", "type": "file", "path": "/tmp/x"}
    for template, problem in [("{route}/{date}.csv", "must be a file name, not a path"),
                              ("{employee}.csv", "unknown field {employee}"),
                              ("{route.__class__}.csv", "unknown field"),
                              ("{route!r}.csv", "unknown field"),
                              ("{route:>20}.csv", "{route} takes no format"),
                              ("{date:%D}.csv", "must not produce '/'"),
                              (".{route}.csv", "must not start with '.'"),
                              ("{route", "filename '{route'")]:
        with pytest.raises(ValidationError, match=problem):
            FileSinkConfig.model_validate({**base, "filename": template})
    assert FileSinkConfig.model_validate(base).filename == "{route}-{record_id}.{ext}"
    append = FileSinkConfig.model_validate({**base, "mode": "append"})
    assert append.filename == "{route}-{date:%Y%m%d-%H%M%S}-{seq}.{ext}"
    with pytest.raises(ValidationError, match=r"\{record_id\} would make a file per record"):
        FileSinkConfig.model_validate({**base, "mode": "append", "filename": "{record_id}.csv"})


def test_format_problem_for_the_route_loader() -> None:
    base = {"name": "hr-drop", "type": "file", "path": "/tmp/x"}
    append = FileSinkConfig.model_validate({**base, "mode": "append"})
    assert append.format_problem("xml") is None and append.format_problem("json") is None
    assert append.format_problem("yaml") == "mode append needs csv, json or xml, not yaml"
    csv_only = FileSinkConfig.model_validate({**base, "format": "csv"})
    assert csv_only.format_problem("json") == "the sink writes csv, not json"
    assert FileSinkConfig.model_validate(base).format_problem("xml") is None


def test_encoding_rotate_and_xml_root_options() -> None:
    base = {"name": "hr-drop", "type": "file", "path": "/tmp/x", "mode": "append"}
    for name in ("utf-8", "utf-8-sig", "gbk", "gb18030", "GB18030"):
        assert FileSinkConfig.model_validate({**base, "encoding": name}).encoding == name
    with pytest.raises(ValidationError, match="unknown encoding 'klingon'"):
        FileSinkConfig.model_validate({**base, "encoding": "klingon"})
    with pytest.raises(ValidationError, match="line ends are not single bytes"):
        FileSinkConfig.model_validate({**base, "encoding": "utf-16"})
    rotate = FileSinkConfig.model_validate({**base, "rotate": {"max_bytes": "10MiB", "every": "1h"}}).rotate
    assert (rotate.max_bytes, rotate.every) == (10 * 1024 * 1024, 3600.0)
    assert FileSinkConfig.model_validate({**base, "rotate": {"every": None}}).rotate.every is None
    with pytest.raises(ValidationError, match="every"):
        FileSinkConfig.model_validate({**base, "rotate": {"every": 0}})
    with pytest.raises(ValidationError, match="xml_root"):
        FileSinkConfig.model_validate({**base, "xml_root": "1records"})


def test_every_option_is_described_and_the_examples_validate() -> None:
    assert all(f.description for f in FileSinkConfig.model_fields.values())
    for example in FileSink.examples:
        resolved = {k.removesuffix("_env"): "/tmp/x" if k.endswith("_env") else v for k, v in example.items()}
        FileSinkConfig.model_validate(resolved)
