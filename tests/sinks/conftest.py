"""Fixtures for the sink tests: a live target server, a Delivery factory, target databases."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from syncbus.sinks.base import Delivery
from tests.sinks.target_server import TargetServer


@pytest.fixture(scope="session")
def shared_target() -> Iterator[TargetServer]:
    with TargetServer() as server:
        yield server


@pytest.fixture
def target(shared_target: TargetServer) -> Iterator[TargetServer]:
    """The session's target server, reset to a clean state for this test."""
    shared_target.reset()
    yield shared_target
    shared_target.reset()


@pytest.fixture
def dead_url(closed_port: int) -> str:
    """A URL on 127.0.0.1 where nothing listens (see ``closed_port``)."""
    return f"http://127.0.0.1:{closed_port}/orders"


def _delivery(**overrides: Any) -> Delivery:
    values: dict[str, Any] = {
        "route": "crm-to-erp", "mapping_version": 3, "sink": "erp", "record_id": "rec-1", "key": "order-42",
        "idempotency_key": "crm-to-erp:order-42:rec-1", "body": b'{"VBELN": "42"}',
        "content_type": "application/json", "payload": {"VBELN": "42"},
    }
    values.update(overrides)
    return Delivery(**values)


@pytest.fixture
def make_delivery() -> Callable[..., Delivery]:
    return _delivery


# ---------------------------------------------------------------------- SQL targets


class Database:
    """A target database for the SQL sink tests: its URL, and plain SQL for setup and checks."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self.url = url
        self._engine: sa.Engine | None = None

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        return self._engine

    def execute(self, *statements: str) -> None:
        with self.engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)

    def rows(self, sql: str = "SELECT * FROM vouchers ORDER BY voucher_no") -> list[tuple[Any, ...]]:
        with self.engine.connect() as conn:
            return [tuple(row) for row in conn.exec_driver_sql(sql)]

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty database, SQLite file or fresh PostgreSQL database: every SQL test runs on both."""
    url = f"sqlite:///{tmp_path / 'finance.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    db = Database(request.param, url)
    yield db
    db.dispose()


@pytest.fixture
def sqlite_database(tmp_path: Path) -> Iterator[Database]:
    """For what only SQLite has (file locks, WAL, a database that cannot be opened)."""
    db = Database("sqlite", f"sqlite:///{tmp_path / 'finance.db'}")
    yield db
    db.dispose()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that is bound (so nobody else takes it) but not listening: connections are refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()
