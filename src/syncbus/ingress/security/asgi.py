"""The outermost ASGI layer of ``syncbus run``: the real client address, and masked answers.

* **Client address.** uvicorn's own proxy-header handling trusts ``X-Forwarded-For`` from
  loopback by default; the server turns it off and this layer does it instead, trusting only
  ``SYNCBUS_TRUSTED_PROXIES``. The resolved address replaces ``scope["client"]``, so every
  part of the app (the console's login throttle, logs) sees the same client the allow-lists
  saw. A trusted proxy sending a malformed header gets 400.
* **Masking.** When a request authenticated with a principal that may not see personal data
  (``dlq:read`` only), JSON answers are passed through :func:`masking.mask_document`
  before they leave. Handlers should mask themselves (``masker_for``); this is the net
  under them, so that a new endpoint cannot leak what the scope forbids.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import raw_error_response
from .context import SecurityContext
from .guard import SCOPE_KEY
from .ipfilter import ForwardedForError, client_address
from .masking import mask_document

UNMASKED_PREFIXES = ("/ingress/", "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json")


class SecurityLayer:
    """See the module docstring."""

    def __init__(self, app: ASGIApp, ctx: SecurityContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault(SCOPE_KEY, {})
        peer = scope.get("client")
        forwarded = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"x-forwarded-for"]
        try:
            addr = client_address(peer[0] if peer else None, forwarded, self.ctx.trusted_proxies)
        except ForwardedForError as exc:
            await _raw(send, 400, str(exc))
            return
        state["client"] = addr
        state["peer"] = peer
        if addr is not None and peer and str(addr) != peer[0]:
            scope["client"] = (str(addr), 0)
        if not self.ctx.masker or scope.get("path", "").startswith(UNMASKED_PREFIXES):
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, _MaskingSend(send, state, self.ctx))


async def _raw(send: Send, status: int, message: str) -> None:
    """A JSON error answered before the app: the same shape as every other error."""
    body = raw_error_response(status, "bad_request", message).split(b"\r\n\r\n", 1)[1]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class _MaskingSend:
    """Holds a JSON answer of a masked principal until complete, then sends it masked."""

    def __init__(self, send: Send, state: dict[str, Any], ctx: SecurityContext) -> None:
        self.send = send
        self.state = state
        self.ctx = ctx
        self.start: Message | None = None
        self.chunks: list[bytes] = []

    def _must_mask(self, message: Message) -> bool:
        principal = self.state.get("principal")
        if principal is None or principal.sees_personal_data:
            return False
        ctype = next((v for k, v in message.get("headers", ()) if k.lower() == b"content-type"), b"")
        return ctype.split(b";", 1)[0].strip().endswith(b"json")

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            if self._must_mask(message):
                self.start = message
                return
            await self.send(message)
            return
        if self.start is None or message["type"] != "http.response.body":
            await self.send(message)
            return
        self.chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(self.chunks)
        try:
            body = orjson.dumps(mask_document(self.ctx.masker, orjson.loads(body)))
        except orjson.JSONDecodeError:
            body = b'{"error":"masked","message":"this answer cannot be shown to a read-only key","status":403}'
        headers = [(k, v) for k, v in self.start.get("headers", ()) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.send({**self.start, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})
