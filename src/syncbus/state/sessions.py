"""Web-console login sessions in the state store, so every worker and every node sees the same ones.

``syncbus run`` serves one port from several worker processes (``--workers``,
SO_REUSEPORT) and several nodes can share one PostgreSQL store behind a load
balancer: a session kept in one process's memory is "not logged in" whenever
the next connection lands elsewhere. So the row lives here, in the one
database they all share.

Only the SHA-256 of the session id (the cookie value) is stored, never the id
itself: a leaked database or backup cannot be replayed as cookies. The admin
key is likewise only a digest (its row ends when the key is removed or
changed). Flash messages are in the row too, because post/redirect/get sends
the browser's next request to whichever worker the kernel picks.

The expiry rules belong to the console (``console/sessions.py``); this module
only stores rows, prunes by the times it is given and keeps the table
bounded. The table sits on the shared ``metadata`` and ``state/store.py``
imports this module, so the store's one ``create_all`` creates it.

It is a small class over the :class:`Database` rather than a part of
:class:`Store`: only the console uses it, and it needs nothing of the store
but its transactions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Column, String, Table, Text, delete, func, insert, or_, select, update

from .db import Database
from .tables import UTCDateTime, metadata

Flash = tuple[str, str]   # (kind: ok | error, text)

console_sessions = Table(
    "console_sessions", metadata,
    Column("id_digest", String(64), primary_key=True),     # hex SHA-256 of the cookie value, never the value
    Column("name", String(200), nullable=False),            # the admin key's name: the audit actor
    Column("key_digest", String(64), nullable=False),       # hex SHA-256 of that key: rotation ends the session
    Column("csrf", String(128), nullable=False),
    Column("created", UTCDateTime, nullable=False),
    Column("last_seen", UTCDateTime, nullable=False, index=True),
    Column("flashes", Text, nullable=False, server_default="[]"),   # JSON [[kind, text], ...]
)


def session_digest(session_id: str) -> str:
    """What identifies a session in the table: the cookie cannot be derived from it."""
    return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).hexdigest()


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _flashes(text: str) -> list[Flash]:
    """The row's messages; anything unreadable counts as none (they are only notices)."""
    try:
        raw = json.loads(text)
    except ValueError:
        return []
    if not isinstance(raw, list):
        return []
    return [(str(f[0]), str(f[1])) for f in raw if isinstance(f, list) and len(f) == 2]


@dataclass(frozen=True, slots=True)
class SessionRow:
    """One stored session, without its id (the caller has it; the table does not)."""

    name: str
    key_digest: bytes
    csrf: str
    created: float      # Unix seconds, as the console's clock gives them
    last_seen: float
    flashes: tuple[Flash, ...] = ()


class StoredSessions:
    """The ``console_sessions`` table of one state store: what the console's ``SessionStore`` persists through.

    Calls are blocking (the console runs them in a thread); each is one short
    transaction, and page loads mostly need only the read of ``load``.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, session_id: str, row: SessionRow, *, seen_before: float, created_before: float,
            keep: int) -> None:
        """Store a new session; first drop expired rows and the least recently used beyond ``keep - 1``.

        Pruning here (a login) keeps the table small without a timer, and the
        cap means a flood of logins cannot grow it without bound.
        """
        with self._db._tx(write=True) as conn:
            conn.execute(delete(console_sessions).where(or_(
                console_sessions.c.last_seen < _at(seen_before), console_sessions.c.created < _at(created_before))))
            excess = int(conn.execute(select(func.count()).select_from(console_sessions)).scalar_one()) - keep + 1
            if excess > 0:
                oldest = select(console_sessions.c.id_digest).order_by(console_sessions.c.last_seen).limit(excess)
                conn.execute(delete(console_sessions).where(
                    console_sessions.c.id_digest.in_(oldest)))
            conn.execute(insert(console_sessions).values(
                id_digest=session_digest(session_id), name=row.name, key_digest=row.key_digest.hex(), csrf=row.csrf,
                created=_at(row.created), last_seen=_at(row.last_seen), flashes=json.dumps(row.flashes)))

    def load(self, session_id: str) -> SessionRow | None:
        with self._db._tx() as conn:
            r = conn.execute(select(console_sessions).where(
                console_sessions.c.id_digest == session_digest(session_id))).first()
        if r is None:
            return None
        return SessionRow(r.name, bytes.fromhex(r.key_digest), r.csrf, r.created.timestamp(),
                          r.last_seen.timestamp(), tuple(_flashes(r.flashes)))

    def touch(self, session_id: str, at: float) -> None:
        """The session was used at ``at`` (the console calls this at most every ~30 s per session)."""
        with self._db._tx(write=True) as conn:
            conn.execute(update(console_sessions).where(
                console_sessions.c.id_digest == session_digest(session_id)).values(last_seen=_at(at)))

    def update_flashes(self, session_id: str, taken: int, added: Sequence[Flash], limit: int) -> None:
        """Drop the first ``taken`` stored messages (shown on a page), then append ``added``; keep the last ``limit``.

        Read and written under the row's lock, so a message another request
        added in the meantime is kept. A session ended meanwhile stays ended.
        """
        digest = session_digest(session_id)
        with self._db._tx(write=True) as conn:
            row = conn.execute(self._db._lock(select(console_sessions.c.flashes).where(
                console_sessions.c.id_digest == digest))).first()
            if row is None:
                return
            kept = [*_flashes(row.flashes)[taken:], *added][-limit:]
            conn.execute(update(console_sessions).where(console_sessions.c.id_digest == digest).values(
                flashes=json.dumps(kept)))

    def remove(self, session_id: str) -> None:
        with self._db._tx(write=True) as conn:
            conn.execute(delete(console_sessions).where(console_sessions.c.id_digest == session_digest(session_id)))

    def count(self) -> int:
        with self._db._tx() as conn:
            return int(conn.execute(select(func.count()).select_from(console_sessions)).scalar_one())
