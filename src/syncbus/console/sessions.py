"""Console sessions: a random id in a cookie, everything else on the server.

The cookie holds only an unguessable id; the server maps it to the *name* of
the admin key that logged in (the audit actor), a CSRF token and expiry
times. The key itself is never stored -- only its digest, so a session ends
as soon as that key is removed or rotated. Sessions live in the memory of
the process that created them: a restart logs everyone out, which for an
operator console is the safe direction.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

IDLE_SECONDS = 30 * 60           # a session unused this long ends
MAX_AGE_SECONDS = 8 * 3600       # …and every session ends after a working day
MAX_SESSIONS = 10_000            # oldest sessions go first beyond this (a flood of logins cannot exhaust memory)
MAX_FLASHES = 10
LOGIN_WINDOW = 300.0             # login failures counted per client over this many seconds
LOGIN_FAILURES = 10              # …and refused beyond this many


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def match_key(keys: Mapping[str, str], presented: str) -> str | None:
    """The name of the admin key ``presented`` is, or None; every key is compared, in constant time each."""
    digest = key_digest(presented)
    found: str | None = None
    for name, key in keys.items():
        if hmac.compare_digest(digest, key_digest(key)) and found is None:
            found = name
    return found


@dataclass
class Session:
    """One logged-in person: the key's name is the actor of everything done in it."""

    id: str
    name: str
    key_digest: bytes
    csrf: str
    created: float
    last_seen: float
    flashes: list[tuple[str, str]] = field(default_factory=list)   # (kind: ok | error, text)

    def flash(self, kind: str, text: str) -> None:
        """A message for the next page (post/redirect/get): kept server-side, so nobody can forge one in a URL."""
        self.flashes = [*self.flashes, (kind, text)][-MAX_FLASHES:]

    def take_flashes(self) -> list[tuple[str, str]]:
        out, self.flashes = self.flashes, []
        return out

    def csrf_ok(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.csrf.encode())


class SessionStore:
    """Thread-safe map of session id → :class:`Session` with idle and absolute expiry."""

    def __init__(self, clock: Callable[[], float] = time.time, idle: float = IDLE_SECONDS,
                 max_age: float = MAX_AGE_SECONDS) -> None:
        self._clock = clock
        self.idle = idle
        self.max_age = max_age
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, name: str, key: str) -> Session:
        now = self._clock()
        session = Session(secrets.token_urlsafe(32), name, key_digest(key), secrets.token_urlsafe(32), now, now)
        with self._lock:
            self._prune(now)
            while len(self._sessions) >= MAX_SESSIONS:
                oldest = min(self._sessions.values(), key=lambda s: s.last_seen)
                del self._sessions[oldest.id]
            self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None, keys: Mapping[str, str]) -> Session | None:
        """The live session, touched; None (and gone) when expired or its key was removed or changed."""
        if not session_id:
            return None
        now = self._clock()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            key = keys.get(session.name)
            expired = now - session.last_seen > self.idle or now - session.created > self.max_age
            if expired or key is None or not hmac.compare_digest(key_digest(key), session.key_digest):
                del self._sessions[session_id]
                return None
            session.last_seen = now
            return session

    def end(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def _prune(self, now: float) -> None:
        for sid in [s.id for s in self._sessions.values()
                    if now - s.last_seen > self.idle or now - s.created > self.max_age]:
            del self._sessions[sid]

    def __len__(self) -> int:
        return len(self._sessions)


class LoginThrottle:
    """Refuses logins from a client after too many failures in a window: guessing keys stays slow."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, window: float = LOGIN_WINDOW,
                 limit: int = LOGIN_FAILURES) -> None:
        self._clock = clock
        self.window = window
        self.limit = limit
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> list[float]:
        times = [t for t in self._failures.get(client, []) if now - t < self.window]
        if times:
            self._failures[client] = times
        else:
            self._failures.pop(client, None)
        return times

    def blocked(self, client: str) -> bool:
        with self._lock:
            return len(self._recent(client, self._clock())) >= self.limit

    def failed(self, client: str) -> None:
        with self._lock:
            now = self._clock()
            if len(self._failures) > MAX_SESSIONS:   # bounded, like the sessions
                self._failures.clear()
            self._failures[client] = [*self._recent(client, now), now]

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)
