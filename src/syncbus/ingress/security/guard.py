"""The checks every protected request goes through, cheapest and least revealing first.

Admin API (``require_scope``): address allow-list → credential (named admin key or JWT)
→ rate limit of that key → scope. Ingress (``guard_ingress``): address allow-list → client
certificate (``mtls``) → credential (a source key, or an admin key / JWT with
``ingress:<source>``) → the source's rate limit → the key's rate limit.

Addresses and certificates come first because they cost nothing and answer nothing about
keys to someone who should not even be talking to us. Rate limits come after the
credential, so that strangers cannot use up a source's budget and lock its real clients
out. Refusals are ``HttpError``s with a code per kind -- ``ip``, ``client_cert_required``,
``unauthorized``, ``forbidden``, ``invalid_token``, ``insufficient_scope``,
``rate_limited`` -- which is also the ``reason`` label of ``syncbus_ingress_rejected_total``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from starlette.requests import Request

from ..auth import _missing_key, _on_behalf_of, presented_key
from ..errors import HttpError
from .context import ADMIN_METRIC_SOURCE, SecurityContext, SourcePolicy, security_for
from .ipfilter import ForwardedForError, IpAddress, client_address
from .jwt import TokenRejected, looks_like_jwt
from .ratelimit import retry_after
from .scopes import DLQ_READ, Principal, ingress_scope, scope_for_request, scopes_of
from .tls import verified_client_cert

SCOPE_KEY = "syncbus.security"   # ASGI scope entry: {"principal": ..., "client": ...} of this request


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def _match(presented: str, keys: Mapping[str, str]) -> str | None:
    """The name of the key ``presented`` is; every key compared in constant time, no early exit."""
    digest = _digest(presented)
    found: str | None = None
    for name, key in keys.items():
        if hmac.compare_digest(digest, _digest(key)) and found is None:
            found = name
    return found


def request_state(scope: MutableMapping[str, Any]) -> dict[str, Any]:
    """This request's security notes (shared with the ASGI layer, which masks responses by them)."""
    state: dict[str, Any] | None = scope.get(SCOPE_KEY)
    if state is None:
        state = scope[SCOPE_KEY] = {}
    return state


def client_ip(request: Request, ctx: SecurityContext) -> IpAddress | None:
    """The client's address (behind trusted proxies: from X-Forwarded-For); 400 when a proxy sent garbage."""
    state = request_state(request.scope)
    if "client" in state:
        return state["client"]  # type: ignore[no-any-return]
    peer = request.scope.get("client")
    try:
        addr = client_address(peer[0] if peer else None, request.headers.getlist("x-forwarded-for"),
                              ctx.trusted_proxies)
    except ForwardedForError as exc:
        raise HttpError(400, "bad_request", str(exc)) from None
    state["client"] = addr
    return addr


def principal_of(request: Request) -> Principal | None:
    """Who this request authenticated as (after ``require_scope`` or ``guard_ingress``), if anyone."""
    return request_state(request.scope).get("principal")


def _ip_refusal(addr: IpAddress | None, where: str) -> HttpError:
    who = f"address {addr}" if addr is not None else "an unknown address"
    return HttpError(403, "ip", f"{where} does not accept requests from {who}")


def _token_refusal(exc: TokenRejected, realm: str) -> HttpError:
    reason = str(exc).replace('"', "'")
    return HttpError(401, "invalid_token", f"{realm}: {exc}",
                     {"WWW-Authenticate": f'Bearer realm="{realm}", error="invalid_token", '
                                          f'error_description="{reason}"'})


def scope_refusal(principal: Principal, scope: str) -> HttpError:
    return HttpError(403, "insufficient_scope", f"{principal.name} lacks the scope {scope!r}",
                     {"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
                     body={"missing_scope": scope})


def _rate_refusal(wait: float, what: str) -> HttpError:
    return HttpError(429, "rate_limited", f"too many requests for {what}; retry later",
                     {"Retry-After": retry_after(wait)})


def authenticate(request: Request, ctx: SecurityContext, realm: str,
                 keys: Mapping[str, str] | None = None) -> Principal:
    """The principal behind a named admin key or a JWT; 401 without a credential, 401/403 for a bad one."""
    credential = presented_key(request)
    if credential is None:
        raise _missing_key(realm)
    name = _match(credential, ctx.admin_keys if keys is None else keys)
    if name is not None:
        return Principal(name, scopes_of(name, ctx.key_scopes), "key", _on_behalf_of(request, name))
    if ctx.jwt is not None and looks_like_jwt(credential):
        try:
            claims = ctx.jwt.verify(credential)
        except TokenRejected as exc:
            raise _token_refusal(exc, realm) from None
        return Principal(claims.subject, claims.scopes, "jwt", _on_behalf_of(request, claims.subject))
    raise HttpError(403, "forbidden", f"this API key is not accepted for {realm}")


def _count(request: Request, source: str, code: str) -> None:
    metrics = getattr(request.app.state.runtime, "metrics", None)
    if metrics is not None:
        metrics.rejected_for(source, code).inc()


def _admin_path(request: Request) -> str:
    path: str = request.scope.get("path", "")
    root: str = request.scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def require_principal(request: Request, scope: str, realm: str = "the admin API",
                      keys: Mapping[str, str] | None = None) -> Principal:
    """As :func:`require_scope`, returning the whole principal (scopes, how they authenticated)."""
    ctx = security_for(request.app.state.runtime)
    try:
        addr = client_ip(request, ctx)
        if ctx.admin_allow and not ctx.admin_allow.contains(addr):
            raise _ip_refusal(addr, realm)
        if not (ctx.admin_keys if keys is None else keys) and ctx.jwt is None:
            raise HttpError(403, "forbidden", f"{realm} is disabled: set SYNCBUS_ADMIN_KEYS")
        principal = authenticate(request, ctx, realm, keys)
        if ctx.admin_rate is not None:
            wait = ctx.admin_rate.take(principal.name)
            if wait:
                raise _rate_refusal(wait, f"key {principal.name}")
        if not principal.allows(scope):
            raise scope_refusal(principal, scope)
    except HttpError as exc:
        _count(request, ADMIN_METRIC_SOURCE, exc.code)
        raise
    request_state(request.scope)["principal"] = principal
    return principal


def require_scope(request: Request, scope: str, realm: str = "the admin API",
                  keys: Mapping[str, str] | None = None) -> Any:
    """The audit ``Actor`` of a request allowed ``scope``; otherwise the HttpError to answer with.

    For the dead-letter API and the console: ``actor = require_scope(request, "dlq:write")``.
    A ``dlq:read``-only caller's responses must show payloads through ``masker_for(request)``.
    """
    return require_principal(request, scope, realm, keys).actor()


def require_inferred(request: Request, realm: str, keys: Mapping[str, str] | None = None) -> Any:
    """``require_scope`` with the scope the method and path imply (``scopes.scope_for_request``)."""
    return require_scope(request, scope_for_request(request.method, _admin_path(request)), realm, keys)


def masker_for(request: Request, principal: Principal | None = None) -> Any:
    """The masker to show payloads with to this request's principal, or None when it may see them all.

    ``principal``: for callers that authenticated otherwise (the console's session: ``principal_named``).
    """
    principal = principal or principal_of(request)
    ctx = security_for(request.app.state.runtime)
    if not ctx.masker or (principal is not None and principal.sees_personal_data):
        return None
    return ctx.masker


def principal_named(request: Request, name: str) -> Principal:
    """The principal of the named admin key ``name`` (a console session holds the name, not the key)."""
    ctx = security_for(request.app.state.runtime)
    return Principal(name, scopes_of(name, ctx.key_scopes), "key")


# -- ingress ---------------------------------------------------------------------------------


def _source_policy(request: Request, src: Any, ctx: SecurityContext) -> SourcePolicy:
    component = request.app.state.runtime.project.connectors.sources.get(src.name)
    return ctx.source_policy(src, component.config if component is not None else None)


def _ingress_principal(request: Request, ctx: SecurityContext, source: str, keys: Sequence[str]) -> Principal:
    """A source key, or an admin key or token holding ``ingress:<source>``."""
    realm = f"source {source}"
    credential = presented_key(request)
    if credential is None:
        raise _missing_key(realm)
    digest = _digest(credential)
    matched = -1
    for position, key in enumerate(keys):
        if hmac.compare_digest(digest, _digest(key)) and matched < 0:
            matched = position
    if matched >= 0:
        return Principal(f"{source}#key{matched + 1}", frozenset({ingress_scope(source)}), "source-key")
    try:
        principal = authenticate(request, ctx, realm)
    except HttpError as exc:
        if exc.code == "forbidden":
            raise HttpError(403, "forbidden", f"this API key is not accepted for {realm}") from None
        raise
    if not principal.allows(ingress_scope(source)):
        raise scope_refusal(principal, ingress_scope(source))
    return principal


def guard_ingress(request: Request, src: Any) -> Principal | None:
    """Every security check of ``POST /ingress/{source}`` before the body is read (module docstring).

    Returns who posted (None for an open source). The caller counts refusals by code.
    """
    ctx = security_for(request.app.state.runtime)
    policy = _source_policy(request, src, ctx)
    if policy.allow is not None:
        addr = client_ip(request, ctx)
        if not policy.allow.contains(addr):
            raise _ip_refusal(addr, f"source {src.name}")
    cert = verified_client_cert(request.scope)
    if policy.mtls and cert is None:
        raise HttpError(403, "client_cert_required",
                        f"source {src.name} accepts only connections with a verified TLS client certificate")
    principal: Principal | None = None
    if policy.api_keys is not None and (policy.api_keys or not policy.mtls):
        principal = _ingress_principal(request, ctx, src.name, policy.api_keys)
    elif cert is not None:
        principal = Principal(cert, frozenset({ingress_scope(src.name)}), "mtls")
    if policy.rate is not None:
        wait = policy.rate.take()
        if wait:
            raise _rate_refusal(wait, f"source {src.name}")
    if principal is not None and principal.via in ("key", "jwt") and ctx.admin_rate is not None:
        wait = ctx.admin_rate.take(principal.name)
        if wait:
            raise _rate_refusal(wait, f"key {principal.name}")
    request_state(request.scope)["principal"] = principal
    return principal


__all__ = ["DLQ_READ", "client_ip", "guard_ingress", "masker_for", "principal_named", "principal_of",
           "require_principal", "require_scope"]
