"""get_codec / make_codec / codec_for_content_type: the names other packages call."""

from __future__ import annotations

import pytest

from syncbus.errors import ConfigError, DecodeError, SyncbusError
from syncbus.formats import (
    FORMATS,
    Codec,
    CsvCodec,
    JsonCodec,
    UnsupportedFormatError,
    XmlCodec,
    codec_for_content_type,
    get_codec,
    make_codec,
)


def test_get_codec() -> None:
    assert FORMATS == ("json", "xml", "csv")
    for name, cls, ct in (("json", JsonCodec, "application/json"), ("xml", XmlCodec, "application/xml"),
                          ("csv", CsvCodec, "text/csv")):
        codec = get_codec(name)
        assert isinstance(codec, cls)
        assert isinstance(codec, Codec)
        assert codec.name == name
        assert codec.content_type == ct
        assert get_codec(name.upper()) is codec


def test_unknown_format() -> None:
    with pytest.raises(UnsupportedFormatError, match="unsupported format 'yaml'") as info:
        get_codec("yaml")
    assert isinstance(info.value, SyncbusError)
    assert not isinstance(info.value, DecodeError)
    with pytest.raises(UnsupportedFormatError):
        make_codec("edifact", root="x")


def test_make_codec() -> None:
    xml = make_codec("xml", root="ORDERS05", pretty=True)
    assert isinstance(xml, XmlCodec)
    assert (xml.root, xml.pretty) == ("ORDERS05", True)
    assert xml.encode({"VBELN": "1"}) == (
        b'<?xml version="1.0" encoding="utf-8"?>\n<ORDERS05>\n\t<VBELN>1</VBELN>\n</ORDERS05>')
    csv = make_codec("csv", delimiter=";", encoding="gbk", columns=["a"])
    assert isinstance(csv, CsvCodec)
    assert csv.encode({"a": "张"}) == "a\r\n张\r\n".encode("gbk")
    assert make_codec("json") is get_codec("json")
    with pytest.raises(ConfigError, match="json codec: unknown option 'root'"):
        make_codec("json", root="x")


@pytest.mark.parametrize(("ct", "name"), [
    ("application/json", "json"),
    ("application/json; charset=utf-8", "json"),
    ("Application/JSON", "json"),
    ("application/problem+json", "json"),
    ("application/vnd.crm.order.v2+json", "json"),
    ("text/json", "json"),
    ("application/xml", "xml"),
    ("text/xml; charset=UTF-8", "xml"),
    ("application/soap+xml; charset=utf-8; action=\"urn:x\"", "xml"),
    ("application/atom+xml", "xml"),
    ("text/csv", "csv"),
    ("text/csv; header=present", "csv"),
    ("", "json"),
    (None, "json"),
])
def test_codec_for_content_type(ct: str | None, name: str) -> None:
    assert codec_for_content_type(ct).name == name


def test_charset_parameter_selects_the_encoding() -> None:
    csv = codec_for_content_type("text/csv; charset=GBK")
    assert isinstance(csv, CsvCodec)
    assert csv.decode("姓名\r\n张伟\r\n".encode("gbk")) == [{"姓名": "张伟"}]
    assert codec_for_content_type("text/csv; charset=gbk") is codec_for_content_type("text/csv; charset=gbk")
    xml = codec_for_content_type('text/xml; charset="gb18030"')
    assert xml.decode("<名>张伟</名>".encode("gb18030")) == {"名": "张伟"}


@pytest.mark.parametrize("ct", [
    "text/plain", "application/octet-stream", "multipart/form-data; boundary=x", "application/json; charset=latin-1",
    "text/csv; charset=klingon", "application/x-www-form-urlencoded",
])
def test_unsupported_content_types(ct: str) -> None:
    with pytest.raises(UnsupportedFormatError):
        codec_for_content_type(ct)
