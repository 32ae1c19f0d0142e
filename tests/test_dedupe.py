"""Duplicate records by key and content within a window (src/syncbus/dedupe.py)."""

from __future__ import annotations

from syncbus.dedupe import Deduper


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_same_key_same_content_within_the_window_is_a_duplicate() -> None:
    clock = Clock()
    d = Deduper(60, clock=clock)
    assert not d.is_duplicate("SO-1", b'{"a":1}')
    assert d.is_duplicate("SO-1", b'{"a":1}')
    assert not d.is_duplicate("SO-1", b'{"a":2}')       # an update is never dropped
    assert d.is_duplicate("SO-1", b'{"a":2}')
    assert not d.is_duplicate(None, b'{"a":2}') and not d.is_duplicate(None, b'{"a":2}')
    clock.now = 61
    assert not d.is_duplicate("SO-1", b'{"a":2}')       # the window has passed


def test_compare_by_key_and_the_bound() -> None:
    clock = Clock()
    d = Deduper(60, compare="key", max_keys=2, clock=clock)
    assert not d.is_duplicate("a", b"1")
    assert d.is_duplicate("a", b"2")
    assert not d.is_duplicate("b", b"1") and not d.is_duplicate("c", b"1")   # "a" is pushed out
    assert not d.is_duplicate("a", b"1")
