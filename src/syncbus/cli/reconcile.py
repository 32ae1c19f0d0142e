"""``syncbus reconcile FLOW``: source against target of one flow; exit 1 when they differ.

The exit code is the point: a nightly job (cron, CI, an Airflow task) runs
it after the 22:00 transfer and pages someone on 1. The report goes to
stdout either way, Markdown for a ticket or JSON for a dashboard.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated

import typer

from ..errors import SyncbusError
from .common import ConfigDir, _settings, app, handle_errors

Day = Annotated[str | None, typer.Option(help="First day to compare (YYYY-MM-DD; default: every day)")]
LastDay = Annotated[str | None, typer.Option(help="Last day to compare (YYYY-MM-DD; default: every day)")]


def _day(value: str | None, option: str) -> str | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise SyncbusError(f"{option} must be a day such as 2026-11-20, not {value!r}") from None


@app.command()
@handle_errors
def reconcile(
    flow: Annotated[str, typer.Argument(help="The flow: reconcile/FLOW.yaml in the config dir")],
    since: Day = None,
    until: LastDay = None,
    format: Annotated[str, typer.Option("--format", help="markdown or json")] = "markdown",
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format json")] = False,
    max_keys: Annotated[int, typer.Option("--max-keys", min=1,
                                          help="Markdown: most keys listed per section")] = 100,
    config_dir: ConfigDir = None,
) -> None:
    """Compare source and target of a flow: counts and amount sums per day, keys missing on either side.

    Exits 0 when they match (within the amount tolerance), 1 on any difference.
    """
    from ..reconcile import load_reconcile, to_json, to_markdown
    from ..reconcile import reconcile as run_reconcile

    fmt = "json" if as_json else format.lower()
    if fmt not in ("markdown", "md", "json"):
        raise SyncbusError(f"--format must be markdown or json, not {format!r}")
    first, last = _day(since, "--since"), _day(until, "--until")
    if first and last and first > last:
        raise SyncbusError(f"--since {first} is after --until {last}")
    config = load_reconcile(_settings(config_dir).config_dir, flow)
    report = run_reconcile(config, since=first, until=last)
    if fmt == "json":
        typer.echo(json.dumps(to_json(report), ensure_ascii=False, indent=2))
    else:
        typer.echo(to_markdown(report, max_keys=max_keys), nl=False)
    if not report.ok:
        raise typer.Exit(1)
