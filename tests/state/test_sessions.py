"""Console sessions kept in the state store: what every worker and node of one console shares.

The console's ``SessionStore`` over ``StoredSessions`` on a real database
(SQLite, and PostgreSQL -- the store several nodes share). Two ``Store``
objects on one URL stand for two worker processes.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from syncbus.console.sessions import MAX_FLASHES, SessionStore
from syncbus.state import Store, sqlite_url
from syncbus.state.sessions import StoredSessions, session_digest

KEYS = {"alice": "k-alice", "bob": "k-bob"}


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return sqlite_url(tmp_path / "var" / "syncbus.db")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def workers(url: str, clock: Clock) -> Iterator[Callable[[], SessionStore]]:
    """``worker()`` opens one more process's view: its own Store (engine, pool) on the shared database."""
    stores: list[Store] = []

    def worker() -> SessionStore:
        store = Store(url)
        stores.append(store)
        return SessionStore(clock=clock, idle=60, max_age=300, backend=StoredSessions(store))

    yield worker
    for store in stores:
        store.close()


def test_a_session_created_by_one_worker_is_live_on_another_and_ends_everywhere(workers):
    a, b = workers(), workers()
    s = a.create("alice", KEYS["alice"])
    got = b.get(s.id, KEYS)
    assert got is not None and (got.id, got.name, got.csrf) == (s.id, "alice", s.csrf)
    assert got.csrf_ok(s.csrf) and got.key_digest == s.key_digest
    b.end(s.id)                                   # logout on b…
    assert a.get(s.id, KEYS) is None              # …is a logout on a
    assert b.get(None, KEYS) is None and b.get("", KEYS) is None and b.get("forged", KEYS) is None


def test_idle_and_maximum_age_expiry(workers, clock: Clock):
    a, b = workers(), workers()
    s = a.create("alice", KEYS["alice"])
    for i in range(4):                            # in use, alternately on both workers: alive…
        clock.now += 59
        assert (a, b)[i % 2].get(s.id, KEYS) is not None
    clock.now += 65                               # …until its maximum age
    assert b.get(s.id, KEYS) is None and len(a) == 0
    t = a.create("bob", KEYS["bob"])
    clock.now += 61                               # unused longer than the idle limit
    assert b.get(t.id, KEYS) is None and len(a) == 0


def test_last_seen_is_written_at_most_every_touch_interval(workers, url: str, clock: Clock):
    a = workers()
    a.touch_every = 30
    s = a.create("alice", KEYS["alice"])
    rows = a.backend
    for _ in range(5):                            # five page loads within 25 s: reads only
        clock.now += 5
        assert a.get(s.id, KEYS) is not None
    row = rows.load(s.id)
    assert row is not None and row.last_seen == pytest.approx(s.created, abs=0.01)
    clock.now += 5                                # 30 s after the last write: written
    assert a.get(s.id, KEYS) is not None
    row = rows.load(s.id)
    assert row is not None and row.last_seen == pytest.approx(clock.now, abs=0.01)


def test_removing_or_rotating_the_key_ends_the_session(workers):
    a, b = workers(), workers()
    s, t = a.create("alice", KEYS["alice"]), a.create("bob", KEYS["bob"])
    assert b.get(s.id, {"bob": "k-bob"}) is None                 # alice's key removed
    assert b.get(t.id, {"bob": "k-bob-rotated"}) is None         # bob's key changed
    assert a.get(t.id, KEYS) is None and len(a) == 0             # and the rows are gone, not just refused


def test_flashes_survive_the_redirect_to_another_worker_and_are_shown_once(workers):
    a, b = workers(), workers()
    s = a.create("alice", KEYS["alice"])
    s.flash("ok", "signed in as alice")
    a.save(s)
    post = b.get(s.id, KEYS)                      # an action on b: adds a message, shows none
    assert post is not None
    post.flash("error", "not replayed: <script>")
    b.save(post)
    page = a.get(s.id, KEYS)                      # the page after the redirect, on a
    assert page is not None
    assert page.take_flashes() == [("ok", "signed in as alice"), ("error", "not replayed: <script>")]
    a.save(page)
    again = b.get(s.id, KEYS)
    assert again is not None and again.flashes == []


def test_a_message_added_while_a_page_shows_others_is_kept(workers):
    a, b = workers(), workers()
    s = a.create("alice", KEYS["alice"])
    s.flash("ok", "one")
    a.save(s)
    page, action = a.get(s.id, KEYS), b.get(s.id, KEYS)          # two requests of one person at once
    assert page is not None and action is not None
    assert page.take_flashes() == [("ok", "one")]
    action.flash("ok", "two")
    b.save(action)
    a.save(page)                                  # removes only what it showed
    later = a.get(s.id, KEYS)
    assert later is not None and later.flashes == [("ok", "two")]


def test_flashes_are_bounded_and_a_request_without_changes_writes_nothing(workers):
    a = workers()
    s = a.create("alice", KEYS["alice"])
    for i in range(MAX_FLASHES + 5):
        s.flash("ok", f"m{i}")
    a.save(s)
    got = a.get(s.id, KEYS)
    assert got is not None and [t for _, t in got.flashes] == [f"m{i}" for i in range(5, MAX_FLASHES + 5)]
    assert not got.changed
    a.end(s.id)
    got.flash("ok", "after logout")
    a.save(got)                                   # an ended session stays ended
    assert a.get(s.id, KEYS) is None and len(a) == 0


def test_expired_rows_are_pruned_when_someone_logs_in(workers, clock: Clock):
    a = workers()
    old = [a.create("alice", KEYS["alice"]) for _ in range(3)]
    clock.now += 61
    a.create("bob", KEYS["bob"])
    assert len(a) == 1 and all(a.backend.load(s.id) is None for s in old)


def test_the_database_holds_neither_the_session_id_nor_the_key(tmp_path: Path, clock: Clock):
    db = tmp_path / "syncbus.db"
    store = Store(sqlite_url(db))
    try:
        sessions = SessionStore(clock=clock, backend=StoredSessions(store))
        s = sessions.create("alice", KEYS["alice"])
        s.flash("ok", "signed in as alice")
        sessions.save(s)
    finally:
        store.close()
    with sqlite3.connect(db) as conn:
        [(id_digest, name, key_digest)] = conn.execute("SELECT id_digest, name, key_digest FROM console_sessions")
    assert id_digest == hashlib.sha256(s.id.encode()).hexdigest() == session_digest(s.id)
    assert (name, key_digest) == ("alice", hashlib.sha256(b"k-alice").hexdigest())
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("syncbus.db"))
    assert s.id.encode() not in raw and b"k-alice" not in raw and b"signed in as alice" in raw


def test_the_store_creates_the_table(tmp_path: Path):
    store = Store(sqlite_url(tmp_path / "fresh.db"))
    store.close()
    with sqlite3.connect(tmp_path / "fresh.db") as conn:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(console_sessions)")]
    assert cols == ["id_digest", "name", "key_digest", "csrf", "created", "last_seen", "flashes"]
