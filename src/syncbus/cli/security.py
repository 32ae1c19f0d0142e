"""Security commands: ``syncbus backup``, ``syncbus restore``, ``syncbus keys rotate|new`` (issue 12).

Also the TLS and encryption options of ``syncbus run`` (declared here, used by ``run.py``),
so that everything about protecting the node's data is read in one place.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import SyncbusError
from .common import (
    BusUrl,
    ConfigDir,
    StoreUrl,
    _embedded_target,
    _print_json,
    _settings,
    _sqlite_file,
    app,
    handle_errors,
    require_state,
)

# -- options of `syncbus run` ------------------------------------------------------------------

TlsCert = Annotated[Path | None, typer.Option("--tls-cert", envvar="SYNCBUS_TLS_CERT",
                                              help="Serve HTTPS with this certificate (PEM, chain after it)")]
TlsKey = Annotated[Path | None, typer.Option("--tls-key", envvar="SYNCBUS_TLS_KEY",
                                             help="The certificate's private key (PEM)")]
TlsClientCa = Annotated[Path | None, typer.Option("--tls-client-ca", envvar="SYNCBUS_TLS_CLIENT_CA",
                                                  help="Verify client certificates against this CA bundle "
                                                       "(mutual TLS; sources opt in with auth: {mtls: true})")]
TlsRequireClientCert = Annotated[bool, typer.Option("--tls-require-client-cert",
                                                    envvar="SYNCBUS_TLS_REQUIRE_CLIENT_CERT",
                                                    help="Refuse every connection without a valid client "
                                                         "certificate (at the handshake)")]
EncryptBus = Annotated[bool, typer.Option("--encrypt-bus", envvar="SYNCBUS_ENCRYPT_BUS",
                                          help="Encrypt the embedded bus's records too (needs SYNCBUS_DATA_KEYS)")]


def run_security(tls_cert: Path | None, tls_key: Path | None, tls_client_ca: Path | None,
                 require_client_cert: bool, encrypt_bus: bool) -> Any:
    """The TLS options of ``syncbus run`` (None: plain HTTP), and ``--encrypt-bus`` made the process setting."""
    from ..ingress.security.tls import TlsOptions

    if encrypt_bus:
        os.environ["SYNCBUS_ENCRYPT_BUS"] = "1"  # read by state/crypto.py when the server starts
    return TlsOptions.resolve(tls_cert, tls_key, tls_client_ca, require_client_cert, env=os.environ)


# -- backup and restore ------------------------------------------------------------------------


def _targets(config_dir: Path | None, bus: str | None, store: str | None) -> Any:
    from ..state.backup import Targets

    settings = _settings(config_dir, bus, store)
    target = _embedded_target(settings.bus_url)
    store_url = settings.resolved_store_url()
    return settings, Targets(bus=Path(target) if target else None, store=_sqlite_file(store_url),
                             bus_url=settings.bus_url, store_url=store_url)


def _require_files(targets: Any) -> None:
    """The files backup copies must exist (opening one would create it empty).

    Not ``require_state``: that also connects to a server store, which backup never opens
    -- it only prints how to dump it -- so an unreachable PostgreSQL must not stop the bus copy.
    """
    from .common import NoState

    for path in (targets.bus, targets.store):
        if path is not None and not path.exists():
            raise NoState(path)


def _libpq_url(store_url: str) -> str | None:
    """The store URL as pg_dump and pg_restore read it (None: the store is not PostgreSQL).

    libpq refuses SQLAlchemy's ``postgresql+psycopg://``, so the driver part goes; the
    password goes too (printed text ends up in logs and shell history: PGPASSWORD or
    ~/.pgpass supply it). Host, port, database, user and TLS parameters are kept.
    """
    from sqlalchemy.engine import URL, make_url
    from sqlalchemy.exc import ArgumentError

    from ..state.db import normalize_url

    try:
        url = make_url(normalize_url(store_url))
    except ArgumentError:
        return None
    if url.get_backend_name() != "postgresql":
        return None
    query = {k: v for k, v in url.query.items() if k.lower() != "password"}
    return URL.create("postgresql", username=url.username, host=url.host, port=url.port, database=url.database,
                      query=query).render_as_string(hide_password=False)


def _pg_restore(url: str, dump: Path) -> str:
    import shlex

    return f"pg_restore --clean --if-exists --dbname {shlex.quote(url)} {shlex.quote(str(dump))}"


def _store_guidance(store_url: str, dest: Path, *, bus_copied: bool) -> str:
    """How to back up a store syncbus does not copy: ``pg_dump`` into ``dest``, and how to restore that."""
    import shlex

    url = _libpq_url(store_url)
    if url is None:
        return "The state store is not a SQLite file: back it up with its database's own tools."
    dump = dest / "store.pgdump"
    lines = [f"The state store is PostgreSQL ({url}): syncbus does not copy it; back it up with pg_dump:",
             *([] if bus_copied else [f"  mkdir -p {shlex.quote(str(dest))}"]),
             f"  pg_dump --format=custom --file {shlex.quote(str(dump))} --dbname {shlex.quote(url)}",
             "and restore it, with the node stopped, with",
             f"  {_pg_restore(url, dump)}",
             "(the password is not printed: supply it in PGPASSWORD or ~/.pgpass)."]
    if bus_copied:
        lines.append("Run pg_dump right after this backup: the store may then know a few records the bus copy "
                     "does not -- they were accepted after the bus copy and are reported by `syncbus ledger`.")
    return "\n".join(lines)


@app.command("backup")
@handle_errors
def backup_command(
    dest: Annotated[Path, typer.Argument(help="A new (or empty) folder for the backup")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest")] = False,
    config_dir: ConfigDir = None, bus: BusUrl = None, store: StoreUrl = None,
) -> None:
    """A consistent copy of the embedded bus and the state store, also while `syncbus run` runs.

    With a Kafka bus and a PostgreSQL store there is nothing for syncbus to copy: it prints
    the pg_dump commands and exits 1 without making a folder, so a scheduled job that runs
    it is not taken for a working backup.
    """
    from ..state.backup import backup

    _, targets = _targets(config_dir, bus, store)
    _require_files(targets)
    bus_copied = targets.bus is not None
    hint = None if targets.store is not None else _store_guidance(targets.store_url, dest, bus_copied=bus_copied)
    kafka = None if bus_copied else "The bus is Kafka: its records are kept by Kafka's own replication, not here."
    if hint and kafka:  # nothing to copy: the guidance, then backup() refuses with the error line
        typer.echo(f"{hint}\n{kafka}", err=True)
    manifest = backup(targets, dest, store_hint=hint)
    if as_json:
        _print_json(manifest)
    else:
        bus_info = manifest.get("bus", {})
        marks = ", ".join(f"{t}@{o}" for t, o in sorted(bus_info.get("high_water", {}).items())) or "none"
        typer.echo(f"backup written to {dest} in {manifest['seconds']}s; topics (high-water marks): {marks}")
    for text in (hint, kafka):
        if text:
            typer.echo(text, err=True)


@app.command("restore")
@handle_errors
def restore_command(
    src: Annotated[Path, typer.Argument(help="A folder written by `syncbus backup`")],
    force: Annotated[bool, typer.Option("--force", help="Restore even if a process has the files open")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
    config_dir: ConfigDir = None, bus: BusUrl = None, store: StoreUrl = None,
) -> None:
    """Put a backup back in place of the node's files, all or nothing (the current ones are moved aside)."""
    from ..state.restore import restore

    _, targets = _targets(config_dir, bus, store)
    done = restore(targets, src, force=force)
    if as_json:
        _print_json(done)
        return
    for path in done["set_aside"]:
        typer.echo(f"moved aside: {path}")
    for path in done["restored"]:
        typer.echo(f"restored: {path} (backup of {done['created_at']})")
    typer.echo("Start the node; `syncbus ledger` then shows the fate of every record of the backup.")
    if targets.store is not None:
        return
    url = _libpq_url(targets.store_url)
    typer.echo("The state store is PostgreSQL: restore its dump (made with pg_dump, password in PGPASSWORD or "
               f"~/.pgpass) with\n  {_pg_restore(url, src / 'store.pgdump')}" if url else
               "The state store is not a SQLite file: restore it with its database's own tools.", err=True)


# -- data keys ---------------------------------------------------------------------------------

keys_app = typer.Typer(no_args_is_help=True, help="Data keys for encryption at rest (SYNCBUS_DATA_KEYS).")
app.add_typer(keys_app, name="keys")


@keys_app.command("new")
@handle_errors
def keys_new(kid: Annotated[str, typer.Argument(help="Key id (letters, digits, . _ -)")] = "") -> None:
    """Print a fresh AES-256 key as KID:BASE64, ready to put FIRST in SYNCBUS_DATA_KEYS."""
    from ..state.crypto import KID

    kid = kid or f"k{secrets.token_hex(3)}"
    if not KID.fullmatch(kid):
        raise SyncbusError(f"key id {kid!r}: use at most 32 letters, digits, '.', '_' or '-'")
    typer.echo(f"{kid}:{base64.b64encode(secrets.token_bytes(32)).decode()}")


@keys_app.command("rotate")
@handle_errors
def keys_rotate(
    encrypt_bus: EncryptBus = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
    config_dir: ConfigDir = None, bus: BusUrl = None, store: StoreUrl = None,
) -> None:
    """Re-encrypt every stored payload with the first key of SYNCBUS_DATA_KEYS (beside running nodes)."""
    from ..state import crypto
    from ..state.rekey import rotate_bus, rotate_store

    settings, targets = _targets(config_dir, bus, store)
    require_state(settings, bus=targets.bus is not None)
    env = dict(os.environ)
    if encrypt_bus:
        env["SYNCBUS_ENCRYPT_BUS"] = "1"
    codec = crypto.codec_from_env(env)
    report = rotate_store(targets.store_url, codec)
    if targets.bus is not None:
        rotate_bus(targets.bus, codec, report, seal_plaintext=codec.encrypt_bus)
    if as_json:
        _print_json({"key": codec.keyring.current if codec.keyring else None, **report.to_json()})
        return
    for table in sorted(report.resealed):
        typer.echo(f"{table}: {report.resealed[table]} re-encrypted, {report.current.get(table, 0)} already "
                   f"with key {codec.keyring.current if codec.keyring else '?'}")
