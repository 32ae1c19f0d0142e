"""Change management commands (issue 10): versions, diff, shadow report, promote, rollback, report.

They read and write only files and the state store, never a running node:
promote and rollback rewrite mapping files and the node's hot reload swaps
the route, so they work the same against one node or ten.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import SyncbusError
from .common import BusUrl, ConfigDir, StoreUrl, _print_json, _settings, _store, _write, app, handle_errors

AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output")]
Actor = Annotated[str | None, typer.Option(help="Who (default: $SYNCBUS_ACTOR or the login)")]
Approver = Annotated[str | None, typer.Option("--approved-by", help="Who approved the change (audited)")]
Reason = Annotated[str, typer.Option(help="Why (audited)")]


class BadOption(SyncbusError):
    """An option's value cannot be used as given."""


# -- versions / diff ------------------------------------------------------------------------


@app.command()
@handle_errors
def versions(
    route: Annotated[str, typer.Argument(help="The route (mapping name)")],
    show: Annotated[str | None, typer.Option("--show", help="Print this version's file content")] = None,
    as_json: AsJson = False,
    config_dir: ConfigDir = None, bus: BusUrl = None, store: StoreUrl = None,
) -> None:
    """Every version of a route's mapping that a node ran: hash, when loaded, changelog (by, reason, approved_by)."""
    st = _store(config_dir, bus, store)
    if show is not None:
        typer.echo(st.version_of(route, show).content, nl=False)
        return
    rows = st.versions(route)
    audit = st.change_audit(route)
    if as_json:
        _print_json({"route": route, "versions": [v.to_json() for v in rows],
                     "changes": [a.to_json() for a in audit]})
        return
    if not rows:
        raise SyncbusError(f"no recorded versions of {route!r} (versions are recorded when `syncbus run` loads "
                           "a mapping)")
    current = max(rows, key=lambda v: v.last_loaded_at)
    typer.echo(f"{'':2}{'VERSION':>7}  {'HASH':<12}  {'FIRST LOADED':<20} {'LAST LOADED':<20} {'BY':<12} "
               f"{'APPROVED BY':<18} REASON")
    for v in rows:
        by, approver, why = (v.changelog.get(k) or "-" for k in ("by", "approved_by", "reason"))
        typer.echo(f"{'*' if v is current else ' ':2}{v.version:>7}  {v.hash[:12]:<12}  "
                   f"{v.loaded_at:%Y-%m-%d %H:%M:%S}Z {v.last_loaded_at:%Y-%m-%d %H:%M:%S}Z "
                   f"{by!s:<12} {approver!s:<18} {why}")
    for a in audit:
        typer.echo(f"{a.at:%Y-%m-%d %H:%M:%S}Z {a.action} {a.from_version} -> {a.to_version} by {a.actor}"
                   f"{f' approved by {a.approved_by}' if a.approved_by else ''}: {a.reason}")
    typer.echo("* = loaded last")


@app.command("diff")
@handle_errors
def diff_cmd(
    route: Annotated[str, typer.Argument(help="The route (mapping name)")],
    v1: Annotated[str, typer.Argument(help="A version number or hash prefix; 'file' or 'shadow' for files now")],
    v2: Annotated[str, typer.Argument(help="Likewise")],
    as_json: AsJson = False,
    config_dir: ConfigDir = None, bus: BusUrl = None, store: StoreUrl = None,
) -> None:
    """Field-level difference between two versions: fields added, removed, changed rules, when, targets."""
    from ..changes.diff import diff_specs

    settings = _settings(config_dir, bus, store)
    st: Any = None

    def spec(ref: str) -> Any:
        nonlocal st
        if ref in ("file", "shadow"):
            return _file_spec(settings.config_dir, route, ref)
        from ..changes.history import parse_text

        if st is None:
            st = _store(config_dir, bus, store)
        version = st.version_of(route, ref)
        return parse_text(version.content, f"{route}@v{version.version}")

    result = diff_specs(spec(v1), spec(v2))
    if as_json:
        _print_json(result.to_json())
    else:
        typer.echo(result.render(), nl=False)


def _file_spec(config_dir: Path, route: str, which: str) -> Any:
    from ..project import load_mappings

    mappings, _errors = load_mappings(config_dir)
    if which == "file":
        found = mappings.get(route)
    else:
        found = next((m for m in mappings.values() if m.spec.shadow_of == route), None)
    if found is None:
        what = "mapping file" if which == "file" else "shadow (shadow_of: ...)"
        raise SyncbusError(f"no loadable {what} for {route!r} in {config_dir / 'mappings'}")
    return found.spec


# -- promote / rollback ---------------------------------------------------------------------


@app.command()
@handle_errors
def promote(
    route: Annotated[str, typer.Argument(help="The live route (or its shadow's name)")],
    approved_by: Approver = None, reason: Reason = "", actor: Actor = None, as_json: AsJson = False,
    config_dir: ConfigDir = None, bus: BusUrl = None, store: StoreUrl = None,
) -> None:
    """Make the shadow the live version: its file becomes the route's file (hot reload swaps it), audited."""
    from ..changes.switch import promote as do_promote
    from ..dlq.replay import default_actor

    settings = _settings(config_dir, bus, store)
    done = do_promote(_store(config_dir, bus, store), settings.config_dir, route, actor=actor or default_actor(),
                      approved_by=approved_by, reason=reason)
    _print_json(done.to_json()) if as_json else typer.echo(done.render(), nl=False)


@app.command()
@handle_errors
def rollback(
    route: Annotated[str, typer.Argument(help="The route (mapping name)")],
    to: Annotated[str, typer.Option("--to", help="Version number or hash prefix from `syncbus versions`")],
    approved_by: Approver = None, reason: Reason = "", actor: Actor = None, as_json: AsJson = False,
    config_dir: ConfigDir = None, bus: BusUrl = None, store: StoreUrl = None,
) -> None:
    """Restore a recorded version's file content in one step (hot reload swaps it), audited."""
    from ..changes.switch import rollback as do_rollback
    from ..dlq.replay import default_actor

    settings = _settings(config_dir, bus, store)
    done = do_rollback(_store(config_dir, bus, store), settings.config_dir, route, to,
                       actor=actor or default_actor(), approved_by=approved_by, reason=reason)
    _print_json(done.to_json()) if as_json else typer.echo(done.render(), nl=False)


# -- shadow report --------------------------------------------------------------------------

shadow_app = typer.Typer(no_args_is_help=True, help="Parallel runs (shadow_of:): agreement with the live route.")
app.add_typer(shadow_app, name="shadow")


@shadow_app.command("report")
@handle_errors
def shadow_report(
    route: Annotated[str, typer.Argument(help="The live route (or the shadow's name)")],
    shadow: Annotated[str | None, typer.Option(help="Only this shadow (when a route has several)")] = None,
    format: Annotated[str, typer.Option("--format", help="markdown or json")] = "markdown",
    as_json: AsJson = False,
    examples: Annotated[int, typer.Option(help="Differing records shown with both values")] = 5,
    records: Annotated[bool, typer.Option("--records", help="JSON: every compared record and its paths")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file")] = None,
    config_dir: ConfigDir = None, bus: BusUrl = None, store: StoreUrl = None,
) -> None:
    """Agreement rate of the newest shadow run, the fields that differ most, examples, earlier runs."""
    from ..changes.shadow_report import build, render_markdown

    fmt = "json" if as_json else format
    if fmt not in ("markdown", "md", "json"):
        raise BadOption(f"--format must be markdown or json, not {format!r}")
    report = build(_store(config_dir, bus, store), route, shadow=shadow, examples=examples,
                   with_records=records)
    text = (json.dumps(report.to_json(), ensure_ascii=False, indent=2) + "\n" if fmt == "json"
            else render_markdown(report))
    _write(text, output)


# -- the effect of a change -----------------------------------------------------------------


@app.command()
@handle_errors
def report(
    route: Annotated[list[str] | None, typer.Option("--route", help="Only this flow (repeatable)")] = None,
    since: Annotated[str, typer.Option(help="Window start: ISO time or a duration ago (30d, 12h)")] = "30d",
    until: Annotated[str | None, typer.Option(help="Window end (default: now)")] = None,
    compare: Annotated[tuple[int, int] | None, typer.Option("--compare", help="Compare two mapping versions: "
                                                                        "--compare 4 5")] = None,
    compare_periods: Annotated[bool, typer.Option("--compare-periods", help="Compare with the window of equal "
                                                                          "length before")] = False,
    format: Annotated[str, typer.Option("--format", help="markdown, json or html")] = "markdown",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file")] = None,
    config_dir: ConfigDir = None, bus: BusUrl = None, store: StoreUrl = None,
) -> None:
    """Per flow: volume, error and dead-letter rates, p50/p95 processing time, time to resolve dead letters."""
    from ..changes.effect import build
    from ..changes.effect_render import render_html, render_json, render_markdown
    from ..dlq.filters import parse_time

    if compare is not None and compare_periods:
        raise BadOption("give --compare V1 V2 or --compare-periods, not both")
    if format not in ("markdown", "md", "json", "html"):
        raise BadOption(f"--format must be markdown, json or html, not {format!r}")
    now = datetime.now(UTC)
    start = parse_time(since, "--since", now)
    end = parse_time(until, "--until", now) if until else now
    if end <= start:
        raise BadOption("--until must be later than --since")
    result = build(_store(config_dir, bus, store), since=start, until=end, routes=route or None,
                   compare_versions=tuple(compare) if compare else None,  # type: ignore[arg-type]
                   compare_periods=compare_periods)
    render = {"json": render_json, "html": render_html}.get(format, render_markdown)
    _write(render(result), output)
