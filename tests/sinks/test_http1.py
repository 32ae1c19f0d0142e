"""The lean HTTP/1.1 client of the HTTP sink (issue 11) against raw servers that answer in every framing."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from syncbus.sinks import http1

Handler = Callable[[bytes], list[bytes] | None]  # request bytes -> chunks to write (None: close without answer)


class RawServer:
    """Reads one request at a time (head + Content-Length body) and writes what the handler says."""

    def __init__(self, handler: Handler, close_after: bool = False) -> None:
        self.handler = handler
        self.close_after = close_after
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                chunks = self.handler(request)
                if chunks is None:
                    writer.close()
                    return
                for chunk in chunks:
                    writer.write(chunk)
                    await writer.drain()
                if self.close_after:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/orders?x=1"


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    servers: list[RawServer] = []

    async def start(handler: Handler, **options: Any) -> RawServer:
        raw = RawServer(handler, **options)
        raw.server = await asyncio.start_server(raw.serve, "127.0.0.1", 0)
        servers.append(raw)
        return raw

    yield start
    for raw in servers:
        assert raw.server is not None
        raw.server.close()


def ok(body: bytes = b"{}", *extra: bytes) -> list[bytes]:
    return [b"HTTP/1.1 200 OK\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" + b"".join(extra)
            + b"\r\n" + body]


async def test_sends_what_aiohttp_sent_and_reuses_the_connection(serve: Any) -> None:
    raw = await serve(lambda _req: ok())
    client = http1.Http1Client(raw.url, read_limit=65536)
    for _ in range(3):
        status, _headers, body = await client.request("POST", [("Content-Type", "application/xml"),
                                                               ("X-Syncbus-Record-Id", "r1")], b"<a/>")
        assert (status, body) == (200, b"{}")
    await client.close()
    assert raw.connections == 1
    head, _, body = raw.requests[0].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /orders?x=1 HTTP/1.1"
    assert lines[1].startswith("Host: 127.0.0.1:")
    assert lines[2:] == ["Content-Type: application/xml", "X-Syncbus-Record-Id: r1", "Accept: */*",
                         "Accept-Encoding: gzip, deflate", "Content-Length: 4"]
    assert body == b"<a/>"


async def test_chunked_gzip_and_1xx_answers(serve: Any) -> None:
    packed = gzip.compress(b'{"error": "bad"}')
    answer = [b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n",
              b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n"
              b"Retry-After: 3\r\n\r\n",
              f"{len(packed[:10]):x}\r\n".encode() + packed[:10] + b"\r\n",
              f"{len(packed[10:]):x}\r\n".encode() + packed[10:] + b"\r\n0\r\n\r\n"]
    raw = await serve(lambda _req: answer)
    client = http1.Http1Client(raw.url, read_limit=65536)
    status, headers, body = await client.request("POST", [], b"x")
    assert (status, headers["retry-after"], body) == (400, "3", b'{"error": "bad"}')
    status, _headers, _body = await client.request("POST", [], b"x")  # reusable after a chunked answer
    await client.close()
    assert raw.connections == 1


async def test_deflate_with_and_without_the_zlib_header(serve: Any) -> None:
    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    bodies = [zlib.compress(b"plain zlib"), raw_deflate.compress(b"raw deflate") + raw_deflate.flush()]
    answers = iter([ok(b, b"Content-Encoding: deflate\r\n") for b in bodies])
    raw = await serve(lambda _req: next(answers))
    client = http1.Http1Client(raw.url, read_limit=65536)
    assert (await client.request("POST", [], b""))[2] == b"plain zlib"
    assert (await client.request("POST", [], b""))[2] == b"raw deflate"
    await client.close()


async def test_a_body_to_the_end_of_the_connection(serve: Any) -> None:
    raw = await serve(lambda _req: [b"HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\n", b"no length, ", b"then EOF"],
                      close_after=True)
    client = http1.Http1Client(raw.url, read_limit=65536)
    status, _headers, body = await client.request("POST", [], b"")
    assert (status, body) == (500, b"no length, then EOF")
    assert not client._idle  # closed by the server: not kept
    await client.close()


async def test_a_huge_answer_is_cut_at_the_limit_and_the_connection_dropped(serve: Any) -> None:
    big = b"E" * 1_000_000
    raw = await serve(lambda _req: ok(big))
    client = http1.Http1Client(raw.url, read_limit=1000)
    status, _headers, body = await client.request("POST", [], b"")
    assert status == 200 and body == b"E" * 1000
    status, _headers, body = await client.request("POST", [], b"")  # a new connection serves the next one
    assert status == 200 and len(body) == 1000
    await client.close()
    assert raw.connections == 2


async def test_a_kept_connection_the_server_closed_is_replaced_once(serve: Any) -> None:
    answers = iter([ok(), None, ok()])  # the second request finds its connection closed, unanswered
    raw = await serve(lambda _req: next(answers))
    client = http1.Http1Client(raw.url, read_limit=65536)
    assert (await client.request("POST", [], b"1"))[0] == 200
    assert (await client.request("POST", [], b"2"))[0] == 200
    await client.close()
    assert raw.connections == 2 and len(raw.requests) == 3


async def test_a_fresh_connection_closed_without_an_answer_is_an_error(serve: Any) -> None:
    raw = await serve(lambda _req: None)
    client = http1.Http1Client(raw.url, read_limit=65536)
    with pytest.raises(http1.ExchangeError):
        await client.request("POST", [], b"")
    await client.close()


async def test_garbage_is_an_error_and_refused_is_a_connect_error(serve: Any) -> None:
    raw = await serve(lambda _req: [b"SPDY/9 what\r\n\r\n"])
    client = http1.Http1Client(raw.url, read_limit=65536)
    with pytest.raises(http1.ExchangeError):
        await client.request("POST", [], b"")
    await client.close()
    dead = http1.Http1Client("http://127.0.0.1:9/x", read_limit=10)
    with pytest.raises(http1.ConnectError) as info:
        await dead.request("POST", [], b"")
    assert isinstance(info.value.os_error, ConnectionRefusedError)


def test_header_injection_is_refused() -> None:
    client = http1.Http1Client("http://127.0.0.1:9/x", read_limit=10)
    with pytest.raises(ValueError):
        client.encode("POST", [("X-Bad", "a\r\nInjected: yes")], b"")


@pytest.mark.parametrize(("url", "served"), [
    ("http://erp.example/orders", True), ("http://127.0.0.1:8080/a b?c=d", True),
    ("https://erp.example/orders", False), ("http://bob:pw@erp.example/", False), ("ftp://x/", False),
])
def test_which_urls_it_serves(url: str, served: bool) -> None:
    assert http1.supports(url) is served
