"""XML decode: xmltodict's model, and refusal of every known XML attack, fast and small."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import xmltodict

from syncbus.errors import DecodeError
from syncbus.formats import XmlCodec, get_codec
from tests.formats.hostile import BILLION_LAUGHS, assert_refused

DATA = Path(__file__).parent / "data"


@pytest.fixture
def xml() -> XmlCodec:
    codec = get_codec("xml")
    assert isinstance(codec, XmlCodec)
    return codec


# ------------------------------------------------------------------ the dict model


@pytest.mark.parametrize("doc", [
    b"<r/>",
    b"<r>  </r>",
    b"<r>  text  </r>",
    b'<r a="1" b=""/>',
    b'<r a="1">text</r>',
    b"<r><a>1</a><b>2</b><a>3</a></r>",
    b"<r><a/><a></a><a>x</a></r>",
    b"<r>head<a>1</a>tail</r>",
    b'<r><a x="1">t</a><a>u</a><a x="2"/></r>',
    b"<r><!-- comment --><?pi data?><a><![CDATA[<not> & markup]]></a></r>",
    b"<r>&amp;&lt;&gt;&quot;&apos;&#x4e2d;&#25991;</r>",
    b'<r xmlns="urn:a" xmlns:p="urn:p"><p:a p:attr="v">1</p:a><a/></r>',
    b"<r>\n  <a>\n    <b>deep</b>\n  </a>\n</r>\n",
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<r>x</r>',
    b"\xef\xbb\xbf<r>bom</r>",
    "<订单 编号=\"A1\"><客户>上海东方贸易有限公司</客户></订单>".encode(),
    b"<r>line1\r\nline2\rline3</r>",
    b'<r a="x&#10;y" b="tab&#9;here"/>',
])
def test_decode_matches_xmltodict_parse(xml: XmlCodec, doc: bytes) -> None:
    assert xml.decode(doc) == xmltodict.parse(doc)


def test_decode_repeated_elements_and_attributes(xml: XmlCodec) -> None:
    doc = b'<order id="7"><line no="1">A</line><line no="2">B</line><note/></order>'
    assert xml.decode(doc) == {
        "order": {
            "@id": "7",
            "line": [{"@no": "1", "#text": "A"}, {"@no": "2", "#text": "B"}],
            "note": None,
        }
    }


def test_decode_golden_orders05_idoc(xml: XmlCodec) -> None:
    from tests.formats.idoc import orders05

    for name in ("orders05.xml", "orders05_pretty.xml"):
        assert xml.decode((DATA / name).read_bytes()) == orders05()


def test_decode_accepts_str_bytearray_memoryview(xml: XmlCodec) -> None:
    assert xml.decode("<r>中</r>") == {"r": "中"}
    # Text is already decoded: a declaration inside it does not apply any more.
    assert xml.decode('<?xml version="1.0" encoding="GBK"?><r>中</r>') == {"r": "中"}
    assert xml.decode(bytearray(b"<r>1</r>")) == {"r": "1"}
    assert xml.decode(memoryview(b"<r>1</r>")) == {"r": "1"}


def test_declared_legacy_encodings_are_transcoded(xml: XmlCodec) -> None:
    text = '<?xml version="1.0" encoding="{}"?>\n<客户><名称>上海东方贸易有限公司</名称></客户>'
    for enc in ("GBK", "GB18030", "gb2312", "UTF-16"):
        assert xml.decode(text.format(enc).encode(enc)) == {"客户": {"名称": "上海东方贸易有限公司"}}
    latin = '<?xml version="1.0" encoding="ISO-8859-1"?><r>café</r>'.encode("latin-1")
    assert xml.decode(latin) == {"r": "café"}


def test_configured_encoding_is_the_fallback_without_declaration() -> None:
    body = "<r>张三</r>".encode("gbk")
    assert XmlCodec(encoding="gbk").decode(body) == {"r": "张三"}
    # A declaration wins over the configured fallback.
    declared = '<?xml version="1.0" encoding="utf-8"?><r>张三</r>'.encode()
    assert XmlCodec(encoding="gbk").decode(declared) == {"r": "张三"}
    with pytest.raises(DecodeError, match=r"line 1, column 4 .*invalid UTF-8"):
        get_codec("xml").decode(body)


# ------------------------------------------------------------------ malformed input


@pytest.mark.parametrize(("doc", "where", "what"), [
    (b"<r>\n  <a>caf\xc3\xa9 \xff</a>\n</r>", "line 2, column 11 (byte 15)", r"invalid UTF-8 byte sequence b'\xff'"),
    (b"<r><a>1</a>", "line 1, column 12", "no element found (truncated document?)"),
    (b"<r><a x='1", "line 1, column 4", "unclosed token (truncated document?)"),
    (b"<r>\xe4\xb8", "line 1, column 4", "partial character (truncated document?)"),
    (b"", "line 1, column 1", "no element found"),
    (b"<r></s>", "line 1, column 6", "mismatched tag"),
    (b"<r/><r/>", "line 1, column 5", "junk after document element"),
    (b"<r>\x01</r>", "line 1, column 4", "not well-formed"),
    (b"<r>&#1;</r>", "line 1, column 4", "reference to invalid character number"),
    (b"<r>&nbsp;</r>", "line 1, column 4", "undefined entity"),
    (b'<r a="1" a="2"/>', "line 1, column 10", "duplicate attribute"),
    (b'<?xml version="1.0" encoding="GBK"?>\n<r>\x81\x20</r>', "line 2, column 4 (byte 40)",
     r"invalid gbk byte sequence b'\x81'"),
    (b'<?xml version="1.0" encoding="rot13"?><r/>', "line 1", "unknown or unsupported encoding 'rot13'"),
    (b'<?xml version="1.0" encoding="unicode_escape"?><r/>', "line 1", "unsupported encoding"),
])
def test_malformed_input_says_what_and_where(xml: XmlCodec, doc: bytes, where: str, what: str) -> None:
    with pytest.raises(DecodeError) as info:
        xml.decode(doc)
    message = str(info.value)
    assert message.startswith(f"invalid xml: {where}"), message
    assert what in message, message
    assert "\n" not in message


# ------------------------------------------------------------------ attacks


@pytest.fixture
def http_server() -> Iterator[tuple[str, list[str]]]:
    """A real server on 127.0.0.1 that records every request it gets (there must be none)."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = b'<!ENTITY leak "fetched">'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()





def test_billion_laughs_refused(xml: XmlCodec) -> None:
    err = assert_refused(lambda: xml.decode(BILLION_LAUGHS), r"line 3, column \d+: entity declaration 'lol'")
    assert "DTD entities are not allowed" in str(err)


def test_quadratic_blowup_refused(xml: XmlCodec) -> None:
    # 64 KiB entity referenced 16,000 times: ~1 GiB of text if it were expanded.
    doc = (b'<!DOCTYPE r [<!ENTITY a "' + b"x" * 65536 + b'">]><r>' + b"&a;" * 16000 + b"</r>")
    assert_refused(lambda: xml.decode(doc), r"line 1, column \d+: entity declaration 'a' refused")


def test_external_entity_file_refused(xml: XmlCodec) -> None:
    doc = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><r>&xxe;</r>'
    err = assert_refused(lambda: xml.decode(doc), r"entity declaration 'xxe' \(external: 'file:///etc/passwd'\)")
    assert "root:" not in str(err)


def test_external_entity_http_refused_and_never_fetched(xml: XmlCodec, http_server: tuple[str, list[str]]) -> None:
    url, hits = http_server
    doc = f'<!DOCTYPE r [<!ENTITY xxe SYSTEM "{url}/secret">]><r>&xxe;</r>'.encode()
    assert_refused(lambda: xml.decode(doc), "entity declaration 'xxe'")
    assert hits == []


def test_parameter_entities_refused(xml: XmlCodec, http_server: tuple[str, list[str]]) -> None:
    url, hits = http_server
    external = f'<!DOCTYPE r [<!ENTITY % ext SYSTEM "{url}/evil.dtd"> %ext;]><r>&leak;</r>'.encode()
    assert_refused(lambda: xml.decode(external), "parameter entity declaration 'ext'")
    internal = b"<!DOCTYPE r [<!ENTITY % pe \"<!ENTITY x 'y'>\"> %pe;]><r>&x;</r>"
    assert_refused(lambda: xml.decode(internal), "parameter entity declaration 'pe'")
    assert hits == []


def test_unparsed_entity_refused(xml: XmlCodec) -> None:
    doc = b'<!DOCTYPE r [<!NOTATION n SYSTEM "x"><!ENTITY u SYSTEM "http://x/" NDATA n>]><r/>'
    assert_refused(lambda: xml.decode(doc), "entity declaration 'u'")


def test_external_dtd_is_never_fetched(xml: XmlCodec, http_server: tuple[str, list[str]]) -> None:
    url, hits = http_server
    # Naming an external DTD is allowed (as in defusedxml), but it is not read...
    assert xml.decode(f'<!DOCTYPE r SYSTEM "{url}/order.dtd"><r>ok</r>'.encode()) == {"r": "ok"}
    # ...so an entity it might have declared is an error, not silently dropped.
    doc = f'<!DOCTYPE r SYSTEM "{url}/order.dtd"><r>&leak;</r>'.encode()
    assert_refused(lambda: xml.decode(doc), "reference to undeclared entity 'leak'")
    assert hits == []


def test_dtd_attribute_defaults_refused(xml: XmlCodec) -> None:
    # One big default value copied into every element is a quadratic blowup too.
    doc = (b'<!DOCTYPE r [<!ATTLIST a big CDATA "' + b"x" * 65536 + b'">]><r>' + b"<a/>" * 20000 + b"</r>")
    assert_refused(lambda: xml.decode(doc), "DTD default value for attribute 'big' of <a> refused")
    fixed = b'<!DOCTYPE r [<!ATTLIST r v CDATA #FIXED "1">]><r/>'
    assert_refused(lambda: xml.decode(fixed), "DTD default value for attribute 'v'")


def test_plain_doctype_is_allowed(xml: XmlCodec) -> None:
    assert xml.decode(b"<!DOCTYPE r><r>1</r>") == {"r": "1"}
    declared = (b"<!DOCTYPE r [<!ELEMENT r (a*)><!ELEMENT a (#PCDATA)><!ATTLIST a n CDATA #IMPLIED>]>"
                b"<r><a n='1'>x</a></r>")
    assert xml.decode(declared) == {"r": {"a": {"@n": "1", "#text": "x"}}}


def test_depth_limit(xml: XmlCodec) -> None:
    ok = b"<a>" * 200 + b"</a>" * 200
    value = xml.decode(ok)
    for _ in range(199):
        value = value["a"]
    assert value == {"a": None}
    too_deep = b"<a>" * 201 + b"</a>" * 201
    assert_refused(lambda: xml.decode(too_deep), r"line 1, column 601: nesting deeper than 200 elements")
    assert XmlCodec(max_depth=3).decode(b"<a><b><c/></b></a>") == {"a": {"b": {"c": None}}}
    with pytest.raises(DecodeError, match="nesting deeper than 3 elements"):
        XmlCodec(max_depth=3).decode(b"<a><b><c><d/></c></b></a>")


def test_million_levels_refused_fast(xml: XmlCodec) -> None:
    doc = b"<a>" * 1_000_000
    assert_refused(lambda: xml.decode(doc), "nesting deeper than 200 elements")


def test_oversized_input_refused_before_parsing(xml: XmlCodec) -> None:
    big = b"<r>" + b"x" * (100 * 1024 * 1024) + b"</r>"
    err = assert_refused(lambda: xml.decode(big), "larger than the limit of 16777216 bytes", seconds=0.5,
                         peak_mib=1)
    assert f"input is {len(big)} bytes" in str(err)
    small = XmlCodec(max_bytes=10)
    assert small.decode(b"<r>12</r>") == {"r": "12"}
    with pytest.raises(DecodeError, match="input is 11 bytes"):
        small.decode(b"<r>1234</r>")


def test_wide_but_legal_document_within_limits(xml: XmlCodec) -> None:
    doc = b"<r>" + b"<i>1</i>" * 100_000 + b"</r>"
    assert xml.decode(doc) == {"r": {"i": ["1"] * 100_000}}
