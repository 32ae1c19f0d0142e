"""Dead-letter commands (``syncbus dlq ...``) and ``syncbus trace``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import SyncbusError
from .common import (
    MAX_INPUT,
    BusUrl,
    ConfigDir,
    Exit1,
    StoreUrl,
    _print_json,
    _settings,
    _store,
    app,
    handle_errors,
)

# -- dead letters ------------------------------------------------------------------------

dlq_app = typer.Typer(no_args_is_help=True, help="Dead letters: list, show, edit, replay, discard.")
app.add_typer(dlq_app, name="dlq")


@dlq_app.command("list")
@handle_errors
def dlq_list(
    route: Annotated[str | None, typer.Option(help="Only this route")] = None,
    status: Annotated[str | None, typer.Option(help="pending, replayed or discarded")] = None,
    since: Annotated[str | None, typer.Option(help="ISO date/time or a duration ago (2h)")] = None,
    limit: int = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
    config_dir: ConfigDir = None, bus: BusUrl = None, store: StoreUrl = None,
) -> None:
    """List dead letters, newest first."""
    from ..dlq.replay import parse_since

    st = _store(config_dir, bus, store)
    items = st.list(route=route, status=status, since=parse_since(since) if since else None, limit=limit)
    if as_json:
        _print_json([d.to_json() for d in items])
        return
    if not items:
        typer.echo("no dead letters")
        return
    typer.echo(f"{'ID':<38} {'ROUTE':<24} {'REASON':<9} {'STATUS':<10} {'ATT':>3}  LAST FAILED           ERROR")
    for d in items:
        err = d.error.replace("\n", " ")
        typer.echo(f"{d.id:<38} {d.route:<24} {d.reason:<9} {d.status:<10} {d.attempts:>3}  "
                   f"{d.last_failed_at:%Y-%m-%d %H:%M:%S}Z  {err[:80]}")


@dlq_app.command("show")
@handle_errors
def dlq_show(
    dl_id: Annotated[str, typer.Argument(metavar="ID")],
    config_dir: ConfigDir = None, bus: BusUrl = None, store: StoreUrl = None,
) -> None:
    """Show one dead letter with its record and audit trail (JSON)."""
    st = _store(config_dir, bus, store)
    dl = st.get(dl_id)
    _print_json({**dl.to_json(), "audit": [a.to_json() for a in st.audit(dl_id)]})


@dlq_app.command("edit")
@handle_errors
def dlq_edit(
    dl_id: Annotated[str, typer.Argument(metavar="ID")],
    file: Annotated[str | None, typer.Option("--file", "-f", help="New record value from a file (- = stdin); "
                                                                  "default: open $EDITOR")] = None,
    reason: Annotated[str, typer.Option(help="Why (audited)")] = "edited via CLI",
    actor: Annotated[str | None, typer.Option(help="Who (default: $SYNCBUS_ACTOR or the login)")] = None,
    config_dir: ConfigDir = None, bus: BusUrl = None, store: StoreUrl = None,
) -> None:
    """Replace the record value of a pending dead letter (fix it before replaying)."""
    import subprocess
    import tempfile

    from ..dlq.replay import default_actor

    st = _store(config_dir, bus, store)
    dl = st.get(dl_id)
    if file == "-":
        value = sys.stdin.buffer.read(MAX_INPUT + 1)
    elif file:
        value = Path(file).read_bytes()
    else:
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as tmp:
            tmp.write(dl.value)
        subprocess.run([*editor.split(), tmp.name], check=True)
        value = Path(tmp.name).read_bytes()
        Path(tmp.name).unlink(missing_ok=True)
    if len(value) > MAX_INPUT:
        raise SyncbusError(f"the new value is larger than {MAX_INPUT} bytes")
    if not value.strip():
        raise SyncbusError("the new value is empty; nothing was changed")
    if value == dl.value:
        typer.echo("unchanged", err=True)
        return
    st.edit(dl_id, value, actor or default_actor(), reason)
    typer.echo(f"edited {dl_id}")


@dlq_app.command("replay")
@handle_errors
def dlq_replay(
    ids: Annotated[list[str] | None, typer.Argument(metavar="ID...", help="Dead letters to replay")] = None,
    route: Annotated[str | None, typer.Option(help="Replay every pending dead letter of this route")] = None,
    since: Annotated[str | None, typer.Option(help="…that failed since (ISO time or 2h)")] = None,
    reason: Annotated[str, typer.Option(help="Why (audited)")] = "replayed via CLI",
    actor: Annotated[str | None, typer.Option(help="Who (default: $SYNCBUS_ACTOR or the login)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    config_dir: ConfigDir = None, bus: BusUrl = None, store: StoreUrl = None,
) -> None:
    """Publish dead letters' records again, for their route only; each replay is audited."""
    import asyncio

    from ..bus import open_bus
    from ..dlq.replay import default_actor, parse_since, replay, replay_matching

    if not ids and not route and not since:
        raise SyncbusError("give dead-letter IDs, or --route and/or --since")
    if ids and (route or since):
        raise SyncbusError("give IDs or --route/--since, not both")
    settings = _settings(config_dir, bus, store)
    st = _store(config_dir, bus, store)
    who = actor or default_actor()

    async def go() -> list[Any]:
        b = open_bus(settings.bus_url)
        await b.start()
        try:
            if ids:
                return await replay(st, b, list(ids), who, reason)
            return await replay_matching(st, b, route, parse_since(since) if since else None, who, reason)
        finally:
            await b.stop()

    results = asyncio.run(go())
    if as_json:
        _print_json([r.to_json() for r in results])
    else:
        for r in results:
            typer.echo(f"{'replayed' if r.ok else 'FAILED  '} {r.id}" + ("" if r.ok else f": {r.message}"))
        typer.echo(f"{sum(r.ok for r in results)} replayed, {sum(not r.ok for r in results)} not", err=True)
    if any(not r.ok for r in results):
        raise Exit1()


@dlq_app.command("discard")
@handle_errors
def dlq_discard(
    ids: Annotated[list[str], typer.Argument(metavar="ID...")],
    reason: Annotated[str, typer.Option(help="Why (audited)")] = "discarded via CLI",
    actor: Annotated[str | None, typer.Option(help="Who (default: $SYNCBUS_ACTOR or the login)")] = None,
    config_dir: ConfigDir = None, bus: BusUrl = None, store: StoreUrl = None,
) -> None:
    """Mark dead letters discarded (they stay in the store, audited)."""
    from ..dlq.replay import default_actor

    st = _store(config_dir, bus, store)
    done = st.discard(list(ids), actor or default_actor(), reason)
    for d in done:
        typer.echo(f"discarded {d.id}")


# -- trace ---------------------------------------------------------------------------------


@app.command()
@handle_errors
def trace(
    record_id: Annotated[str, typer.Argument(metavar="ID", help="Record id or dead-letter id")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
    config_dir: ConfigDir = None, bus: BusUrl = None, store: StoreUrl = None,
) -> None:
    """The life of one record: received, mapped, attempts, delivered or dead-lettered."""
    from ..dlq.trace_view import load_trace

    view = load_trace(_store(config_dir, bus, store), record_id)
    if view is None:
        raise SyncbusError(f"no trace for {record_id!r}")
    if as_json:
        _print_json(view)
        return
    typer.echo(f"record {view['record_id']}")
    for ev in view["events"]:
        detail = " ".join(f"{k}={v}" for k, v in ev["detail"].items())
        typer.echo(f"  {ev['at']}  {ev['route'] or '-':<24} {ev['stage']:<14} {detail}")
    for route, outcome in view["outcome"].items():
        typer.echo(f"{route}: {outcome}")


# -- ledger --------------------------------------------------------------------------------


@app.command()
@handle_errors
def ledger(
    source: Annotated[str | None, typer.Option(help="Only records from this source")] = None,
    since: Annotated[str, typer.Option(help="Accepted since (ISO time or a duration ago such as 2h)")] = "24h",
    until: Annotated[str | None, typer.Option(help="…and before (ISO time or a duration ago)")] = None,
    grace: Annotated[str, typer.Option(help="How long a record may be in flight before it counts as stuck")]
    = "10m",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
    config_dir: ConfigDir = None, bus: BusUrl = None, store: StoreUrl = None,
) -> None:
    """The fate of every accepted record: delivered, pending, discarded, in flight; exit 1 if any has none."""
    import asyncio

    from ..dlq.replay import parse_since
    from ..ledger import build, render_text
    from ..project import load_project
    from ..units import parse_duration

    settings = _settings(config_dir, bus, store)
    project = load_project(settings.config_dir, strict_env=False)
    routes = {name: m.topic for name, m in project.mappings.items()}
    topics = [c.config.topic for c in project.connectors.sources.values()
              if source is None or c.name == source]
    if source is not None and not topics:
        raise SyncbusError(f"no source named {source!r} (known: {', '.join(sorted(project.connectors.sources))})")
    try:
        grace_s = parse_duration(grace)
    except ValueError as exc:
        raise SyncbusError(f"--grace: {exc}") from None
    report = asyncio.run(build(_store(config_dir, bus, store), settings.bus_url, routes, topics,
                               since=parse_since(since).timestamp(),
                               until=parse_since(until).timestamp() if until else None, source=source,
                               grace=grace_s))
    if as_json:
        _print_json(report.to_json())
    else:
        typer.echo(render_text(report), nl=False)
    if not report.ok:
        raise Exit1()
