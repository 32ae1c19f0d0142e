"""Read-only commands on a PostgreSQL database without syncbus state refuse, as with a missing SQLite file.

Before, `syncbus dlq list --store postgresql://.../empty_db` created the whole schema there and
answered "No dead letters match". Only `syncbus run` creates state.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from syncbus.cli.common import require_state
from syncbus.config import Settings
from syncbus.state import Store, StoreError

from .conftest import SYNCBUS, Run

ENV = {"SYNCBUS_ACTOR": "tester", "SYNCBUS_BUS": "", "SYNCBUS_STORE": "", "SYNCBUS_CONFIG_DIR": ""}
READ_ONLY = [("dlq", "list"), ("dlq", "audit"), ("dlq", "show", "dl-x"), ("trace", "x"), ("ledger",),
             ("shadow", "report", "orders"), ("versions", "orders")]


def tables(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        return sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


def safe(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """An empty project (no routes): enough for `syncbus run` to start and for the read-only commands."""
    root = tmp_path / "cfg"
    (root / "mappings").mkdir(parents=True)
    (root / "connectors").mkdir()
    return root


@pytest.mark.parametrize("args", READ_ONLY)
def test_read_only_commands_refuse_an_empty_postgresql_database(cli: Callable[..., Run], config: Path,
                                                                pg_url: str, args: tuple[str, ...]) -> None:
    run = cli(*args, "--config-dir", str(config), "--store", pg_url, env=ENV)
    assert run.code == 1, run.out + run.err
    assert f"no syncbus state at {safe(pg_url)}: is --store right?" in run.err
    assert tables(pg_url) == []                                    # nothing created there


def test_a_database_that_does_not_exist_is_the_connection_error_naming_it(pg_url: str, tmp_path: Path) -> None:
    missing = make_url(pg_url).set(database="syncbus_no_such_db").render_as_string(hide_password=False)
    with pytest.raises(StoreError, match='database "syncbus_no_such_db" does not exist'):
        require_state(Settings(tmp_path, "kafka://127.0.0.1:9", missing))


def test_a_store_of_an_older_version_with_some_tables_still_counts(pg_url: str, tmp_path: Path) -> None:
    Store(pg_url).close()
    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as conn:   # a store made before shadow samples existed
            conn.execute(sa.text("DROP TABLE shadow_samples"))
    finally:
        engine.dispose()
    require_state(Settings(tmp_path, "kafka://127.0.0.1:9", pg_url))


def test_run_creates_the_schema_then_read_only_commands_work(cli: Callable[..., Run], config: Path,
                                                            pg_url: str, tmp_path: Path) -> None:
    args = ("--config-dir", str(config), "--store", pg_url, "--bus", f"embedded://{tmp_path}/bus.db")
    proc = subprocess.Popen([SYNCBUS, "run", *args, "--port", "0", "--workers", "1"], cwd=tmp_path,
                            env={**os.environ, **ENV}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "dead_letters" not in tables(pg_url):
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "syncbus run did not create the store"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    run = cli("dlq", "list", *args, env=ENV)
    assert run.code == 0, run.err
    assert "no dead letters match" in run.out
