"""One HTTP connection, defended: header limits, read timeouts, a connection limit (issue 6).

uvicorn's httptools protocol reads request headers without any bound: a
64 MiB header was accepted (httptools joins a value split over reads with
``bytes +=``, quadratic: 9 s of CPU while /healthz waited 5.6 s), so were
100,000 headers, and a client sending one byte now and then kept its
connection, and its file descriptor, forever. This subclass adds what nginx
calls client_header_buffer/timeout and client_body_timeout, plus a
connection limit that sheds the cheapest connections first:

- the request head (request line and headers) is fed to the parser in
  slices, never more than ``max_header_bytes`` of it: over that, or over
  ``max_headers`` fields, the answer is 431;
- the head must arrive within ``header_timeout`` of the connection opening
  or of its first byte (408), the body within ``body_timeout`` of the head;
- at ``max_connections`` open, a new connection closes the oldest one that
  is idle or still sending its head (they cost the server nothing to lose
  and are what a slowloris flood is made of); only when every connection is
  busy with a request is the new one refused with 503. So /healthz gets
  through a flood of slow clients;
- every refusal is a JSON error body (``errors.raw_error_response``), and
  the connection lingers briefly, discarding input, so that closing it does
  not reset it before the client has read why.

The httptools implementation is chosen (and pinned in ``server.py``) over h11
because it parses several times faster on the ingress hot path; h11's own
buffer limit would have covered only the first of these defences.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from .errors import code_for, raw_error_response
from .security.tls import TlsOptions, server_context, tls_extension
from .shedding import SheddingLog

log = logging.getLogger(__name__)

# How long a refused connection is kept reading (and discarding) so that the client reads the refusal.
LINGER_SECONDS = 2.0
# Connections refused at the limit are not counted in it; this many at most linger to deliver their 503.
MAX_LINGERING_REFUSED = 256


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The HTTP server's limits; ``server.limits_from_env`` reads them from ``SYNCBUS_HTTP_*``."""

    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive_timeout: float = 5.0
    keep_alive_requests: int = 1000
    max_connections: int = 10_000
    backlog: int = 2048


class Refusal(Exception):
    """A request refused below the app; raised inside a parser callback to stop parsing at once."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


class ConnectionGuard:
    """What all connections of one server share: the limit and the connections that may be shed.

    ``sheddable`` holds, oldest first, the connections that are idle or still
    sending a request head (junk ones, being refused, are put in front).
    """

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self.sheddable: OrderedDict[HardenedHttpProtocol, None] = OrderedDict()
        self.lingering = 0
        self.log = SheddingLog(limits.max_connections)

    def start_linger(self) -> bool:
        if self.lingering >= MAX_LINGERING_REFUSED:
            return False
        self.lingering += 1
        return True

    def admit(self, connections: set[Any]) -> bool:
        """Make room for one more connection if needed; False when every connection is busy."""
        if len(connections) < self.limits.max_connections:
            self.log.below_limit(len(connections))
            return True
        victim = next(iter(self.sheddable), None)
        if victim is None:
            self.log.shed("refused", len(connections))
            return False
        self.sheddable.pop(victim)
        victim.shed()
        self.log.shed("closed", len(connections))
        return True

    def idle(self, conn: HardenedHttpProtocol, *, junk: bool = False) -> None:
        self.sheddable[conn] = None
        self.sheddable.move_to_end(conn, last=not junk)

    def busy(self, conn: HardenedHttpProtocol) -> None:
        self.sheddable.pop(conn, None)

    def gone(self, conn: HardenedHttpProtocol, connections: set[Any]) -> None:
        self.sheddable.pop(conn, None)
        self.log.below_limit(len(connections))


class GuardedConfig(Config):
    """uvicorn's config plus the limits and the guard the protocol instances share.

    ``proxy_headers`` is off: uvicorn would otherwise believe ``X-Forwarded-For`` from
    loopback by default, letting any local client claim any address. The security layer
    (``security/asgi.py``) reads it from ``SYNCBUS_TRUSTED_PROXIES`` only. With ``tls``, the
    server speaks HTTPS with the context of ``security/tls.py`` (built, and its files checked,
    here: a bad file fails before anything listens).
    """

    def __init__(self, app: Any, limits: HttpLimits, *, tls: TlsOptions | None = None, **kwargs: Any) -> None:
        context = server_context(tls) if tls is not None else None
        if context is not None:
            kwargs["ssl_context_factory"] = lambda _config, _default: context
        super().__init__(app, http=HardenedHttpProtocol, ws="none", backlog=limits.backlog,
                         timeout_keep_alive=limits.keep_alive_timeout,  # type: ignore[arg-type]
                         proxy_headers=False, **kwargs)
        self.tls = tls
        self.limits = limits
        self.guard = ConnectionGuard(limits)


class HardenedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the defences of this module (see the module docstring)."""

    def __init__(self, config: GuardedConfig, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = config.limits
        self.guard = config.guard
        self._head_fed = 0        # bytes fed to the parser since the current head began
        self._head_parsed = 0     # bytes of the current head the parser has reported
        self._header_count = 0
        self._in_head = False     # a head has begun and is not complete
        self._in_body = False
        self._requests = 0
        self._refusal: Refusal | None = None
        self._closing = False
        self._admitted = False
        self._lingers = False     # a refused, never admitted connection kept open to deliver its 503
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._tls: dict[str, Any] | None = None   # the ASGI "tls" extension of this connection (HTTPS only)

    # -- connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if not self.guard.admit(self.connections):
            self.transport = transport
            self._closing = True
            transport.write(raw_error_response(503, "overloaded", "too many connections; retry later",
                                               [("retry-after", "1")]))
            if transport.can_write_eof() and self.guard.start_linger():
                self._lingers = True
                transport.write_eof()
                self._linger_timer = self.loop.call_later(LINGER_SECONDS, transport.abort)
            else:
                transport.close()
            return
        super().connection_made(transport)
        self._tls = tls_extension(transport)
        self._admitted = True
        self.guard.idle(self)
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._body_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = self._linger_timer = None
        if not self._admitted:
            if self._lingers:
                self.guard.lingering -= 1
            return
        self.guard.gone(self, self.connections)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # lingering after a refusal: read and drop
        self._unset_keepalive_if_required()
        try:
            while data:
                if self._in_body:
                    piece, data = data, b""
                else:
                    # Never hand the parser more of a head than the limit (+1 to see it is exceeded).
                    room = self.limits.max_header_bytes - self._head_fed + 1
                    piece, data = data[:room], data[room:]
                    self._head_fed += len(piece)
                self.parser.feed_data(piece)
                if self._head_too_large():
                    raise Refusal(431, f"request headers are larger than {self.limits.max_header_bytes} bytes")
        except Refusal as refusal:
            self._refuse(refusal.status, refusal.message)
        except httptools.HttpParserUpgrade:
            self._ignore_upgrade()
        except httptools.HttpParserCallbackError:
            if self._refusal is not None:
                self._refuse(self._refusal.status, self._refusal.message)
            else:
                self._refuse(400, "invalid HTTP request")
        except httptools.HttpParserError as exc:
            reason = "".join(c for c in str(exc)[:200] if c.isprintable())
            self._refuse(400, f"invalid HTTP request: {reason}" if reason else "invalid HTTP request")

    def _head_too_large(self) -> bool:
        # Bytes fed since the head began, or (for a pipelined head that began inside a slice)
        # the bytes the parser has reported: either way never more than about twice the limit.
        if self._in_body:
            return False
        return max(self._head_fed, self._head_parsed) > self.limits.max_header_bytes

    # -- parser callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_head = True
        self._header_count = 0
        self._head_parsed = 0
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)
        super().on_message_begin()
        if self._tls is not None:
            # The client certificate, for sources with `auth: {mtls: true}` (security/guard.py).
            self.scope["extensions"] = {"tls": self._tls}  # type: ignore[dict-item]

    def on_url(self, url: bytes) -> None:
        self._head_parsed += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._head_parsed += len(name) + len(value) + 4
        if self._header_count > self.limits.max_headers:
            self._refusal = Refusal(431, f"more than {self.limits.max_headers} header fields")
            raise self._refusal
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._head_parsed > self.limits.max_header_bytes:  # a whole head inside one read
            self._refusal = Refusal(431, f"request headers are larger than {self.limits.max_header_bytes} bytes")
            raise self._refusal
        self._in_head = False
        self._in_body = True
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self.guard.busy(self)
        self._requests += 1
        super().on_headers_complete()
        if self._requests >= self.limits.keep_alive_requests and self.cycle is not None:
            self.cycle.keep_alive = False
        self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_timed_out)

    def on_message_complete(self) -> None:
        self._in_body = False
        self._head_fed = 0
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self._closing and not self.pipeline and not self._in_body and not self.transport.is_closing():
            self.guard.idle(self)

    # -- refusals --------------------------------------------------------------------------

    def _cycle_running(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _refuse(self, status: int, message: str, *, about_running: bool | None = None) -> None:
        """Answer with a JSON error and close; linger reading so the answer is not lost to a reset.

        ``about_running``: the refusal concerns the request whose cycle is running (by default:
        when its body is still coming); otherwise a running cycle is an earlier, pipelined one.
        """
        self.guard.log.refused(status)
        self._closing = True
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
        self.guard.idle(self, junk=True)
        if self._cycle_running():
            # The app, if still reading or about to answer, sees the client gone and sends nothing.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
            if self.cycle.response_started or not (self._in_body if about_running is None else about_running):
                # A response is under way, or the running request is an earlier pipelined one:
                # writing now would interleave or answer out of order. Just close.
                self.transport.close()
                return
        self.transport.write(raw_error_response(status, code_for(status), message))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        if self.flow is not None:
            self.flow.resume_reading()
        self._linger_timer = self.loop.call_later(LINGER_SECONDS, self.transport.abort)

    def shed(self) -> None:
        """Closed by the guard to make room: a client mid-head is told why; an idle one just closed."""
        if self._closing or not self._in_head or self._cycle_running():
            self._closing = True
            self.transport.close()
            return
        self._closing = True
        self.transport.write(raw_error_response(503, "overloaded", "too many connections; retry later",
                                                [("retry-after", "1")]))
        self.transport.close()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._closing or self.transport.is_closing():
            return
        if self._cycle_running():
            self.cycle.keep_alive = False  # finish the response in progress, then close
            return
        if not self._in_head:
            self._closing = True
            self.transport.close()  # opened and never sent anything: nothing to answer
            return
        self._refuse(408, f"request headers not received within {self.limits.header_timeout:g}s")

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self._closing or self.transport.is_closing():
            return
        if self.cycle is not None and self.cycle.response_started:
            self._closing = True  # answered already (e.g. 413 before the body): just stop waiting for it
            self.transport.close()
            return
        self._refuse(408, f"request body not received within {self.limits.body_timeout:g}s")

    def _ignore_upgrade(self) -> None:
        """No WebSocket or h2c here: serve the request as HTTP/1.1, then close (the parser has stopped)."""
        if self._in_head or self._in_body:
            self._refuse(400, "protocol upgrades are not supported")  # stopped inside a request
            return
        if any(name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0")
               for name, value in self.headers or ()):
            # The parser skips the body of an upgrade request: the app would see an empty one.
            self._refuse(400, "a request with a body cannot ask for a protocol upgrade: drop the Upgrade header",
                         about_running=True)
            return
        if self.cycle is not None:
            self.cycle.keep_alive = False
        self._closing = True

    def _unsupported_upgrade_warning(self) -> None:
        log.debug("ignored an Upgrade request header")
