"""Dead-letter commands (``syncbus dlq ...``) and ``syncbus trace``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import SyncbusError
from ..state import DeadLetterConflict
from .common import (
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

dlq_app = typer.Typer(no_args_is_help=True, help="Dead letters: list, show, edit, replay, discard, audit.")
app.add_typer(dlq_app, name="dlq")

# The filters every dead-letter command takes (DESIGN §6). On replay and discard `--reason`
# is the audited "why", so the failure reason is filtered with `--failure-reason` there.
Route = Annotated[str | None, typer.Option(help="Only this route")]
Sink = Annotated[str | None, typer.Option(help="Only letters of this sink")]
Since = Annotated[str | None, typer.Option(help="Failed at or after (ISO time, or a duration ago such as 2h)")]
Until = Annotated[str | None, typer.Option(help="Failed before (ISO time, or a duration ago)")]
Key = Annotated[str | None, typer.Option(help="Only this record key")]
Text = Annotated[str | None, typer.Option(help="Text in the payload or the error")]
FailureReason = Annotated[str | None, typer.Option("--failure-reason",
                                                   help="Only letters that failed with: schema, mapping, "
                                                        "delivery or decode")]
Actor = Annotated[str | None, typer.Option(help="Who (default: $SYNCBUS_ACTOR or the login)")]
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output")]


def _filter(**values: str | None) -> Any:
    """The list filters as typed, parsed once (``dlq.filters``) with the option names in messages."""
    from ..dlq.filters import DeadLetterFilter

    labels = {k: f"--{k.replace('_', '-')}" for k in values}
    if "failure_reason" in values:  # replay/discard: --reason is the audited why
        values["reason"] = values.pop("failure_reason")
        labels["reason"] = labels.pop("failure_reason")
    return DeadLetterFilter.from_mapping(values, labels=labels)


def _short(text: str | None, width: int) -> str:
    text = (text or "-").replace("\n", " ")
    return text if len(text) <= width else text[:width - 1] + "…"


@dlq_app.command("list")
@handle_errors
def dlq_list(
    route: Route = None,
    status: Annotated[str | None, typer.Option(help="pending, replaying, replayed, discarded or delivered")] = None,
    reason: Annotated[str | None, typer.Option(help="schema, mapping, delivery or decode")] = None,
    sink: Sink = None, since: Since = None, until: Until = None, key: Key = None, text: Text = None,
    limit: Annotated[int, typer.Option(help="Letters per page (1-10000)")] = 100,
    offset: Annotated[int, typer.Option(help="Skip this many (paging)")] = 0,
    as_json: AsJson = False,
    config_dir: ConfigDir = None, bus: BusUrl = None, store: StoreUrl = None,
) -> None:
    """List dead letters, newest failure first, one page at a time."""
    from ..dlq.filters import list_page

    flt = _filter(route=route, status=status, reason=reason, sink=sink, since=since, until=until, key=key,
                  text=text)
    page = list_page(_store(config_dir, bus, store), flt, limit, offset)
    if as_json:
        _print_json([d.to_json() for d in page.items])   # a list, as before; the paging line goes to stderr
        typer.echo(page.describe(), err=True)
        return
    if page.items:
        typer.echo(f"{'ID':<35} {'ROUTE':<24} {'KEY':<20} {'REASON':<8} {'STATUS':<10} {'ATT':>3}  "
                   f"{'LAST FAILED':<20} ERROR")
    for d in page.items:
        typer.echo(f"{d.id:<35} {_short(d.route, 24):<24} {_short(d.key, 20):<20} {d.reason:<8} {d.status:<10} "
                   f"{d.attempts:>3}  {d.last_failed_at:%Y-%m-%d %H:%M:%S}Z {_short(d.error, 80)}")
    typer.echo(page.describe())
    if page.has_next:
        typer.echo(f"next page: --offset {page.last}", err=True)


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
    actor: Actor = None,
    config_dir: ConfigDir = None, bus: BusUrl = None, store: StoreUrl = None,
) -> None:
    """Replace the record value of a pending dead letter (fix it before replaying)."""
    import subprocess
    import tempfile

    from ..dlq.operations import MAX_VALUE, edit_letter
    from ..dlq.replay import default_actor

    st = _store(config_dir, bus, store)
    dl = st.get(dl_id)
    if dl.status != "pending":  # say so before anyone spends time in an editor
        raise DeadLetterConflict(dl_id, dl.status, "pending")
    if file == "-":
        value = sys.stdin.buffer.read(MAX_VALUE + 1)
    elif file:
        value = Path(file).read_bytes()
    else:
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as tmp:
            tmp.write(dl.value)
        try:
            subprocess.run([*editor.split(), tmp.name], check=True)
            value = Path(tmp.name).read_bytes()
        finally:
            Path(tmp.name).unlink(missing_ok=True)
    _, changed = edit_letter(st, dl_id, value, actor=actor or default_actor(), reason=reason)
    if not changed:
        typer.echo("unchanged", err=True)
        return
    typer.echo(f"edited {dl_id}")


def _selection(ids: list[str] | None, limit: int, **filters: str | None) -> Any:
    """IDs or filter options, never both, never neither (``operations.Selection``)."""
    from ..dlq.operations import Selection

    return Selection.of(ids, _filter(**filters), limit)


class _Progress:
    """A progress bar on stderr for bulk work, only when stderr is a terminal (logs stay clean)."""

    def __init__(self, enabled: bool, what: str) -> None:
        self.bar: Any = None
        self.task: Any = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                console=Console(stderr=True), transient=True)

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def __call__(self, done: int, total: int, _result: Any) -> None:
        if self.bar is None:
            return
        if self.task is None:
            self.task = self.bar.add_task("", total=total)
        self.bar.update(self.task, completed=done, total=total)


def _report(bulk: Any, as_json: bool, verb: str) -> None:
    """One line per letter on stdout (scriptable), the summary on stderr always; exit 1 if any failed."""
    if as_json:
        _print_json([r.to_json() for r in bulk.results])
    else:
        for r in bulk.results:
            label = verb if r.ok else ("REFUSED " if r.refusal == "needs_fix" else "FAILED  ")
            typer.echo(f"{label} {r.id}" + ("" if r.ok else f": {r.message}"))
    typer.echo(bulk.summary(), err=True)
    if not bulk.ok:
        raise Exit1()


@dlq_app.command("replay")
@handle_errors
def dlq_replay(
    ids: Annotated[list[str] | None, typer.Argument(metavar="ID...", help="Dead letters to replay")] = None,
    route: Route = None, failure_reason: FailureReason = None, sink: Sink = None, since: Since = None,
    until: Until = None, key: Key = None, text: Text = None,
    limit: Annotated[int, typer.Option(help="At most this many letters of a filter (1-10000)")] = 10_000,
    force: Annotated[bool, typer.Option("--force", help="Also replay letters whose schema, mapping or decode "
                                                        "failure was not fixed (edit, newer mapping)")] = False,
    rate: Annotated[str | None, typer.Option(help="At most this fast, e.g. 50/s or 600/m")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be replayed; change nothing")]
    = False,
    reason: Annotated[str, typer.Option(help="Why (audited)")] = "replayed via CLI",
    actor: Actor = None, as_json: AsJson = False,
    config_dir: ConfigDir = None, bus: BusUrl = None, store: StoreUrl = None,
    mapping_version: Annotated[str | None, typer.Option(  # issue 10
        "--version", help="Map the replayed records with this version from the route's history (implies "
                          "--force: choosing the version is the fix)")] = None,
) -> None:
    """Publish dead letters' records again, for their route only: by ID, or every pending one of a filter."""
    import asyncio

    from ..bus import open_bus
    from ..dlq.operations import replay_letters
    from ..dlq.ratelimit import parse_rate
    from ..dlq.replay import default_actor
    from .common import require_state

    selection = _selection(ids, limit, route=route, failure_reason=failure_reason, sink=sink, since=since,
                           until=until, key=key, text=text)
    per_second = parse_rate(rate) if rate else None
    settings = _settings(config_dir, bus, store)
    st = _store(config_dir, bus, store)
    versions = _versions(settings.config_dir)
    if mapping_version is not None:  # issue 10: refuse before anything is replayed if a route lacks it
        from ..changes.versioned import check_history

        check_history(st, selection, mapping_version)
        force = True
    if dry_run:
        _dry_run(st, selection, versions, force)
        return
    require_state(settings, bus=True)   # never publish into a new, empty bus file nobody reads

    async def go() -> Any:
        from ..changes.versioned import VersionHeaderBus  # issue 10: sets, or clears, syncbus-mapping-version

        b = open_bus(settings.bus_url)
        await b.start()
        try:
            with _Progress(selection.is_bulk, "replaying") as progress:
                return await replay_letters(st, VersionHeaderBus(b, mapping_version), selection,
                                            actor=actor or default_actor(), reason=reason,
                                            versions=versions, force=force, rate=per_second, progress=progress)
        finally:
            await b.stop()

    _report(asyncio.run(go()), as_json, "replayed")


def _versions(config_dir: Path) -> dict[str, int]:
    """Route → mapping version in the config dir now; routes that do not load are simply unknown."""
    from ..project import load_mappings

    mappings, _errors = load_mappings(config_dir)
    return {name: m.version for name, m in mappings.items()}


def _dry_run(st: Any, selection: Any, versions: dict[str, int], force: bool) -> None:
    """What a replay would do, letter by letter, without changing anything."""
    from ..dlq.operations import select_letters
    from ..dlq.policy import replay_blocker

    letters, missing = select_letters(st, selection)
    for dl_id in missing:
        typer.echo(f"NOT FOUND {dl_id}")
    for dl in letters:
        blocker = None if force or dl.status != "pending" else replay_blocker(st, dl, versions)
        if dl.status != "pending":
            typer.echo(f"SKIP      {dl.id}: {dl.status}, not pending")
        elif blocker is not None:
            typer.echo(f"REFUSED   {dl.id}: {blocker.explain('--force')}")
        else:
            typer.echo(f"would replay {dl.id}")
    typer.echo(f"dry run: {len(letters)} selected, nothing changed", err=True)


@dlq_app.command("discard")
@handle_errors
def dlq_discard(
    ids: Annotated[list[str] | None, typer.Argument(metavar="ID...", help="Dead letters to discard")] = None,
    route: Route = None, failure_reason: FailureReason = None, sink: Sink = None, since: Since = None,
    until: Until = None, key: Key = None, text: Text = None,
    limit: Annotated[int, typer.Option(help="At most this many letters of a filter (1-10000)")] = 10_000,
    reason: Annotated[str | None, typer.Option(help="Why (audited; required for more than one letter)")]
    = None,
    actor: Actor = None, as_json: AsJson = False,
    config_dir: ConfigDir = None, bus: BusUrl = None, store: StoreUrl = None,
) -> None:
    """Mark dead letters discarded (they stay in the store, audited): by ID, or every pending one of a filter."""
    from ..dlq.operations import discard_letters
    from ..dlq.replay import default_actor

    selection = _selection(ids, limit, route=route, failure_reason=failure_reason, sink=sink, since=since,
                           until=until, key=key, text=text)
    why = reason if reason is not None else ("" if selection.is_bulk else "discarded via CLI")
    st = _store(config_dir, bus, store)
    with _Progress(selection.is_bulk, "discarding") as progress:
        bulk = discard_letters(st, selection, actor=actor or default_actor(), reason=why, progress=progress)
    _report(bulk, as_json, "discarded")


@dlq_app.command("audit")
@handle_errors
def dlq_audit(
    dl_id: Annotated[str | None, typer.Option("--id", help="Only this dead letter")] = None,
    actor: Annotated[str | None, typer.Option(help="Only this actor (an admin key's name, a login, system)")]
    = None,
    action: Annotated[str | None, typer.Option(help="edit, replay, replayed, discard, resolve or revert")]
    = None,
    since: Since = None,
    limit: Annotated[int, typer.Option(help="At most this many entries (oldest first)")] = 1000,
    as_json: AsJson = False,
    config_dir: ConfigDir = None, bus: BusUrl = None, store: StoreUrl = None,
) -> None:
    """Every action on dead letters: who did what, when and why (oldest first)."""
    from ..dlq.filters import parse_time
    from ..dlq.operations import list_audit

    entries = list_audit(_store(config_dir, bus, store), dl_id=dl_id, actor=actor, action=action,
                         since=parse_time(since) if since else None, limit=limit)
    if as_json:
        _print_json([e.to_json() for e in entries])
        return
    if not entries:
        typer.echo("no audit entries match")
        return
    typer.echo(f"{'AT':<20} {'ACTOR':<20} {'ACTION':<9} {'DEAD LETTER':<35} REASON")
    for e in entries:
        typer.echo(f"{e.at:%Y-%m-%d %H:%M:%S}Z {_short(e.actor, 20):<20} {e.action:<9} {e.dead_letter_id:<35} "
                   f"{_short(e.reason, 80)}")


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
    from ..ledger import build, render_text, scope
    from ..project import load_project
    from ..units import parse_duration

    settings = _settings(config_dir, bus, store)
    project = load_project(settings.config_dir, strict_env=False)
    routes, topics = scope(project, source)
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
