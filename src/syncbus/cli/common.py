"""What every command shares: the typer app, common options, error handling and output helpers.

Every command turns syncbus errors into one line per problem and exit code 1;
anything unexpected becomes a one-line ``internal error`` with exit code 2.
Nobody using the tool should ever see a traceback.
"""

from __future__ import annotations

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
    from ..config import Settings

    return Settings.from_env(str(config_dir) if config_dir else None, bus, store)



def _store(config_dir: Path | None, bus: str | None, store: str | None) -> Any:
    from ..state.store import Store

    return Store(_settings(config_dir, bus, store).resolved_store_url())


def _print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False, indent=2))
