"""What every command shares: the typer app, common options, error handling and output helpers.

Every command turns syncbus errors into one line per problem and exit code 1;
anything unexpected becomes a one-line ``internal error`` with exit code 2.
Nobody using the tool should ever see a traceback.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from ..errors import ConfigErrors, SyncbusError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="syncbus: declarative CRM/ERP/finance integration over Kafka or an embedded log.")

ConfigDir = Annotated[Path | None, typer.Option("--config-dir", envvar="SYNCBUS_CONFIG_DIR",
                                                help="Folder holding mappings/ and connectors/ (default: .)")]
BusUrl = Annotated[str | None, typer.Option("--bus", envvar="SYNCBUS_BUS",
                                            help="embedded:///path/syncbus.db or kafka://host:port")]
StoreUrl = Annotated[str | None, typer.Option("--store", envvar="SYNCBUS_STORE",
                                              help="SQLAlchemy URL of the dead-letter store "
                                                   "(default: the embedded bus file)")]

MAX_INPUT = 16 * 1024 * 1024
F = TypeVar("F", bound=Callable[..., Any])


class Exit1(SyncbusError):
    """Already reported; just exit 1."""


def _fail(message: str, code: int = 1) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(code)


def handle_errors(fn: F) -> F:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except Exit1:
            raise typer.Exit(1) from None
        except ConfigErrors as exc:
            for err in exc.errors:
                typer.echo(str(err))
            raise typer.Exit(1) from None
        except SyncbusError as exc:
            _fail(f"error: {exc}")
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except RecursionError:
            _fail("error: input nested too deeply")
        except MemoryError:
            _fail("error: out of memory (input too large)")
        except OSError as exc:
            _fail(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        except Exception as exc:  # a bug: one line, not a traceback
            if os.environ.get("SYNCBUS_DEBUG"):
                raise
            _fail(f"internal error: {type(exc).__name__}: {exc} (set SYNCBUS_DEBUG=1 for details)", 2)

    return wrapper  # type: ignore[return-value]


def _write(text: str, output: Path | None) -> None:
    if output:
        output.write_text(text, encoding="utf-8")
    else:
        typer.echo(text, nl=False)


def _settings(config_dir: Path | None, bus: str | None = None, store: str | None = None) -> Any:
    """The settings of a command, relative paths resolved against the config dir (``resolve_paths``)."""
    from ..config import Settings

    return resolve_paths(Settings.from_env(str(config_dir) if config_dir else None, bus, store))


def _embedded_target(bus_url: str) -> str | None:
    from ..bus.base import parse_bus_url

    scheme, target = parse_bus_url(bus_url)
    return target if scheme == "embedded" else None


def _sqlite_file(store_url: str) -> Path | None:
    """The file of a SQLite store URL, None for other databases and in-memory ones."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(store_url)
    except ArgumentError:
        return None  # Store() reports the bad URL
    db = url.database or ""
    if url.get_backend_name() != "sqlite" or not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db).expanduser()


def resolve_paths(settings: Any) -> Any:
    """Relative embedded bus and SQLite store paths → absolute, against ``settings.config_dir``.

    DESIGN §6: the default bus is ``var/syncbus.db`` *inside the config dir*, and
    the dead-letter commands must find the same bus and store that ``run`` uses
    from any current directory. Resolving against the working directory (as
    before) made ``syncbus dlq list --config-dir X`` run elsewhere open -- and
    create -- an empty store. Absolute paths and server URLs are kept as given;
    the result is resolved again unchanged (idempotent).
    """
    base = settings.config_dir.expanduser().resolve()

    def absolute(path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (base / p).resolve()

    bus_url = settings.bus_url
    target = _embedded_target(bus_url)
    if target is not None:
        bus_url = f"embedded://{absolute(target)}"
    store_url = settings.store_url
    if store_url:
        db = _sqlite_file(store_url)
        if db is not None and not db.is_absolute():
            from sqlalchemy.engine import make_url

            store_url = make_url(store_url).set(database=str(absolute(str(db)))).render_as_string(
                hide_password=False)
    elif target is None:  # a Kafka bus keeps its store file in the config dir too
        store_url = f"sqlite:///{base / 'var' / 'syncbus-store.db'}"
    return dataclasses.replace(settings, bus_url=bus_url, store_url=store_url)


class NoState(SyncbusError):
    """A read-only command was pointed at a store or bus that does not exist (wrong --config-dir or --store)."""

    def __init__(self, where: Path | str, option: str = "--config-dir") -> None:
        self.path = where
        super().__init__(f"no syncbus state at {where}: is {option} right?")


def _database_has_state(store_url: str) -> bool:
    """Whether a server database (PostgreSQL, ...) holds syncbus's tables; looks only, creates nothing.

    An unreachable server, or a database that does not exist at all, is the
    connection error it always was (it names the database): that is no empty store.
    """
    from ..state.db import Database, StoreError

    try:
        db = Database(store_url, create=False)
    except StoreError:
        return True  # a bad URL or a missing driver: Store() reports it as it always did
    try:
        return db.has_state()
    finally:
        db.close()


def require_state(settings: Any, *, bus: bool = False) -> None:
    """Refuse to open a store (and, with ``bus``, an embedded bus) that is not there.

    Opening creates the SQLite file -- and on PostgreSQL the whole schema -- so
    without this check a wrong --config-dir or --store answers "no dead letters"
    instead of saying it looked in the wrong place (and leaves syncbus tables in
    someone else's database). Only ``syncbus run`` creates state.
    """
    store_url = settings.resolved_store_url()
    db = _sqlite_file(store_url)
    if db is not None and not db.exists():
        raise NoState(db)
    if not _is_sqlite(store_url) and not _database_has_state(store_url):
        raise NoState(_safe_url(store_url), "--store")
    target = _embedded_target(settings.bus_url) if bus else None
    if target is not None and not Path(target).exists():
        raise NoState(Path(target))


def _is_sqlite(store_url: str) -> bool:
    """SQLite in any form (in-memory ones too): ``_sqlite_file`` covers the files that can be missing."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(store_url).get_backend_name() == "sqlite"
    except ArgumentError:
        return True  # not a URL at all: Store() reports it, there is no database to look into


def _safe_url(store_url: str) -> str:
    """The store URL without its password, for the refusal message."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from ..state.db import normalize_url

    try:
        return make_url(normalize_url(store_url)).render_as_string(hide_password=True)
    except ArgumentError:
        return "?"


def _store(config_dir: Path | None, bus: str | None, store: str | None) -> Any:
    """The state store of an existing node (``NoState`` when there is none where the settings point)."""
    from ..state.store import Store

    settings = _settings(config_dir, bus, store)
    require_state(settings)
    return Store(settings.resolved_store_url())


def _print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False, indent=2))
