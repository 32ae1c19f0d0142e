"""The PostgreSQL fixtures (tests/support/postgres.py) and deploy/postgres/pg.sh behind them."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.support import postgres as pgsupport
from tests.support.postgres import PG_SH, PostgresServer, PostgresUnavailable

_seen: dict[str, str] = {}


def _tables(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        return sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


@pytest.mark.parametrize("run", ["first", "second"])
def test_each_test_gets_a_fresh_empty_database(pg_url: str, run: str) -> None:
    url = make_url(pg_url)
    assert url.drivername == "postgresql+psycopg"
    assert url.host == "127.0.0.1"
    assert url.database not in _seen.values()
    _seen[run] = url.database
    assert _tables(pg_url) == []
    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as conn:  # would fail in the second run if the database were shared
            conn.execute(sa.text("CREATE TABLE marker (run text)"))
            conn.execute(sa.text("INSERT INTO marker VALUES (:run)"), {"run": run})
    finally:
        engine.dispose()


def test_databases_of_one_test_are_isolated(pg_url_factory: Callable[[], str]) -> None:
    a, b = pg_url_factory(), pg_url_factory()
    assert make_url(a).database != make_url(b).database
    engine_a = sa.create_engine(a)
    try:
        with engine_a.begin() as conn:
            conn.execute(sa.text("CREATE TABLE only_in_a (id int)"))
    finally:
        engine_a.dispose()
    assert _tables(a) == ["only_in_a"]
    assert _tables(b) == []


def test_sqlalchemy_create_insert_select(pg_engine: sa.Engine) -> None:
    meta = sa.MetaData()
    customers = sa.Table(
        "customers", meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("attrs", sa.JSON),
    )
    meta.create_all(pg_engine)
    with pg_engine.begin() as conn:
        conn.execute(customers.insert(), [
            {"id": 1, "name": "Ada", "attrs": {"tier": "gold"}},
            {"id": 2, "name": "Grace", "attrs": None},
        ])
    with pg_engine.connect() as conn:
        rows = conn.execute(sa.select(customers.c.name, customers.c.attrs).order_by(customers.c.id)).all()
        assert [tuple(r) for r in rows] == [("Ada", {"tier": "gold"}), ("Grace", None)]
        assert conn.execute(sa.text("SHOW server_encoding")).scalar() == "UTF8"


def test_databases_are_dropped_after_the_test(_pg_session: pgsupport._Session,
                                              request: pytest.FixtureRequest) -> None:
    session = _pg_session
    databases = pgsupport._Databases(session, request)
    name = make_url(databases.make()).database
    with session.connect() as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [name]).fetchone() == (1,)
    # A connection left open does not stop the drop (DROP DATABASE ... WITH (FORCE)).
    engine = sa.create_engine(session.url(name))
    left_open = engine.connect()
    left_open.execute(sa.text("SELECT 1"))
    databases.drop_all()
    with contextlib.suppress(sa.exc.SQLAlchemyError):  # the drop terminated it
        left_open.close()
    engine.dispose()
    with session.connect() as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [name]).fetchone() == (0,)


def test_the_server_survives_a_restart(postgres_server: PostgresServer, pg_url: str) -> None:
    engine = sa.create_engine(pg_url, pool_pre_ping=True)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE kept (v int)"))
            conn.execute(sa.text("INSERT INTO kept VALUES (42)"))
        postgres_server.restart()
        assert postgres_server.running()
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT v FROM kept")).scalar() == 42
    finally:
        engine.dispose()


# --- TLS (pg.sh up --tls) ----------------------------------------------------


def test_tls_verify_full(pg_tls_url: str, pg_tls_server: PostgresServer) -> None:
    url = make_url(pg_tls_url)
    assert url.query["sslmode"] == "verify-full"
    assert url.query["sslrootcert"] == str(pg_tls_server.ca_file)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            ssl, version = conn.execute(
                sa.text("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")).one()
        assert ssl is True
        assert version in ("TLSv1.2", "TLSv1.3")
    finally:
        engine.dispose()


def _connect(url: sa.URL) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    finally:
        engine.dispose()


def test_tls_server_rejects_plaintext_wrong_names_and_other_cas(pg_tls_url: str, tmp_path: Path) -> None:
    url = make_url(pg_tls_url)
    with pytest.raises(sa.exc.OperationalError, match="no encryption"):
        _connect(url.update_query_dict({"sslmode": "disable"}).difference_update_query(["sslrootcert"]))
    # The certificate names 127.0.0.1 and localhost, nothing else.
    with pytest.raises(sa.exc.OperationalError, match="does not match host name"):
        _connect(url.set(host="db.example.invalid").update_query_dict({"hostaddr": "127.0.0.1"}))
    _connect(url.set(host="localhost").update_query_dict({"hostaddr": "127.0.0.1"}))
    other_ca = tmp_path / "other-ca.crt"
    subprocess.run(["openssl", "req", "-x509", "-new", "-nodes", "-newkey", "ec",
                    "-pkeyopt", "ec_paramgen_curve:prime256v1", "-keyout", str(tmp_path / "other-ca.key"),
                    "-out", str(other_ca), "-days", "1", "-subj", "/CN=not the syncbus test CA"],
                   check=True, capture_output=True)
    with pytest.raises(sa.exc.OperationalError, match="certificate verify failed"):
        _connect(url.update_query_dict({"sslrootcert": str(other_ca)}))


def test_pg_sh_url_of_a_tls_cluster_works_as_is(pg_tls_server: PostgresServer) -> None:
    env = {**os.environ, "PG_RUN_DIR": str(pg_tls_server.run_dir), "PG_DATABASE": "postgres"}
    url = subprocess.run(["bash", str(PG_SH), "url"], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert url == (f"postgresql+psycopg://postgres@127.0.0.1:{pg_tls_server.port}/postgres"
                   f"?sslmode=verify-full&sslrootcert={pg_tls_server.ca_file}")
    _connect(make_url(url))


# --- failure handling ----------------------------------------------------------


def test_a_server_that_cannot_start_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PG_BINDIR", str(tmp_path / "no-postgres-here"))
    server = PostgresServer(run_dir=tmp_path / "run", port=pgsupport.free_port())
    with pytest.raises(PostgresUnavailable, match="no PostgreSQL server found"):
        server.start()
    assert not server.running()


@pytest.mark.parametrize(("value", "fails"), [
    ("true", True), ("1", True), ("yes", True), ("TRUE", True), ("", False), ("0", False), ("false", False),
])
def test_unavailable_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch, value: str,
                                                     fails: bool) -> None:
    monkeypatch.setenv("CI", value)
    expected = pytest.fail.Exception if fails else pytest.skip.Exception
    with pytest.raises(expected, match="PostgreSQL unavailable"):
        pgsupport._unavailable("no server")
