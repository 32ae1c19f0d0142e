"""A real state store and embedded bus in one SQLite file, and a way to fill the store with dead letters."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from syncbus.bus.embedded import EmbeddedBus
from syncbus.record import H_CONTENT_TYPE
from syncbus.state import DeadLetter, Store, sqlite_url

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    st = Store(sqlite_url(tmp_path / "syncbus.db"))
    yield st
    st.close()


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[EmbeddedBus]:
    b = EmbeddedBus(str(tmp_path / "syncbus.db"))
    await b.start()
    yield b
    await b.stop()


def make_letter(i: int, *, route: str = "orders", reason: str = "delivery", sink: str | None = "erp",
                key: str | None = None, value: bytes | None = None, version: int = 1,
                at: datetime | None = None, error: str = "HTTP 400 customer unknown") -> DeadLetter:
    when = at or T0 + timedelta(minutes=i)
    return DeadLetter(route=route, reason=reason, error=error, sink=sink if reason == "delivery" else None,
                      value=value if value is not None else f'{{"order_id": "SO-{i}", "amount": {i}}}'.encode(),
                      key=key if key is not None else f"SO-{i}", mapping_version=version,
                      first_failed_at=when, last_failed_at=when, record_id=f"rec-{i}", topic="crm.orders",
                      offset=i, headers={H_CONTENT_TYPE: "application/json"})


@pytest.fixture
def add(store: Store) -> Callable[..., list[str]]:
    """``add(n, **fields)``: store n letters (numbered from ``start``); returns their ids."""
    counter = {"next": 0}

    def _add(n: int = 1, **fields: Any) -> list[str]:
        ids = []
        for _ in range(n):
            ids.append(store.add(make_letter(counter["next"], **fields)))
            counter["next"] += 1
        return ids

    return _add
