"""Security of the HTTP side (issue 12): TLS, address allow-lists, scopes, JWT, rate limits, masking.

The API for handlers (dead-letter API, console)::

    from syncbus.ingress.security import require_scope, masker_for
    actor = require_scope(request, "dlq:write")     # Actor, or raises the HttpError to answer with
    masker = masker_for(request)                    # None, or a Masker: masker.dead_letter(dl.to_json())

Modules: ``ipfilter`` (allow-lists, X-Forwarded-For), ``scopes``, ``jwt``, ``ratelimit``,
``masking``, ``tls`` (server context, client certificates), ``context`` (the settings of a
node), ``guard`` (the checks), ``asgi`` (client address and the masking net).

Names are imported lazily: the source spec (``sources/http_ingress.py``) imports the small
validators of ``ipfilter``/``ratelimit`` without pulling in the web stack.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "require_scope": "guard", "require_principal": "guard", "guard_ingress": "guard", "masker_for": "guard",
    "principal_of": "guard", "principal_named": "guard", "client_ip": "guard",
    "SecurityContext": "context", "security_for": "context", "build_context": "context",
    "Principal": "scopes", "Masker": "masking",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
