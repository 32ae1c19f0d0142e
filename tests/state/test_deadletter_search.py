"""The dead-letter text search finds words inside payloads encrypted at rest, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from syncbus.state import DeadLetter, Store, crypto, sqlite_url

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
K1 = base64.b64encode(os.urandom(32)).decode()


def _codec(keys: str = f"k1:{K1}") -> crypto.Codec:
    return crypto.codec_from_env({"SYNCBUS_DATA_KEYS": keys})


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else sqlite_url(tmp_path / "s.db")
    s = Store(url)
    yield s
    s.close()


def _letter(n: int, value: bytes, error: str = "HTTP 503", route: str = "search-r") -> DeadLetter:
    at = T0 + timedelta(minutes=n)
    return DeadLetter(route=route, reason="delivery", error=error, value=value, record_id=f"rec-{os.urandom(4).hex()}",
                      topic="t", key=f"K{n}", first_failed_at=at, last_failed_at=at,
                      headers={"content-type": "application/json"})


def _keys(store: Store, text: str, **kw: object) -> list[str | None]:
    return [d.key for d in store.list(route="search-r", text=text, limit=100, **kw)]  # type: ignore[arg-type]


def test_search_opens_sealed_payloads_and_pages_like_sql(store: Store) -> None:
    with crypto.using(crypto.Codec()):  # written before encryption was switched on: clear text
        store.add(_letter(0, b'{"customer": "Wang Fang", "phone": "13800000000"}'))
    with crypto.using(_codec()):
        for n, name in enumerate(["Wang Lei", "Li Na", "Wang Wei", "Zhao Min"], start=1):
            store.add(_letter(n, f'{{"customer": "{name}"}}'.encode()))
        store.add(_letter(5, b'{"customer": "Sun Li"}', error="Wang's ERP refused"))  # matches by its error
        # newest failure first, clear and sealed rows together
        assert _keys(store, "Wang") == ["K5", "K3", "K1", "K0"]
        assert store.count(route="search-r", text="Wang") == 4
        assert [d.key for d in store.list(route="search-r", text="Wang", limit=2, offset=1)] == ["K3", "K1"]
        assert _keys(store, "Li Na") == ["K2"]
        assert _keys(store, "wANG") == ["K5", "K3", "K1", "K0"]  # ASCII letters in either case, on every database
        assert _keys(store, "nobody") == [] and store.count(route="search-r", text="nobody") == 0
        assert _keys(store, "50%") == []                    # LIKE wildcards are searched for, not obeyed
        assert _keys(store, "Wang", status="replayed") == []  # the other filters still apply
        assert store.count(route="search-r") == 6           # and without text nothing changes


def test_a_search_over_sealed_rows_without_their_key_is_an_error_not_a_miss(store: Store) -> None:
    with crypto.using(_codec()):
        store.add(_letter(0, b'{"customer": "Wang Lei"}'))
    with crypto.using(crypto.Codec()), pytest.raises(crypto.MissingDataKey, match="data key 'k1'"):
        store.list(route="search-r", text="Wang")


def test_clear_payloads_match_the_same_on_every_database(store: Store) -> None:
    with crypto.using(crypto.Codec()):
        store.add(_letter(0, '{"note": "Kunnr 王芳 back\\\\slash 100%"}'.encode()))
        store.add(_letter(1, b'{"note": "nothing here"}', error="ERP says KUNNR unknown"))
        assert _keys(store, "kunnr") == ["K1", "K0"]
        assert _keys(store, "王芳") == ["K0"] and _keys(store, "芳 BACK") == ["K0"]
        assert _keys(store, "back\\\\slash") == ["K0"] and _keys(store, "100%") == ["K0"]
        assert _keys(store, "347") == [] and _keys(store, "\\347") == []  # not the escape form's octal digits


def test_a_binary_payload_is_searched_past_its_nul_bytes(store: Store) -> None:
    with crypto.using(crypto.Codec()):
        store.add(_letter(0, b"\x00\x01\x02 Wang Lei"))
        assert _keys(store, "Wang") == ["K0"]
