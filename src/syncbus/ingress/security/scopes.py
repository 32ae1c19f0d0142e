"""Scopes: what a credential may do, so that each person and system gets only what it needs.

The scopes are few on purpose:

* ``ingress:<source>`` (or ``ingress:*``) -- post records to an http_ingress source;
* ``dlq:read`` -- list and read dead letters, their audit, traces and the ledger;
  personal-data fields of payloads are masked (``SYNCBUS_MASK_FIELDS``);
* ``dlq:write`` -- edit, replay and discard dead letters (implies ``dlq:read``, unmasked:
  fixing a payload needs its real values);
* ``admin`` -- everything of the admin API (reload included); NOT ingress, which stays a
  grant of its own so that an operator's key cannot be used to inject records.

Scopes come from ``SYNCBUS_KEY_SCOPES=alice=dlq:read,bob=dlq:read+dlq:write`` for named
admin keys, and from the ``scope`` claim of a JWT. A key that is not listed there has
``admin``: that is what every admin key could do before scopes existed, so existing
deployments keep working unchanged.

Scopes live in their own variable rather than in ``SYNCBUS_ADMIN_KEYS`` (``alice:KEY:dlq:read``)
because admin keys may themselves contain ``:`` (base64 padding, URNs): ``alice:a:b:c`` already
means "alice's key is ``a:b:c``", and appending scopes there could not be told apart from a key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ...errors import SyncbusError
from ..auth import Actor

ADMIN = "admin"
DLQ_READ = "dlq:read"
DLQ_WRITE = "dlq:write"
INGRESS_PREFIX = "ingress:"
INGRESS_ANY = "ingress:*"
FIXED_SCOPES = frozenset({ADMIN, DLQ_READ, DLQ_WRITE})
# What holding a scope also grants (least privilege keeps this short).
IMPLIED: dict[str, frozenset[str]] = {
    ADMIN: frozenset({DLQ_READ, DLQ_WRITE}),
    DLQ_WRITE: frozenset({DLQ_READ}),
}
_SOURCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SCOPE_SEPARATORS = re.compile(r"[+\s]+")


class ScopeError(SyncbusError):
    """A scope list (``SYNCBUS_KEY_SCOPES``) cannot be used as given; names the entry, never a key."""


def check_scope(scope: str) -> str:
    """``scope`` if it is one syncbus knows; a typo must fail at start, not silently grant nothing."""
    if scope in FIXED_SCOPES or scope == INGRESS_ANY:
        return scope
    if scope.startswith(INGRESS_PREFIX) and _SOURCE.fullmatch(scope[len(INGRESS_PREFIX):]):
        return scope
    raise ScopeError(f"unknown scope {scope!r} (expected admin, dlq:read, dlq:write, ingress:<source> "
                     "or ingress:*)")


def split_scopes(text: str) -> list[str]:
    """``"dlq:read+dlq:write"`` or ``"dlq:read dlq:write"`` (an OAuth ``scope`` claim) → the scopes."""
    return [s for s in _SCOPE_SEPARATORS.split(text.strip()) if s]


def parse_key_scopes(text: str, key_names: Iterable[str]) -> dict[str, frozenset[str]]:
    """``alice=dlq:read,bob=dlq:read+dlq:write`` → name → scopes, for names of ``SYNCBUS_ADMIN_KEYS``.

    A name that has no admin key is an error (a typo would leave the real key
    with ``admin``); so is an entry without scopes or a scope syncbus does not know.
    """
    known = set(key_names)
    out: dict[str, frozenset[str]] = {}
    for position, raw in enumerate(text.split(","), 1):
        entry = raw.strip()
        if not entry:
            continue
        name, sep, scopes_text = entry.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ScopeError(f"SYNCBUS_KEY_SCOPES entry {position}: expected name=scope+scope")
        if name not in known:
            raise ScopeError(f"SYNCBUS_KEY_SCOPES names {name!r}, which has no key in SYNCBUS_ADMIN_KEYS")
        if name in out:
            raise ScopeError(f"SYNCBUS_KEY_SCOPES names {name!r} twice")
        scopes = split_scopes(scopes_text)
        if not scopes:
            raise ScopeError(f"SYNCBUS_KEY_SCOPES entry {position} ({name}) lists no scope")
        try:
            out[name] = frozenset(check_scope(s) for s in scopes)
        except ScopeError as exc:
            raise ScopeError(f"SYNCBUS_KEY_SCOPES entry {position} ({name}): {exc}") from None
    return out


def expand(scopes: Iterable[str]) -> frozenset[str]:
    """The scopes plus everything they imply."""
    granted = set(scopes)
    for scope in list(granted):
        granted |= IMPLIED.get(scope, frozenset())
    return frozenset(granted)


def ingress_scope(source: str) -> str:
    return INGRESS_PREFIX + source


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request and what they may do; ``via`` says how they proved it (key, jwt, source-key, mtls)."""

    name: str
    scopes: frozenset[str]
    via: str
    on_behalf_of: str | None = None
    granted: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "granted", expand(self.scopes))

    def allows(self, scope: str) -> bool:
        if scope in self.granted:
            return True
        return scope.startswith(INGRESS_PREFIX) and INGRESS_ANY in self.granted

    @property
    def sees_personal_data(self) -> bool:
        """Unmasked payloads need ``dlq:write``: whoever may only look gets the masked view."""
        return self.allows(DLQ_WRITE)

    def actor(self) -> Actor:
        return Actor(self.name, self.on_behalf_of)


def scopes_of(name: str, key_scopes: Mapping[str, frozenset[str]]) -> frozenset[str]:
    """A named admin key's scopes: as listed, else ``admin`` (keys from before scopes keep their rights)."""
    return key_scopes.get(name, frozenset({ADMIN}))


def scope_for_request(method: str, path: str) -> str:
    """The scope an admin request needs when its handler did not say: reading is dlq:read, changing dlq:write.

    ``authenticate_admin`` uses this so that handlers written before scopes
    existed are already least-privilege; ``/admin/...`` needs ``admin``.
    """
    if path.startswith("/admin"):
        return ADMIN
    return DLQ_READ if method.upper() in ("GET", "HEAD", "OPTIONS") else DLQ_WRITE
