"""The HTTP sink: one request per delivery to a REST (or SOAP) endpoint of a target system.

One keep-alive connection pool per sink, shared by every route that uses it.
``send`` classifies the outcome for the retry policy: 2xx is delivered;
timeouts, connection failures, 408/425/429 and 5xx are worth another try;
everything else (4xx, an unfollowed redirect) will not get better by
repeating it and goes straight to the dead letters with the target's answer.
With ``soap:`` set the body goes out in a SOAP envelope and a fault in the
answer is judged by its fault code, not the status (see :mod:`syncbus.sinks.soap`).
"""

from __future__ import annotations

import asyncio
import errno
import os
import random
import re
import socket
import string
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import quote

import httpx
from pydantic import Field, field_validator

from syncbus import __version__
from syncbus.errors import DeliveryError
from syncbus.sinks import http1
from syncbus.sinks.auth import (
    RETRYABLE_STATUS,
    Authenticator,
    HttpAuth,
    body_snippet,
    check_http_url,
    make_authenticator,
    parse_retry_after,
    safe_url,
)
from syncbus.sinks.base import BaseSink, Delivery, SinkConfig
from syncbus.sinks.soap import SoapBinding, SoapFaultError, SoapSpec, parse_fault
from syncbus.units import format_duration

from .tls import ClientTls, tls_context

if TYPE_CHECKING:
    import aiohttp  # imported when a sink needs it (TLS): 10 MB a node without such sinks does not carry

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 header field name
_TRACEPARENT = re.compile(r"^(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")
# Printable ASCII except "%": kept as is in header values; anything else is percent-encoded.
_HEADER_SAFE = "".join(c for c in string.printable if c not in "%\t\n\r\x0b\x0c")
_READ_LIMIT = 64 * 1024
_USER_AGENT = f"syncbus/{__version__}"
# Connections per httpx client; see _Pool.


class HttpSinkConfig(SinkConfig, ClientTls):
    """``type: http`` — send each mapped record as the body of one HTTP request."""

    type: Literal["http"] = Field("http", description="The sink type: http.")
    url: str = Field(description="Target URL (or url_env: VAR).")
    method: Literal["POST", "PUT", "PATCH"] = Field("POST", description="HTTP method.")
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra request headers. They override the record's Content-Type (e.g. for SOAP) "
                    "but not the syncbus headers (Idempotency-Key, X-Syncbus-*, traceparent).")
    auth: HttpAuth | None = Field(None, description="Credentials: oauth2_client_credentials, bearer, "
                                                    "basic or api_key.")
    max_connections: int = Field(
        32, ge=1, le=1000,
        description="Connections (and requests in flight) to this target; 32 saturates most ERP endpoints.")
    soap: SoapSpec | None = Field(
        None,
        description="Send the record's XML (route format xml) inside a SOAP envelope: "
                    "{version: '1.1' | '1.2', action: URI}. Faults are classified by their code: "
                    "Client/Sender permanent, Server/Receiver retried, whatever the HTTP status.")

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return check_http_url(value)

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, val in value.items():
            if not _TOKEN.match(name):
                raise ValueError(f"invalid header name {name!r}")
            if any(c in val for c in "\r\n\0") or not val.isascii():
                raise ValueError(f"header {name!r}: value must be one line of ASCII text")
        return value


_trace_ids = random.Random(int.from_bytes(os.urandom(16), "big"))  # per process; see new_traceparent
os.register_at_fork(after_in_child=lambda: _trace_ids.seed(int.from_bytes(os.urandom(16), "big")))


def new_traceparent() -> str:
    """A fresh W3C trace context (sampled), for deliveries that arrive without one.

    Trace ids must be unique, not secret (W3C: "random", they travel in clear
    headers), so they come from a seeded Mersenne Twister: ``secrets`` made a
    system call per delivery (0.6 % of a node's CPU under load). All-zero ids
    are invalid, and have a 2**-64 chance: drawn again.
    """
    bits = _trace_ids.getrandbits
    trace, span = bits(128) or 1, bits(64) or 1
    return f"00-{trace:032x}-{span:016x}-01"


def _header_value(value: str) -> str:
    """Header-safe text: record keys may hold "Müller" or a stray newline; httpx only takes ASCII."""
    if value.isascii() and value.isprintable():
        return value
    return quote(value, safe=_HEADER_SAFE)




def _session(cfg: HttpSinkConfig) -> aiohttp.ClientSession:
    """One pooled aiohttp session per sink for the deliveries themselves.

    Measured against the same local target (tests/sinks/bench_http_sink.py,
    concurrency 50): httpx with its own pool managed ~1,050 sends per
    CPU-second, httpx over an aiohttp transport ~1,800, aiohttp alone ~7,100.
    Delivery is the hot path of every route, so it uses aiohttp; token
    requests (rare) keep httpx.
    """
    import aiohttp

    connector = aiohttp.TCPConnector(limit=cfg.max_connections, ssl=tls_context(cfg), keepalive_timeout=30)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None),
                                 auto_decompress=True, trust_env=False, skip_auto_headers=("User-Agent",),
                                 headers={"User-Agent": _USER_AGENT})


class HttpSink(BaseSink):
    """Delivers to an HTTP endpoint; see :class:`HttpSinkConfig`."""

    Config: ClassVar[type[HttpSinkConfig]] = HttpSinkConfig
    config: HttpSinkConfig
    uses_payload: ClassVar[bool] = False  # sends delivery.body only: the router need not build the dict
    examples: ClassVar[list[dict[str, Any]]] = [
        {"name": "erp-orders", "type": "http", "url_env": "ERP_ORDERS_URL",
         "auth": {"oauth2_client_credentials": {"token_url_env": "ERP_TOKEN_URL", "client_id_env": "ERP_CLIENT_ID",
                                                "client_secret_env": "ERP_CLIENT_SECRET"}},
         "retry": {"attempts": 4, "backoff": "exponential", "initial": "0.5s", "max": "30s"},
         "timeout": "10s"},
        {"name": "erp-orders-soap", "type": "http", "url_env": "ERP_SOAP_URL",
         "soap": {"version": "1.1", "action": "urn:sap-com:document:sap:rfc:functions:ZSD_ORDER_CREATE"},
         "auth": {"basic": {"username_env": "ERP_USER", "password_env": "ERP_PASSWORD"}},
         "timeout": "30s"},
    ]

    def __init__(self, config: HttpSinkConfig | Mapping[str, Any]) -> None:
        super().__init__(config)
        config = self.config  # validated
        self._pool: aiohttp.ClientSession | None = None
        # Plain http:// targets: the lean HTTP/1.1 client (http1.py); TLS and URL credentials: aiohttp.
        self._fast: http1.Http1Client | None = None
        self._slots = asyncio.Semaphore(100)
        self._token_client: httpx.AsyncClient | None = None
        self._auth: Authenticator | None = None
        self._where = safe_url(config.url)
        self._soap = SoapBinding(config.soap) if config.soap is not None else None
        self._base_headers: dict[str, tuple[str, str]] = {
            "user-agent": ("User-Agent", _USER_AGENT)}
        for name, value in config.headers.items():
            self._base_headers[name.lower()] = (name, value)

    @property
    def auth(self) -> Authenticator | None:
        return self._auth

    async def start(self) -> None:
        if self._pool is not None or self._fast is not None:
            return
        cfg = self.config
        if http1.supports(cfg.url):
            self._fast = http1.Http1Client(cfg.url, read_limit=_READ_LIMIT)
        else:
            self._pool = _session(cfg)
        # httpcore matches every waiting request against every connection on each
        # change (quadratic): with a thousand records in flight it eats the event
        # loop. Waiting here instead keeps its queue empty.
        self._slots = asyncio.Semaphore(cfg.max_connections)
        if cfg.auth is not None and cfg.auth.oauth2_client_credentials is not None:
            # A client of its own: token requests must not queue behind a full delivery pool.
            self._token_client = httpx.AsyncClient(
                timeout=httpx.Timeout(cfg.timeout), verify=tls_context(cfg), follow_redirects=False,
                limits=httpx.Limits(max_connections=4), headers={"User-Agent": _USER_AGENT})
        self._auth = make_authenticator(cfg.auth, self._token_client, cfg.timeout)

    async def close(self) -> None:
        pool, token_client, fast = self._pool, self._token_client, self._fast
        self._pool = self._token_client = self._fast = None
        self._auth = None
        if fast is not None:
            await fast.close()
        if pool is not None:
            await pool.close()
        if token_client is not None:
            await token_client.aclose()

    def _headers(self, delivery: Delivery) -> dict[str, tuple[str, str]]:
        headers: dict[str, tuple[str, str]]
        if self._soap is not None:
            headers = {"content-type": ("Content-Type", self._soap.content_type)}
            for name, value in self._soap.headers.items():
                headers[name.lower()] = (name, value)
        else:
            headers = {"content-type": ("Content-Type", delivery.content_type)}
        headers.update(self._base_headers)
        for name, value in delivery.headers.items():
            headers[name.lower()] = (name, _header_value(value))
        traceparent = delivery.traceparent
        if not traceparent or not _TRACEPARENT.match(traceparent):
            traceparent = new_traceparent()
        headers["idempotency-key"] = ("Idempotency-Key", _header_value(delivery.idempotency_key))
        headers["x-syncbus-route"] = ("X-Syncbus-Route", _header_value(delivery.route))
        headers["x-syncbus-mapping-version"] = ("X-Syncbus-Mapping-Version", str(delivery.mapping_version))
        headers["x-syncbus-record-id"] = ("X-Syncbus-Record-Id", _header_value(delivery.record_id))
        headers["traceparent"] = ("traceparent", traceparent)
        return headers

    async def send(self, delivery: Delivery) -> None:
        """One attempt (plus one immediate retry with a fresh OAuth2 token after a 401)."""
        if self._pool is None and self._fast is None:
            await self.start()
        body = delivery.body
        if self._soap is not None:
            try:
                body = self._soap.envelope(body, delivery.content_type)
            except DeliveryError as err:
                raise DeliveryError(f"{self.name}: {err}", retryable=False) from None
        headers = self._headers(delivery)
        used: dict[str, str] = {}
        if self._auth is not None:
            used = await self._auth.headers()
            for name, value in used.items():
                headers[name.lower()] = (name, value)
        response = await self._exchange(body, list(headers.values()))
        if response[0] == 401 and self._auth is not None and self._auth.refreshable:
            self._auth.invalidate(used)
            for name, value in (await self._auth.headers()).items():
                headers[name.lower()] = (name, value)
            response = await self._exchange(body, list(headers.values()))
        self._classify(*response)

    async def _exchange(self, body: bytes,
                        headers: list[tuple[str, str]]) -> tuple[int, Mapping[str, str], bytes]:
        if self._fast is not None:
            return await self._exchange_fast(self._fast, body, headers)
        import aiohttp

        session = self._pool
        assert session is not None
        cfg = self.config
        try:
            # `timeout` bounds the whole exchange, not the wait for a free connection slot.
            async with (self._slots, asyncio.timeout(cfg.timeout),
                        session.request(cfg.method, cfg.url, data=body, headers=headers,
                                        allow_redirects=False) as response):
                content = await _read_limited(response)
                return response.status, response.headers, content
        except TimeoutError as exc:
            raise DeliveryError(f"timeout after {format_duration(cfg.timeout)}: {self._where}",
                                retryable=True) from exc
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
            raise DeliveryError(f"unsupported or invalid URL: {self._where}", retryable=False) from exc
        except aiohttp.ClientConnectorError as exc:
            root = exc.os_error
            if isinstance(root, ConnectionRefusedError) or getattr(root, "errno", None) == errno.ECONNREFUSED:
                message = f"connection refused: {self._where}"
            elif isinstance(root, socket.gaierror):
                message = f"cannot resolve host: {self._where} ({root.strerror or root})"
            else:
                message = f"cannot connect ({getattr(root, 'strerror', None) or exc}): {self._where}"
            raise DeliveryError(message, retryable=True) from exc
        except (aiohttp.ClientError, OSError) as exc:
            detail = str(exc) or type(exc).__name__
            raise DeliveryError(f"connection error ({detail}): {self._where}", retryable=True) from exc

    async def _exchange_fast(self, client: http1.Http1Client, body: bytes,
                             headers: list[tuple[str, str]]) -> tuple[int, Mapping[str, str], bytes]:
        """``_exchange`` on the lean client: the same bounds, and the same errors as with aiohttp."""
        cfg = self.config
        try:
            async with self._slots, asyncio.timeout(cfg.timeout):
                return await client.request(cfg.method, headers, body)
        except TimeoutError as exc:
            raise DeliveryError(f"timeout after {format_duration(cfg.timeout)}: {self._where}",
                                retryable=True) from exc
        except http1.ConnectError as exc:
            root = exc.os_error
            if isinstance(root, ConnectionRefusedError) or getattr(root, "errno", None) == errno.ECONNREFUSED:
                message = f"connection refused: {self._where}"
            elif isinstance(root, socket.gaierror):
                message = f"cannot resolve host: {self._where} ({root.strerror or root})"
            else:
                message = f"cannot connect ({getattr(root, 'strerror', None) or root}): {self._where}"
            raise DeliveryError(message, retryable=True) from exc
        except ValueError as exc:  # a header value that cannot go on the wire
            raise DeliveryError(f"{exc}: {self._where}", retryable=False) from exc
        except (http1.Http1Error, OSError) as exc:
            detail = str(exc) or type(exc).__name__
            raise DeliveryError(f"connection error ({detail}): {self._where}", retryable=True) from exc

    def _classify(self, status: int, headers: Mapping[str, str], content: bytes) -> None:
        if self._soap is not None:
            self._classify_fault(status, headers, content)
        if 200 <= status < 300:
            return
        snippet = body_snippet(content)
        message = f"HTTP {status} from {self._where}" + (f": {snippet}" if snippet else "")
        if status in RETRYABLE_STATUS or status >= 500:
            raise DeliveryError(message, retryable=True, status=status,
                                retry_after=parse_retry_after(headers.get("retry-after")))
        if 300 <= status < 400:
            location = headers.get("location") or ""
            if location.startswith(("http://", "https://")):
                location = safe_url(location)
            target = f" to {location}" if location else ""
            message = (f"HTTP {status} from {self._where}: redirect{target} not followed; "
                       "point the sink's url at the final address")
        raise DeliveryError(message, retryable=False, status=status)


    def _classify_fault(self, status: int, headers: Mapping[str, str], content: bytes) -> None:
        """Raise for a SOAP fault in the answer; its code decides, the status only when the code cannot.

        A 2xx carrying a fault is a failure too: some stacks answer 200 with a
        fault, and counting that as delivered would lose the record silently.
        """
        fault = parse_fault(content, headers.get("content-type"))
        if fault is None:
            return
        retryable = fault.retryable
        if retryable is None:
            retryable = status in RETRYABLE_STATUS or status >= 500
        message = f"SOAP fault from {self._where} (HTTP {status}): {fault.describe()}"
        retry_after = parse_retry_after(headers.get("retry-after")) if retryable else None
        raise SoapFaultError(message, fault, retryable=retryable, status=status, retry_after=retry_after)


async def _read_limited(response: aiohttp.ClientResponse, limit: int = _READ_LIMIT) -> bytes:
    """Read the body (so the connection can be reused) but never hold more than ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(65536):
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break  # releasing an unread response drops the connection, which is fine for huge answers
    return b"".join(chunks)
