"""API keys: ``X-API-Key: KEY`` or ``Authorization: Bearer KEY`` (DESIGN §7).

Keys are compared in constant time. No key sent is 401 (who are you?); a key
that is not accepted is 403 (you may not).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from starlette.requests import Request

from .errors import HttpError


def presented_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


def require_key(request: Request, accepted: Sequence[str], realm: str) -> None:
    key = presented_key(request)
    if key is None:
        raise HttpError(401, "unauthorized", f"{realm} needs an API key (X-API-Key or Authorization: Bearer)",
                        {"WWW-Authenticate": f'Bearer realm="{realm}"'})
    encoded = key.encode()
    if not any(hmac.compare_digest(encoded, k.encode()) for k in accepted):
        raise HttpError(403, "forbidden", f"this API key is not accepted for {realm}")
