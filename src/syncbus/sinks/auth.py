"""Credentials for HTTP sinks: the ``auth:`` block, and the OAuth2 client-credentials token provider.

Also home of the small HTTP helpers that both the token endpoint and the sink
need (error descriptions, Retry-After, safe URLs), because http.py builds on
this module and not the other way round.

Secrets are ``SecretStr`` so they never show up in a repr, a log line or a
validation error; the config loader has already resolved ``*_env`` names.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import errno
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from syncbus.errors import DeliveryError
from syncbus.units import format_duration

# --------------------------------------------------------------------------- config


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OAuth2ClientCredentials(_Strict):
    """OAuth2 client-credentials grant (RFC 6749 §4.4): syncbus fetches and caches a bearer token."""

    token_url: str = Field(description="The authorization server's token endpoint.")
    client_id: str = Field(min_length=1, description="Client id.")
    client_secret: SecretStr = Field(description="Client secret (from the environment: client_secret_env).")
    scope: str | None = Field(None, description="Space-separated scopes to request (a list is joined).")
    audience: str | None = Field(None, description="The `audience` form field some servers (Auth0) need.")
    client_auth: Literal["basic", "post", "both"] = Field(
        "both",
        description="How to present the client credentials: HTTP Basic, form fields, or both "
                    "(the default, accepted by most servers).")

    @field_validator("scope", mode="before")
    @classmethod
    def _join_scopes(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return " ".join(str(v) for v in value)
        return value

    @field_validator("token_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return check_http_url(value)


class BearerAuth(_Strict):
    """A fixed bearer token: ``Authorization: Bearer <token>``."""

    token: SecretStr = Field(description="The token (from the environment only: token_env: VAR).")


class BasicAuth(_Strict):
    """HTTP Basic: ``Authorization: Basic base64(username:password)``."""

    username: str = Field(description="User name.")
    password: SecretStr = Field(description="Password (from the environment only: password_env: VAR).")


class ApiKeyAuth(_Strict):
    """A key in a header of your choice."""

    header: str = Field("X-API-Key", description="Header name to carry the key.")
    value: SecretStr = Field(description="The key (from the environment only: value_env: VAR).")


class HttpAuth(_Strict):
    """Exactly one of the supported schemes, e.g. ``auth: {bearer: {token_env: ERP_TOKEN}}``."""

    oauth2_client_credentials: OAuth2ClientCredentials | None = None
    bearer: BearerAuth | None = None
    basic: BasicAuth | None = None
    api_key: ApiKeyAuth | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> HttpAuth:
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            known = ", ".join(type(self).model_fields)
            if not given:
                raise ValueError(f"give one auth scheme: {known}")
            raise ValueError(f"give only one auth scheme, not {' and '.join(given)}")
        return self


def check_http_url(value: str) -> str:
    """Refuse anything but an absolute http(s) URL at config time, not at first delivery."""
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValueError(f"invalid URL {value!r}: {exc}") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"invalid URL {value!r}: expected http://host/... or https://host/...")
    return value


# --------------------------------------------------------------------------- shared HTTP helpers

RETRYABLE_STATUS = frozenset({408, 425, 429})
BODY_SNIPPET = 300


def safe_url(url: str | httpx.URL) -> str:
    """The URL for messages: no user:password, no query string (keys often travel there)."""
    u = httpx.URL(url)
    port = f":{u.port}" if u.port is not None else ""
    query = "?…" if u.query else ""
    return f"{u.scheme}://{u.host}{port}{u.path}{query}"


def body_snippet(content: bytes, limit: int = BODY_SNIPPET) -> str:
    """The start of a response body on one line, for a dead letter's error text."""
    text = content[: limit * 4].decode("utf-8", errors="replace")
    text = " ".join(text.split())
    return text[:limit] + ("…" if len(text) > limit else "")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP-date; None if absent or garbage."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else datetime.now(UTC).timestamp()
    return max(when.timestamp() - current, 0.0)


def _root_oserror(exc: BaseException) -> OSError | None:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError):
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


def describe_transport_error(exc: httpx.TransportError, url: str) -> str:
    """A short cause for a failed exchange: "connection refused: http://…" rather than httpx internals."""
    root = _root_oserror(exc)
    if isinstance(exc, httpx.ConnectError):
        if isinstance(root, ConnectionRefusedError) or getattr(root, "errno", None) == errno.ECONNREFUSED:
            return f"connection refused: {url}"
        if isinstance(root, socket.gaierror):
            return f"cannot resolve host: {url} ({root.strerror or root})"
        if "refused" in str(exc).lower() or "all connection attempts failed" in str(exc).lower():
            return f"connection refused: {url}"
        detail = (root.strerror if root is not None and root.strerror else str(exc)) or type(exc).__name__
        return f"cannot connect ({detail}): {url}"
    detail = str(exc) or (root.strerror if root is not None and root.strerror else "") or type(exc).__name__
    return f"connection error ({detail}): {url}"


# --------------------------------------------------------------------------- token provider


@dataclass(slots=True)
class _Token:
    value: str
    expires_at: float


class OAuth2TokenProvider:
    """Fetches, caches and shares one access token per sink.

    Single-flight: when the token is missing or stale, the first caller starts
    ONE request and every concurrent caller awaits that same request (and
    shares its failure, so a dead token endpoint costs one timeout, not fifty).
    The token is used until ``expires_in`` minus a margin (10% of the
    lifetime, at most ``margin`` seconds) so it does not expire in flight.
    """

    DEFAULT_LIFETIME = 300.0  # when the server omits expires_in; a 401 refreshes earlier anyway

    def __init__(self, config: OAuth2ClientCredentials, client: httpx.AsyncClient, *,
                 timeout: float = 10.0, margin: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._client = client
        self._timeout = timeout
        self._margin = margin
        self._clock = clock
        self._token: _Token | None = None
        self._inflight: asyncio.Task[str] | None = None
        self.fetches = 0  # token requests made; for tests and debugging

    async def token(self) -> str:
        current = self._token
        if current is not None and self._clock() < current.expires_at:
            return current.value
        if self._inflight is None:
            task = asyncio.get_running_loop().create_task(self._fetch())
            task.add_done_callback(self._fetch_done)
            self._inflight = task
        # shield: one cancelled sender must not cancel the request the others wait for
        return await asyncio.shield(self._inflight)

    def invalidate(self, token: str | None = None) -> None:
        """Forget the cached token; with ``token``, only if it is still that one.

        The guard matters under concurrency: fifty sends that all got a 401
        for the old token must not each throw away the fresh one.
        """
        if self._token is not None and (token is None or self._token.value == token):
            self._token = None

    def _fetch_done(self, task: asyncio.Task[str]) -> None:
        if self._inflight is task:
            self._inflight = None
        if not task.cancelled():
            task.exception()  # mark retrieved: waiters may all have gone away

    def _request_args(self) -> tuple[dict[str, str], dict[str, str]]:
        cfg = self.config
        secret = cfg.client_secret.get_secret_value()
        form = {"grant_type": "client_credentials"}
        if cfg.scope:
            form["scope"] = cfg.scope
        if cfg.audience:
            form["audience"] = cfg.audience
        headers = {"Accept": "application/json"}
        if cfg.client_auth in ("post", "both"):
            form["client_id"] = cfg.client_id
            form["client_secret"] = secret
        if cfg.client_auth in ("basic", "both"):
            pair = f"{cfg.client_id}:{secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        return form, headers

    async def _fetch(self) -> str:
        url = self.config.token_url
        where = safe_url(url)
        form, headers = self._request_args()
        self.fetches += 1
        started = self._clock()
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._client.post(url, data=form, headers=headers)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise DeliveryError(f"token endpoint timeout after {format_duration(self._timeout)}: {where}",
                                retryable=True) from exc
        except httpx.UnsupportedProtocol as exc:
            raise DeliveryError(f"token endpoint: {exc}: {where}", retryable=False) from exc
        except httpx.TransportError as exc:
            raise DeliveryError(f"token endpoint {describe_transport_error(exc, where)}",
                                retryable=True) from exc
        status = response.status_code
        if status in RETRYABLE_STATUS or status >= 500:
            raise DeliveryError(
                f"token endpoint unavailable: HTTP {status} from {where}: {body_snippet(response.content)}",
                retryable=True, status=status,
                retry_after=parse_retry_after(response.headers.get("retry-after")))
        if not 200 <= status < 300:
            raise DeliveryError(
                f"token endpoint refused client credentials: HTTP {status} from {where}: "
                f"{body_snippet(response.content)}", retryable=False, status=status)
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            data = None
        token = data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise DeliveryError(
                f"token endpoint returned no access_token: HTTP {status} from {where}: "
                f"{body_snippet(response.content)}", retryable=False, status=status)
        lifetime = self._lifetime(data.get("expires_in"))
        margin = min(self._margin, lifetime * 0.1)
        self._token = _Token(token, started + lifetime - margin)
        return token

    def _lifetime(self, expires_in: Any) -> float:
        try:
            return max(float(expires_in), 0.0)
        except (TypeError, ValueError):
            return self.DEFAULT_LIFETIME


# --------------------------------------------------------------------------- authenticators


class Authenticator:
    """Adds credentials to a request. ``refreshable`` says whether a 401 is worth one retry."""

    refreshable = False

    async def headers(self) -> dict[str, str]:
        raise NotImplementedError

    def invalidate(self, used: dict[str, str]) -> None:
        """The target answered 401 to a request carrying ``used``."""
        return None


class StaticAuth(Authenticator):
    """Bearer, Basic or API key: the same header on every request."""

    def __init__(self, name: str, value: str) -> None:
        self._headers = {name: value}

    async def headers(self) -> dict[str, str]:
        return self._headers


class OAuth2Auth(Authenticator):
    refreshable = True

    def __init__(self, provider: OAuth2TokenProvider) -> None:
        self.provider = provider

    async def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.provider.token()}"}

    def invalidate(self, used: dict[str, str]) -> None:
        value = used.get("Authorization", "")
        self.provider.invalidate(value.removeprefix("Bearer ") if value else None)


def make_authenticator(auth: HttpAuth | None, token_client: httpx.AsyncClient | None,
                       timeout: float) -> Authenticator | None:
    """The authenticator for an ``auth:`` block; OAuth2 needs a client for the token endpoint."""
    if auth is None:
        return None
    if auth.bearer is not None:
        return StaticAuth("Authorization", f"Bearer {auth.bearer.token.get_secret_value()}")
    if auth.basic is not None:
        pair = f"{auth.basic.username}:{auth.basic.password.get_secret_value()}".encode()
        return StaticAuth("Authorization", "Basic " + base64.b64encode(pair).decode("ascii"))
    if auth.api_key is not None:
        return StaticAuth(auth.api_key.header, auth.api_key.value.get_secret_value())
    if auth.oauth2_client_credentials is not None:
        if token_client is None:
            raise ValueError("OAuth2 needs an HTTP client for the token endpoint")
        return OAuth2Auth(OAuth2TokenProvider(auth.oauth2_client_credentials, token_client, timeout=timeout))
    raise ValueError("empty auth block")  # unreachable: HttpAuth validates exactly one
