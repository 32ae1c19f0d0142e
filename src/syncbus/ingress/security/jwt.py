"""JWT bearer tokens from the company's identity provider, as an alternative to shared API keys.

``SYNCBUS_JWT_ISSUER``, ``SYNCBUS_JWT_AUDIENCE`` and ``SYNCBUS_JWT_JWKS`` (a JWKS file, or an
``https://`` URL) turn them on. A token must be signed by a key of the JWKS with an
asymmetric algorithm (RS/PS/ES/EdDSA: never ``none`` or HMAC, so a public key can never
be used as a shared secret), carry ``exp``, ``iss`` and ``aud`` matching the settings and
a ``sub`` (the audit actor); its ``scope`` claim (space-separated, or a list) says what it
may do (scopes.py).

Verification is CPU only and never waits for the network in a request: a JWKS file is
re-read when it changes, a JWKS URL is fetched at start and refreshed in the background
(every ``REFRESH_SECONDS``, and soon after a token names a key id not seen yet).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt as pyjwt
from jwt import PyJWK
from jwt.exceptions import (
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAudienceError,
    InvalidIssuerError,
    InvalidSignatureError,
    InvalidTokenError,
    MissingRequiredClaimError,
    PyJWKError,
)

from ...errors import SyncbusError
from .scopes import ScopeError, check_scope, split_scopes

log = logging.getLogger(__name__)

ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
                        "EdDSA"})
LEEWAY_SECONDS = 30.0         # clock skew allowed on exp/nbf/iat
REFRESH_SECONDS = 300.0       # a JWKS URL is fetched again this often
UNKNOWN_KID_COOLDOWN = 30.0   # …and at most this often because of a token with an unknown key id
FETCH_TIMEOUT = 5.0
MAX_JWKS_BYTES = 1024 * 1024
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class JwtConfigError(SyncbusError):
    """The JWT settings cannot be used (missing issuer/audience, unreadable JWKS, bad URL)."""


class TokenRejected(SyncbusError):
    """A bearer token that is not accepted; the message says why, for the client (RFC 6750 invalid_token)."""


@dataclass(frozen=True)
class TokenClaims:
    subject: str
    scopes: frozenset[str]
    claims: Mapping[str, Any]


def looks_like_jwt(credential: str) -> bool:
    """Three base64url parts: a JWT, not an API key (keys are compared first in any case)."""
    parts = credential.split(".")
    return len(parts) == 3 and all(parts[:2]) and credential.startswith("eyJ")


class _JwksFile:
    """A JWKS file, re-read when its modification time or size changes (keys rotate without a restart)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._keys: list[_Key] | None = None
        self._lock = threading.Lock()
        self.keys()  # unreadable at start is a start-up error

    def keys(self) -> list[_Key]:
        try:
            st = self.path.stat()
        except OSError as exc:
            if self._keys is not None:
                log.warning("JWKS file %s unreadable (%s); keeping the keys read before", self.path, exc)
                return self._keys
            raise JwtConfigError(f"SYNCBUS_JWT_JWKS: cannot read {self.path}: {exc.strerror or exc}") from None
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._stamp or self._keys is None:
                try:
                    keys = _parse_jwks(self.path.read_bytes()[:MAX_JWKS_BYTES], str(self.path))
                except (OSError, JwtConfigError) as exc:
                    if self._keys is None:  # at start: a start-up error
                        if isinstance(exc, JwtConfigError):
                            raise
                        raise JwtConfigError(f"SYNCBUS_JWT_JWKS: cannot read {self.path}: "
                                             f"{exc.strerror or exc}") from None
                    # half-written, emptied, broken: the keys read before stay until the file is good again
                    log.warning("JWKS file %s unusable (%s); keeping the keys read before", self.path, exc)
                    self._stamp = stamp  # one warning per change of the file, not one per request
                    return self._keys
                self._keys, self._stamp = keys, stamp
            return self._keys

    def unknown_kid(self) -> None:
        """Nothing to do: a changed file is noticed on the next call."""


class _JwksUrl:
    """A JWKS URL, fetched at start and refreshed by a daemon thread; requests never wait for it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._keys: list[_Key] | None = None
        self._wake = threading.Event()
        self._last_forced = 0.0
        try:
            self._keys = self._fetch()
        except JwtConfigError as exc:
            log.warning("%s; tokens are refused until the keys can be fetched", exc)
        threading.Thread(target=self._loop, name="syncbus-jwks", daemon=True).start()

    def _fetch(self) -> list[_Key]:
        try:
            response = httpx.get(self.url, timeout=FETCH_TIMEOUT, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise JwtConfigError(f"SYNCBUS_JWT_JWKS: cannot fetch {self.url}: {exc}") from None
        if response.status_code != 200:
            raise JwtConfigError(f"SYNCBUS_JWT_JWKS: {self.url} answered {response.status_code}")
        return _parse_jwks(response.content[:MAX_JWKS_BYTES], self.url)

    def _loop(self) -> None:
        while True:
            self._wake.wait(REFRESH_SECONDS)
            self._wake.clear()
            try:
                self._keys = self._fetch()
            except JwtConfigError as exc:
                log.warning("%s; keeping the keys fetched before", exc)

    def keys(self) -> list[_Key]:
        if self._keys is None:
            self.unknown_kid()
            raise TokenRejected("the signing keys of the identity provider are not available yet; retry shortly")
        return self._keys

    def unknown_kid(self) -> None:
        now = time.monotonic()
        if now - self._last_forced >= UNKNOWN_KID_COOLDOWN:
            self._last_forced = now
            self._wake.set()


@dataclass(frozen=True)
class _Key:
    """One signing key of a JWKS, with the algorithm it declares (if any: then tokens must use exactly it)."""

    jwk: PyJWK
    kid: str | None
    alg: str | None


def _parse_jwks(raw: bytes, where: str) -> list[_Key]:
    """The asymmetric signing keys of a JWKS document; symmetric ("oct") and unusable keys are left out."""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise JwtConfigError(f"SYNCBUS_JWT_JWKS: {where} is not JSON: {exc}") from None
    entries = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise JwtConfigError(f"SYNCBUS_JWT_JWKS: {where} has no \"keys\" list")
    keys: list[_Key] = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC", "OKP"):
            continue
        if entry.get("use", "sig") != "sig":
            continue
        alg = entry.get("alg")
        if alg is not None and alg not in ALGORITHMS:
            continue
        try:
            jwk = PyJWK(entry)
        except (PyJWKError, ValueError, TypeError) as exc:
            log.warning("SYNCBUS_JWT_JWKS: %s: key %r left out: %s", where, entry.get("kid"), exc)
            continue
        keys.append(_Key(jwk, entry.get("kid") if isinstance(entry.get("kid"), str) else None, alg))
    if not keys:
        raise JwtConfigError(f"SYNCBUS_JWT_JWKS: {where} has no RSA, EC or OKP signing key")
    return keys


def _jwks_source(spec: str) -> _JwksFile | _JwksUrl:
    parts = urlsplit(spec)
    if parts.scheme in ("http", "https"):
        if parts.scheme == "http" and (parts.hostname or "") not in LOOPBACK_HOSTS:
            raise JwtConfigError("SYNCBUS_JWT_JWKS: a JWKS URL must be https:// (keys fetched in clear text "
                                 "could be replaced on the way)")
        return _JwksUrl(spec)
    return _JwksFile(Path(os.path.expanduser(spec)))


class JwtVerifier:
    """Checks bearer tokens against the issuer, audience and keys of the settings."""

    def __init__(self, issuer: str, audience: str, jwks: str) -> None:
        if not issuer or not audience or not jwks:
            raise JwtConfigError("JWT tokens need SYNCBUS_JWT_ISSUER, SYNCBUS_JWT_AUDIENCE and SYNCBUS_JWT_JWKS "
                                 "all set")
        self.issuer = issuer
        self.audience = audience
        self._jwks = _jwks_source(jwks)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> JwtVerifier | None:
        values = {k: (env.get(f"SYNCBUS_JWT_{k}") or "").strip() for k in ("ISSUER", "AUDIENCE", "JWKS")}
        if not any(values.values()):
            return None
        return cls(values["ISSUER"], values["AUDIENCE"], values["JWKS"])

    def _key(self, token: str) -> tuple[PyJWK, str]:
        try:
            header = pyjwt.get_unverified_header(token)
        except InvalidTokenError:
            raise TokenRejected("the bearer token is not a well-formed JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALGORITHMS:  # a list or an object: no algorithm either
            raise TokenRejected(f"token algorithm {str(alg)[:20]!r} is not accepted (asymmetric signatures only)")
        kid = header.get("kid")
        keys = self._jwks.keys()
        candidates = [k for k in keys if kid is None or k.kid == kid]
        if not candidates:
            self._jwks.unknown_kid()
            raise TokenRejected(f"token signed with unknown key id {str(kid)[:64]!r}")
        if len(candidates) > 1:
            raise TokenRejected("the token names no key id (kid) and the JWKS has several keys")
        key = candidates[0]
        if key.alg is not None and key.alg != alg:
            raise TokenRejected(f"token algorithm {alg} is not the one its key is for ({key.alg})")
        return key.jwk, alg

    def verify(self, token: str) -> TokenClaims:
        """The token's subject and scopes, or :class:`TokenRejected` saying why not."""
        key, alg = self._key(token)
        try:
            claims = pyjwt.decode(token, key=key.key, algorithms=[alg], audience=self.audience, issuer=self.issuer,
                                  leeway=LEEWAY_SECONDS, options={"require": ["exp", "iss", "aud", "sub"]})
        except ExpiredSignatureError:
            raise TokenRejected("the token has expired") from None
        except InvalidAudienceError:
            raise TokenRejected(f"the token is not meant for this service (audience must be {self.audience!r})") \
                from None
        except InvalidIssuerError:
            raise TokenRejected(f"the token was not issued by {self.issuer!r}") from None
        except ImmatureSignatureError:
            raise TokenRejected("the token is not valid yet") from None
        except MissingRequiredClaimError as exc:
            raise TokenRejected(f"the token lacks the {exc.claim!r} claim") from None
        except InvalidSignatureError:
            raise TokenRejected("the token signature does not verify") from None
        except (InvalidTokenError, PyJWKError, ValueError, TypeError) as exc:
            raise TokenRejected(f"the token is not accepted: {type(exc).__name__}") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject.strip() or len(subject) > 200 or not subject.isprintable():
            raise TokenRejected("the token's sub claim must be a printable name of at most 200 characters")
        return TokenClaims(subject.strip(), _token_scopes(claims.get("scope")), claims)


def _token_scopes(claim: Any) -> frozenset[str]:
    """Scopes syncbus knows from a ``scope`` claim; others (openid, profile, …) are ignored, not errors."""
    if isinstance(claim, str):
        items = split_scopes(claim)
    elif isinstance(claim, list):
        items = [s for s in claim if isinstance(s, str)]
    else:
        items = []
    known: set[str] = set()
    for item in items:
        try:
            known.add(check_scope(item))
        except ScopeError:
            continue
    return frozenset(known)
