"""Console sessions: a random id in a cookie, everything else on the server -- in the state store.

The cookie holds only an unguessable id; the server maps it to the *name* of
the admin key that logged in (the audit actor), a CSRF token, pending flash
messages and expiry times. The key itself is never stored -- only its
digest, so a session ends as soon as that key is removed or rotated.

The running app keeps sessions in its state store (``state/sessions.py``):
``syncbus run`` serves the port from several worker processes and several
nodes may share one PostgreSQL, so a session kept in one process's memory
would be unknown whenever a new connection lands on another worker. The
store keeps only the digest of the id. Without a store (unit tests) an
in-memory backend behaves the same.

Costs per page load: one read; ``last_seen`` is written at most every
``TOUCH_SECONDS`` per session (so the idle limit is exact to within that),
and the flash messages only when a page showed or a request added some.

The login throttle counts failures per client address in the node's shared
buckets (``ingress/security/shared_buckets.py``), so every worker of a node
sees the same count; several nodes count each on their own.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from ..ingress.security.shared_buckets import SharedBuckets
from ..state.sessions import Flash, SessionRow, session_digest

IDLE_SECONDS = 30 * 60           # a session unused this long ends
MAX_AGE_SECONDS = 8 * 3600       # …and every session ends after a working day
TOUCH_SECONDS = 30.0             # last_seen is written at most this often per session (page loads stay reads)
MAX_SESSIONS = 10_000            # least recently used sessions go first beyond this (a flood of logins is bounded)
MAX_FLASHES = 10
LOGIN_WINDOW = 300.0             # login failures counted per client over this many seconds
LOGIN_FAILURES = 10              # …and refused beyond this many
LOGIN_SLOTS = 4096               # client addresses remembered by a process of its own (no workers)


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
    """One logged-in person, as one request sees it: the key's name is the actor of everything done in it.

    Flash changes are kept on the object and written by
    :meth:`SessionStore.save` once the request is handled (the console does
    that for every route), so the page after a redirect -- served by any
    worker -- shows them.
    """

    id: str
    name: str
    key_digest: bytes
    csrf: str
    created: float
    last_seen: float
    flashes: list[Flash] = field(default_factory=list)   # (kind: ok | error, text)
    _stored: int = field(default=0, repr=False)           # how many of `flashes` the store holds
    _taken: int = field(default=0, repr=False)            # stored messages shown here: removed on save
    _added: list[Flash] = field(default_factory=list, repr=False)   # messages of this request, not yet saved

    def flash(self, kind: str, text: str) -> None:
        """A message for the next page (post/redirect/get): kept server-side, so nobody can forge one in a URL."""
        self.flashes = [*self.flashes, (kind, text)][-MAX_FLASHES:]
        self._added = [*self._added, (kind, text)][-MAX_FLASHES:]

    def take_flashes(self) -> list[Flash]:
        out, self.flashes = self.flashes, []
        self._taken, self._stored, self._added = self._taken + self._stored, 0, []
        return out

    @property
    def changed(self) -> bool:
        """Messages were shown or added: the store needs to hear of it."""
        return self._taken > 0 or bool(self._added)

    def csrf_ok(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.csrf.encode())


class SessionBackend(Protocol):
    """Where session rows live: the state store's ``StoredSessions``, or :class:`MemorySessions`."""

    def add(self, session_id: str, row: SessionRow, *, seen_before: float, created_before: float,
            keep: int) -> None: ...
    def load(self, session_id: str) -> SessionRow | None: ...
    def touch(self, session_id: str, at: float) -> None: ...
    def update_flashes(self, session_id: str, taken: int, added: Sequence[Flash], limit: int) -> None: ...
    def remove(self, session_id: str) -> None: ...
    def count(self) -> int: ...


class MemorySessions:
    """Rows in this process only: for tests and apps without a state store (never a multi-worker node)."""

    def __init__(self) -> None:
        self._rows: dict[str, SessionRow] = {}
        self._lock = threading.Lock()

    def add(self, session_id: str, row: SessionRow, *, seen_before: float, created_before: float,
            keep: int) -> None:
        with self._lock:
            for digest in [d for d, r in self._rows.items() if r.last_seen < seen_before or r.created < created_before]:
                del self._rows[digest]
            while self._rows and len(self._rows) >= keep:
                del self._rows[min(self._rows, key=lambda d: self._rows[d].last_seen)]
            self._rows[session_digest(session_id)] = row

    def load(self, session_id: str) -> SessionRow | None:
        with self._lock:
            return self._rows.get(session_digest(session_id))

    def touch(self, session_id: str, at: float) -> None:
        with self._lock:
            digest = session_digest(session_id)
            if digest in self._rows:
                self._rows[digest] = replace(self._rows[digest], last_seen=at)

    def update_flashes(self, session_id: str, taken: int, added: Sequence[Flash], limit: int) -> None:
        with self._lock:
            digest = session_digest(session_id)
            if digest in self._rows:
                row = self._rows[digest]
                self._rows[digest] = replace(row, flashes=(*row.flashes[taken:], *added)[-limit:])

    def remove(self, session_id: str) -> None:
        with self._lock:
            self._rows.pop(session_digest(session_id), None)

    def count(self) -> int:
        return len(self._rows)


class SessionStore:
    """Sessions with idle and absolute expiry, over a backend shared by every worker (or memory, for tests).

    Blocking: the console calls it through ``asyncio.to_thread``.
    """

    def __init__(self, clock: Callable[[], float] = time.time, idle: float = IDLE_SECONDS,
                 max_age: float = MAX_AGE_SECONDS, backend: SessionBackend | None = None,
                 touch_every: float = TOUCH_SECONDS) -> None:
        self._clock = clock
        self.idle = idle
        self.max_age = max_age
        self.touch_every = touch_every
        self.backend: SessionBackend = backend if backend is not None else MemorySessions()

    def create(self, name: str, key: str) -> Session:
        """A new session for the key named ``name``; expired sessions are pruned on the way."""
        now = self._clock()
        session = Session(secrets.token_urlsafe(32), name, key_digest(key), secrets.token_urlsafe(32), now, now)
        self.backend.add(session.id, SessionRow(name, session.key_digest, session.csrf, now, now),
                         seen_before=now - self.idle, created_before=now - self.max_age, keep=MAX_SESSIONS)
        return session

    def get(self, session_id: str | None, keys: Mapping[str, str]) -> Session | None:
        """The live session, touched; None (and gone) when expired or its key was removed or changed."""
        if not session_id:
            return None
        now = self._clock()
        row = self.backend.load(session_id)
        if row is None:
            return None
        key = keys.get(row.name)
        expired = now - row.last_seen > self.idle or now - row.created > self.max_age
        if expired or key is None or not hmac.compare_digest(key_digest(key), row.key_digest):
            self.backend.remove(session_id)
            return None
        if now - row.last_seen >= self.touch_every:
            self.backend.touch(session_id, now)
        session = Session(session_id, row.name, row.key_digest, row.csrf, row.created,
                          max(row.last_seen, now), list(row.flashes))
        session._stored = len(session.flashes)
        return session

    def save(self, session: Session) -> None:
        """Write the flash messages this request showed or added (nothing when there were none)."""
        if not session.changed:
            return
        self.backend.update_flashes(session.id, session._taken, session._added, MAX_FLASHES)
        session._stored, session._taken, session._added = len(session.flashes), 0, []

    def end(self, session_id: str) -> None:
        self.backend.remove(session_id)

    def __len__(self) -> int:
        return self.backend.count()


class LoginThrottle:
    """Refuses logins from a client after too many failures: guessing keys stays slow.

    A token bucket per client address of ``limit`` failures, refilled at
    ``limit`` per ``window``: ``limit`` wrong keys block the client until the
    bucket refills, and a steady guesser gets ``limit`` guesses per window at
    most. A successful login does not wipe the count (whoever holds one key
    could otherwise guess others without limit). The buckets are the node's
    (``shared_buckets.py``): with ``--workers`` every worker counts the same
    failures, whichever one a connection reaches.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, window: float = LOGIN_WINDOW,
                 limit: int = LOGIN_FAILURES, table: SharedBuckets | None = None) -> None:
        self._clock = clock
        self.window = window
        self.limit = limit
        self._rate = limit / window
        self._table = table if table is not None else SharedBuckets(None, slots=LOGIN_SLOTS)

    def blocked(self, client: str) -> bool:
        return self._table.level(f"login:{client}", self._rate, self.limit, self._clock()) < 1.0

    def failed(self, client: str) -> None:
        self._table.take(f"login:{client}", self._rate, self.limit, self._clock())
