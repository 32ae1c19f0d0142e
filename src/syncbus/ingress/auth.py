"""API keys: ``X-API-Key: KEY`` or ``Authorization: Bearer KEY`` (DESIGN §7), and named admin keys (§5).

Keys are compared in constant time. No key sent is 401 (who are you?); a key
that is not accepted is 403 (you may not).

Admin keys are named (``SYNCBUS_ADMIN_KEYS=alice:KEY1,bob:KEY2``) because the
audit must say *who* replayed or discarded a dead letter, and a person's word
in a header proves nothing: the actor is the name of the key that
authenticated, and ``X-Actor`` is only a note of whom that person acted for.
No part of a key is ever printed, logged or put into an error message.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from starlette.requests import Request

from ..errors import SyncbusError
from .errors import HttpError

# A name before the first ':' only counts as a name when it looks like one, so that
# keys which themselves contain ':' (base64 padding, URNs) still work as bare keys.
ADMIN_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
BARE_KEY_NAME = "admin"
MAX_ON_BEHALF_OF = 128


class AdminKeyError(SyncbusError):
    """``SYNCBUS_ADMIN_KEYS`` cannot be used as given; the message names entries, never key material."""


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did something through the admin API: the key's name, and whom they said they acted for."""

    name: str
    on_behalf_of: str | None = None

    def __str__(self) -> str:
        return f"{self.name} (for {self.on_behalf_of})" if self.on_behalf_of else self.name


def parse_admin_keys(text: str) -> dict[str, str]:
    """``alice:KEY1,bob:KEY2,KEY3`` → ``{"alice": "KEY1", "bob": "KEY2", "admin": "KEY3"}`` (name → key).

    An entry is ``name:key`` when the part before its first ':' matches
    ``[A-Za-z0-9._-]{1,64}``; otherwise the whole entry is a bare key. The first
    bare key is named ``admin``, further ones ``admin-2``, ``admin-3``… so that
    an old unnamed list keeps working and its keys stay told apart in the audit.
    A name given twice, or one key given twice, is an error: the actor would be
    ambiguous.
    """
    keys: dict[str, str] = {}
    bare = 0
    for position, raw in enumerate(text.split(","), 1):
        entry = raw.strip()
        if not entry:
            continue
        name, sep, key = entry.partition(":")
        name = name.strip()
        if sep and ADMIN_NAME.fullmatch(name):
            key = key.strip()
        else:
            bare += 1
            name, key = (BARE_KEY_NAME if bare == 1 else f"{BARE_KEY_NAME}-{bare}"), entry
        if not key:
            raise AdminKeyError(f"SYNCBUS_ADMIN_KEYS entry {position} ({name}) has an empty key")
        if name in keys:
            raise AdminKeyError(f"SYNCBUS_ADMIN_KEYS names {name!r} twice; every admin key needs its own name")
        same = next((other for other, k in keys.items() if k == key), None)
        if same is not None:
            raise AdminKeyError(f"SYNCBUS_ADMIN_KEYS gives {same!r} and {name!r} the same key")
        keys[name] = key
    return keys


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


def _digest(key: str) -> bytes:
    # Comparing fixed-length digests keeps the time of a comparison independent of the keys' lengths.
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def _missing_key(realm: str) -> HttpError:
    return HttpError(401, "unauthorized", f"{realm} needs an API key (X-API-Key or Authorization: Bearer)",
                     {"WWW-Authenticate": f'Bearer realm="{realm}"'})


def require_key(request: Request, accepted: Sequence[str], realm: str) -> None:
    key = presented_key(request)
    if key is None:
        raise _missing_key(realm)
    digest = _digest(key)
    if not any(hmac.compare_digest(digest, _digest(k)) for k in accepted):
        raise HttpError(403, "forbidden", f"this API key is not accepted for {realm}")


def _on_behalf_of(request: Request, name: str) -> str | None:
    note = (request.headers.get("x-actor") or "").strip()
    if not note or note == name:
        return None
    if len(note) > MAX_ON_BEHALF_OF or not note.isprintable():
        raise HttpError(400, "bad_request", f"X-Actor must be at most {MAX_ON_BEHALF_OF} printable characters")
    return note


def authenticate_admin(request: Request, keys: Mapping[str, str], realm: str = "the admin API",
                       scope: str | None = None) -> Actor:
    """The actor behind an admin request: 401 without a key, 403 with an unknown one or when none are set.

    Every key is compared (no early exit), so the time taken does not tell
    which key or how many keys are configured.

    Issue 12: the checks live in ``security.guard.require_scope`` -- the admin
    address allow-list, JWTs, the key's rate limit and its scope. ``scope``
    defaults to what the method and path imply (GET: dlq:read, other methods:
    dlq:write, /admin/...: admin), so callers from before scopes are least-privilege.
    """
    from .security.guard import require_inferred, require_scope

    if scope is None:
        return require_inferred(request, realm, keys)  # type: ignore[no-any-return]
    return require_scope(request, scope, realm, keys)  # type: ignore[no-any-return]
