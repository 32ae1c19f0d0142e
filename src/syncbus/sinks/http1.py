"""A lean HTTP/1.1 client for the HTTP sink's deliveries to plain ``http://`` targets (issue 11).

Profiled under load, aiohttp's per-request machinery (ClientRequest and
ClientResponse objects, header multidicts, timers, payload writers, the
connector's bookkeeping) cost about as much CPU as everything else of a
delivery together. A delivery needs much less: one keep-alive connection
from a bounded pool, one pre-formatted request, the status, a few answer
headers and at most 64 KiB of the answer. This module does exactly that
with an ``asyncio.Protocol`` and the C parser uvicorn already brings
(httptools/llhttp), and nothing else.

It sends what aiohttp sent (``Host`` first, then the given headers, then
``Accept: */*``, ``Accept-Encoding: gzip, deflate`` and ``Content-Length``),
reads bodies framed by length, chunks or the end of the connection,
decompresses gzip and deflate answers as aiohttp's ``auto_decompress`` did,
skips 1xx answers, and keeps a connection only when the answer allows it
(HTTP/1.1 without ``Connection: close``, body read completely). A reused
connection the server had already closed -- the usual keep-alive race --
is retried once on a fresh one, before any answer byte arrived (the target
deduplicates by ``Idempotency-Key``, so even a request it did see is safe).

What it does not do, the sink keeps aiohttp for: ``https://`` (TLS and client
certificates) and URLs with credentials in them (aiohttp turns those into a
Basic ``Authorization`` header). Errors are ``ConnectError`` (could not
connect: the OSError is its cause, to be classified like aiohttp's
``ClientConnectorError``) and ``ExchangeError`` (the connection failed or the
answer was not HTTP); the sink turns both into retryable DeliveryErrors.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import deque

import httptools
import yarl

from ..errors import SyncbusError

DEFAULT_HEADERS = (("Accept", "*/*"), ("Accept-Encoding", "gzip, deflate"))
KEEPALIVE_SECONDS = 30.0  # an idle connection older than this is closed, not reused (aiohttp's keepalive_timeout)


class Http1Error(SyncbusError):
    """Base of this client's errors."""


class ConnectError(Http1Error):
    """No connection could be made; ``os_error`` is what the socket layer said."""

    def __init__(self, os_error: OSError) -> None:
        self.os_error = os_error
        super().__init__(str(os_error) or type(os_error).__name__)


class ExchangeError(Http1Error):
    """The connection broke during the exchange, or the answer was not valid HTTP/1.x."""


class _Stale(ExchangeError):
    """A reused connection was closed before any answer byte: safe to try a fresh one."""


class UnsupportedTarget(Http1Error):
    """The URL needs what this client does not do (TLS, credentials in the URL); use aiohttp."""


def supports(url: str) -> bool:
    """True when :class:`Http1Client` can serve ``url`` exactly as aiohttp would."""
    try:
        parsed = yarl.URL(url)
    except (ValueError, TypeError):
        return False
    return (parsed.scheme == "http" and bool(parsed.raw_host) and not parsed.raw_user
            and not parsed.raw_password and parsed.host_port_subcomponent is not None)


class _Decoder:
    """Content-Encoding gzip / deflate, bounded: never more than ``limit`` bytes come out."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._z = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
        self._raw_deflate_tried = False

    def feed(self, data: bytes, room: int) -> bytes:
        try:
            return self._z.decompress(data, max(1, room))
        except zlib.error:
            if self.encoding == "deflate" and not self._raw_deflate_tried:
                # Some servers send raw deflate without the zlib header (aiohttp accepts both).
                self._raw_deflate_tried = True
                self._z = zlib.decompressobj(-zlib.MAX_WBITS)
                return self._z.decompress(data, max(1, room))
            raise


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one exchange at a time."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = time.monotonic()
        self.used = False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[tuple[int, dict[str, str], bytes]] | None = None
        self._reset()

    def _reset(self) -> None:
        self._got_bytes = False
        self._status = 0
        self._headers: dict[str, str] = {}
        self._chunks: list[bytes] = []
        self._size = 0
        self._decoder: _Decoder | None = None
        self._headers_done = False
        self._framed = False       # Content-Length or chunked: the end is known
        self._truncated = False    # stopped reading at the limit: the connection cannot be reused
        self._done = False
        self._keep_alive = False   # what the answer said, read when it completed (the parser forgets)

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            # Bytes nobody asked for (an answer after a timeout, garbage): this connection is done for.
            self.close()
            return
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ExchangeError(f"invalid HTTP answer: {exc}"))
            self.close()
            return
        if self._truncated and not self._waiter.done():
            self._finish()

    def eof_received(self) -> bool | None:
        self._lost(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)

    def _lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._headers_done and not self._framed:
            self._finish()  # the body ran to the end of the connection: that is its end
            return
        if not self._got_bytes and self.used:
            self._fail(_Stale("the server closed the kept-alive connection"))
            return
        reason = f"{type(exc).__name__}: {exc}" if exc else "server disconnected"
        self._fail(ExchangeError(reason))

    # -- httptools callbacks ------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        if key not in self._headers:  # the first one wins, as CIMultiDict.get does
            self._headers[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        headers = self._headers
        self._headers_done = True
        self._framed = ("content-length" in headers or "chunked" in headers.get("transfer-encoding", "").lower()
                        or self._status in (204, 304))
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "deflate"):
            self._decoder = _Decoder(encoding)

    def on_body(self, body: bytes) -> None:
        if self._truncated or 100 <= self._status < 200:
            return
        room = self.limit - self._size
        if self._decoder is not None:
            try:
                body = self._decoder.feed(body, room)
            except zlib.error:
                self._decoder = None  # not what it said it was: keep the bytes as they are
        if len(body) >= room:
            body = body[:room]
            self._truncated = True
        self._chunks.append(body)
        self._size += len(body)

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:  # 100 Continue, 103 Early Hints: the real answer follows
            self._headers = {}
            self._headers_done = False
            return
        self._done = True
        self._keep_alive = self._parser.should_keep_alive()
        self._finish()

    # -- one exchange ---------------------------------------------------------------------

    def _finish(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result((self._status, self._headers, b"".join(self._chunks)))

    def _fail(self, exc: Exception) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    async def exchange(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        assert self.transport is not None
        self._reset()
        waiter: asyncio.Future[tuple[int, dict[str, str], bytes]] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self.transport.write(request)
        try:
            return await waiter
        finally:
            self._waiter = None

    def reusable(self) -> bool:
        """After an exchange: the whole answer was read and neither side wants to close."""
        return (self._done and not self._truncated and not self.closed and self.transport is not None
                and not self.transport.is_closing() and self._keep_alive)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class Http1Client:
    """A pool of keep-alive HTTP/1.1 connections to the host of one ``http://`` URL.

    The caller bounds concurrency (the sink's semaphore); the pool keeps the
    idle connections, so it never holds more than that many.
    """

    def __init__(self, url: str, *, read_limit: int) -> None:
        if not supports(url):
            raise UnsupportedTarget(f"not served by the HTTP/1.1 fast path: {url}")
        parsed = yarl.URL(url)
        self.host: str = parsed.raw_host or ""
        self.port: int = parsed.port or 80
        self.target: str = parsed.raw_path_qs or "/"
        self.host_header: str = parsed.host_port_subcomponent or self.host
        self.read_limit = read_limit
        self._idle: deque[_Connection] = deque()
        self._closed = False

    def encode(self, method: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
        """The request's bytes: request line, Host, the headers, aiohttp's defaults, Content-Length."""
        host = self.host_header
        given: set[str] = set()
        lines = [f"{method} {self.target} HTTP/1.1"]
        rest: list[str] = []
        for name, value in headers:
            if "\r" in name or "\n" in name or "\r" in value or "\n" in value or ":" in name:
                raise ValueError(f"header {name!r} has characters not allowed in HTTP headers")
            lower = name.lower()
            given.add(lower)
            if lower == "host":
                host = value
            elif lower != "content-length":
                rest.append(f"{name}: {value}")
        lines.append(f"Host: {host}")
        lines.extend(rest)
        lines.extend(f"{n}: {v}" for n, v in DEFAULT_HEADERS if n.lower() not in given)
        lines.append(f"Content-Length: {len(body)}")
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("latin-1") + body

    async def request(self, method: str, headers: list[tuple[str, str]],
                      body: bytes) -> tuple[int, dict[str, str], bytes]:
        """One exchange: ``(status, headers with lower-case names, at most read_limit bytes of body)``."""
        if self._closed:
            raise ExchangeError("client closed")
        data = self.encode(method, headers, body)
        conn = self._pooled()
        fresh = conn is None
        if conn is None:
            conn = await self._connect()
        try:
            try:
                result = await conn.exchange(data)
            except _Stale:
                if fresh:
                    raise
                conn.close()
                conn = await self._connect()
                result = await conn.exchange(data)
        except BaseException:
            conn.close()  # a timeout or a cancel mid-exchange leaves it in an unknown state
            raise
        if conn.reusable() and not self._closed:
            conn.used = True
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()
        return result

    def _pooled(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()  # most recently used first: the least likely to have been closed
            if conn.closed or now - conn.idle_since > KEEPALIVE_SECONDS:
                conn.close()
                continue
            return conn
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _transport, conn = await loop.create_connection(lambda: _Connection(self.read_limit), self.host,
                                                            self.port)
        except OSError as exc:
            raise ConnectError(exc) from exc
        return conn

    async def close(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()

    def __repr__(self) -> str:
        return f"Http1Client({self.host_header!r})"
