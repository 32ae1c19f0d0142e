"""Console sessions: expiry, key removal or rotation ends them, login throttling."""

from __future__ import annotations

from syncbus.console.sessions import LoginThrottle, SessionStore, match_key

KEYS = {"alice": "k-alice", "bob": "k-bob"}


def test_match_key_names_the_key():
    assert match_key(KEYS, "k-bob") == "bob"
    assert match_key(KEYS, "k-bo") is None and match_key({}, "k-bob") is None


def test_sessions_expire_when_idle_and_after_the_maximum_age():
    now = [1000.0]
    store = SessionStore(clock=lambda: now[0], idle=60, max_age=300)
    s = store.create("alice", KEYS["alice"])
    assert len(s.id) >= 40 and s.csrf != s.id
    for _ in range(4):                       # in use: alive…
        now[0] += 59
        got = store.get(s.id, KEYS)
        assert got is not None and got.id == s.id and got.csrf == s.csrf
    now[0] += 65                             # …until its maximum age
    assert store.get(s.id, KEYS) is None
    t = store.create("bob", KEYS["bob"])
    now[0] += 61
    assert store.get(t.id, KEYS) is None and len(store) == 0


def test_a_removed_or_rotated_key_ends_its_sessions():
    store = SessionStore()
    a, b = store.create("alice", KEYS["alice"]), store.create("bob", KEYS["bob"])
    assert store.get(a.id, {"bob": "k-bob"}) is None                 # alice's key removed
    assert store.get(b.id, {"bob": "k-bob-rotated"}) is None         # bob's key changed
    assert store.get("forged", KEYS) is None and store.get(None, KEYS) is None


def test_flashes_are_read_once_and_csrf_compares_exactly():
    s = SessionStore().create("alice", KEYS["alice"])
    s.flash("ok", "done")
    assert s.take_flashes() == [("ok", "done")] and s.take_flashes() == []
    assert s.csrf_ok(s.csrf) and not s.csrf_ok(s.csrf[:-1]) and not s.csrf_ok(None) and not s.csrf_ok("")


def test_login_throttle_blocks_a_client_after_repeated_failures_for_a_while():
    now = [0.0]
    throttle = LoginThrottle(clock=lambda: now[0], window=300, limit=3)
    for _ in range(3):
        assert not throttle.blocked("10.0.0.1")
        throttle.failed("10.0.0.1")
    assert throttle.blocked("10.0.0.1") and not throttle.blocked("10.0.0.2")
    now[0] += 301
    assert not throttle.blocked("10.0.0.1")
