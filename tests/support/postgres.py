"""A real PostgreSQL server for the test session.

Register once in tests/conftest.py with ``pytest_plugins = [..., "tests.support.postgres"]``.
Tests that use these fixtures get the ``postgres`` marker automatically
(``pytest -m "not postgres"`` leaves them out).

* ``pg_url`` -> a fresh, empty database for this test, as a SQLAlchemy URL
  ``postgresql+psycopg://postgres@127.0.0.1:PORT/t_<name>_<hex>`` (driver: psycopg 3);
  dropped after the test (``WITH (FORCE)``: leftover connections do not matter).
* ``pg_url_factory`` -> ``make() -> url``: as many fresh databases as a test needs.
* ``pg_engine`` -> a SQLAlchemy Engine on ``pg_url``, disposed after the test.
* ``postgres_server`` -> the session's :class:`PostgresServer`, for tests that stop or
  restart it (it is running again after each test). Skipped with an external server.
* ``pg_tls_url`` / ``pg_tls_server`` -> the same on a second private server started with
  ``pg.sh up --tls`` (only if a test asks for it): TCP clients must use TLS, and the URL
  carries ``sslmode=verify-full&sslrootcert=<its test CA>``.

The server is deploy/postgres/pg.sh on a free port in a temporary run dir, with
``PG_FAST=1`` (fsync off), stopped at session end -- and by a watchdog if pytest dies,
which then also deletes its run dir. ``SYNCBUS_TEST_POSTGRES=postgresql://user:pw@host:port/db``
uses that server instead (for ``pg_url``; the user must be allowed to CREATE DATABASE).

A server that cannot start (no PostgreSQL installed, no psycopg, ...) skips these tests
on a laptop but FAILS them when ``CI`` is set to anything truthy (1, true, yes, ...).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import quote

import pytest

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy.engine import URL, Engine

PG_SH = Path(__file__).resolve().parents[2] / "deploy" / "postgres" / "pg.sh"
START_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0
SUPERUSER = "postgres"
MARKER = "postgres: needs a real PostgreSQL server (started by the test session, or SYNCBUS_TEST_POSTGRES)"
FIXTURES = frozenset({"pg_url", "pg_url_factory", "pg_engine", "postgres_server", "pg_tls_url", "pg_tls_server",
                      "_pg_session", "_pg_tls_session"})


class PostgresUnavailable(Exception):
    """The test server could not be started or stopped; the message says why."""


def ci() -> bool:
    """True when CI is set to anything truthy (CI=1, CI=true, CI=yes...)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    """A cluster run by pg.sh from ``run_dir``; stop/start keep its data (a real restart)."""

    run_dir: Path
    port: int
    tls: bool = False
    host: str = "127.0.0.1"

    @property
    def ca_file(self) -> Path | None:
        """The test CA that signed the server certificate (TLS servers only)."""
        return self.run_dir / "tls" / "ca.crt" if self.tls else None

    def url(self, database: str = "postgres", *, driver: str | None = "psycopg") -> str:
        """SQLAlchemy URL of ``database``; with TLS it asks for sslmode=verify-full."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        url = f"{scheme}://{SUPERUSER}@{self.host}:{self.port}/{quote(database, safe='')}"
        if self.tls:
            url += f"?sslmode=verify-full&sslrootcert={quote(str(self.ca_file), safe='/')}"
        return url

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            PGPORT=str(self.port),
            PG_RUN_DIR=str(self.run_dir),
            PG_DATABASE="postgres",
            PG_FAST="1",
            PG_WATCH_PID=str(os.getpid()),
            PG_WATCH_REMOVE="1",
            PG_START_TIMEOUT=str(int(START_TIMEOUT)),
        )
        return env

    def _run(self, *args: str, timeout: float) -> str:
        try:
            proc = subprocess.run(["bash", str(PG_SH), *args], env=self._env(), capture_output=True,
                                  text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as err:
            raise PostgresUnavailable(f"pg.sh {' '.join(args)} did not finish within {timeout:.0f}s") from err
        except OSError as err:
            raise PostgresUnavailable(f"cannot run {PG_SH}: {err}") from err
        if proc.returncode != 0:
            detail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-40:])
            raise PostgresUnavailable(f"pg.sh {' '.join(args)} failed (exit {proc.returncode}):\n{detail}")
        return proc.stdout.strip()

    def start(self) -> None:
        self._run("up", *(["--tls"] if self.tls else []), timeout=START_TIMEOUT + 30)

    def stop(self) -> None:
        self._run("down", timeout=STOP_TIMEOUT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def running(self) -> bool:
        try:
            self._run("status", timeout=15)
        except PostgresUnavailable:
            return False
        return True


def _unavailable(reason: str) -> NoReturn:
    if ci():
        pytest.fail(f"PostgreSQL unavailable in CI: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL unavailable: {reason}")


def _require_driver() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError as err:
        _unavailable(f"the psycopg driver is not installed ({err}); pip install 'psycopg[binary]'")


def _start_private(tls: bool) -> PostgresServer:
    """A started private server; retries on a port lost to someone else in the meantime."""
    failure = ""
    for _ in range(3):
        run_dir = Path(tempfile.mkdtemp(prefix="syncbus-pg-tls-" if tls else "syncbus-pg-"))
        # As root the server runs as the `postgres` user, who must be able to enter it.
        run_dir.chmod(0o711)
        server = PostgresServer(run_dir=run_dir, port=free_port(), tls=tls)
        try:
            server.start()
            return server
        except PostgresUnavailable as err:
            failure = str(err)
            with contextlib.suppress(PostgresUnavailable):
                server.stop()
            shutil.rmtree(run_dir, ignore_errors=True)
            if "already in use" not in failure:
                break
    _unavailable(failure)


def _stop_private(server: PostgresServer) -> None:
    try:
        server.stop()
    finally:
        shutil.rmtree(server.run_dir, ignore_errors=True)


@dataclass
class _Session:
    """Where test databases are created: ``admin`` is a SQLAlchemy URL to a maintenance database."""

    admin: URL
    server: PostgresServer | None

    def url(self, database: str) -> str:
        return self.admin.set(database=database).render_as_string(hide_password=False)

    def connect(self, database: str | None = None) -> psycopg.Connection[Any]:
        import psycopg

        # Keyword arguments, not a rendered URL: libpq URIs do not read '+' as a space.
        params: dict[str, Any] = {k: v for k, v in self.admin.query.items() if isinstance(v, str)}
        params.update(host=self.admin.host, port=self.admin.port, user=self.admin.username,
                      dbname=database or self.admin.database or "postgres", connect_timeout=10)
        if self.admin.password is not None:
            params["password"] = self.admin.password
        return psycopg.connect(autocommit=True, **{k: v for k, v in params.items() if v is not None})

    def create_database(self, hint: str = "") -> str:
        from psycopg import sql

        slug = re.sub(r"[^a-z0-9]+", "_", hint.lower()).strip("_")[:36]
        name = f"t_{slug}_{uuid.uuid4().hex[:10]}" if slug else f"t_{uuid.uuid4().hex[:12]}"
        # template0: never in use, so parallel sessions on one server do not block each other.
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        import psycopg
        from psycopg import sql

        try:
            with self.connect() as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        except psycopg.Error as err:
            warnings.warn(f"could not drop test database {name}: {err}", stacklevel=1)


def _session_for(server: PostgresServer) -> _Session:
    from sqlalchemy.engine import make_url

    return _Session(make_url(server.url()), server)


# --- pytest hooks ------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


# --- fixtures ----------------------------------------------------------------


@pytest.fixture(scope="session")
def _pg_session() -> Iterator[_Session]:
    _require_driver()
    external = os.environ.get("SYNCBUS_TEST_POSTGRES", "").strip()
    if external:
        from sqlalchemy.engine import make_url

        admin = make_url(external)
        yield _Session(admin.set(drivername="postgresql+psycopg", database=admin.database or "postgres"), None)
        return
    server = _start_private(tls=False)
    try:
        yield _session_for(server)
    finally:
        _stop_private(server)


@pytest.fixture(scope="session")
def _pg_tls_session() -> Iterator[_Session]:
    _require_driver()
    server = _start_private(tls=True)
    try:
        yield _session_for(server)
    finally:
        _stop_private(server)


class _Databases:
    """The fresh databases one test created; all dropped after it."""

    def __init__(self, session: _Session, request: pytest.FixtureRequest) -> None:
        self.session = session
        self.hint = request.node.name
        self.created: list[str] = []

    def make(self) -> str:
        name = self.session.create_database(self.hint)
        self.created.append(name)
        return self.session.url(name)

    def drop_all(self) -> None:
        for name in reversed(self.created):
            self.session.drop_database(name)


@pytest.fixture
def pg_url_factory(_pg_session: _Session, request: pytest.FixtureRequest) -> Iterator[Callable[[], str]]:
    """``make() -> url``: a fresh empty database per call, all dropped after the test."""
    databases = _Databases(_pg_session, request)
    yield databases.make
    databases.drop_all()


@pytest.fixture
def pg_url(pg_url_factory: Callable[[], str]) -> str:
    """SQLAlchemy URL (postgresql+psycopg://...) of a fresh empty database for this test."""
    return pg_url_factory()


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    """A SQLAlchemy Engine on ``pg_url``, disposed after the test."""
    from sqlalchemy import create_engine

    engine = create_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_server(_pg_session: _Session) -> Iterator[PostgresServer]:
    """The session's own server, for stop/restart tests; it is running again after each test."""
    server = _pg_session.server
    if server is None:
        pytest.skip("SYNCBUS_TEST_POSTGRES points at an external server; not restarting it")
    yield server
    if not server.running():
        server.start()


@pytest.fixture
def pg_tls_server(_pg_tls_session: _Session) -> Iterator[PostgresServer]:
    """The session's TLS server (``pg.sh up --tls``); running again after each test."""
    server = _pg_tls_session.server
    assert server is not None
    yield server
    if not server.running():
        server.start()


@pytest.fixture
def pg_tls_url(_pg_tls_session: _Session, request: pytest.FixtureRequest) -> Iterator[str]:
    """Like ``pg_url`` on the TLS server: ...?sslmode=verify-full&sslrootcert=<test CA>."""
    databases = _Databases(_pg_tls_session, request)
    yield databases.make()
    databases.drop_all()
