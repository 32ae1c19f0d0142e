"""The ``syncbus`` command line (DESIGN §6).

Every command turns syncbus errors into one line per problem and exit code 1;
anything unexpected becomes a one-line ``internal error`` with exit code 2.
Nobody using the tool should ever see a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from .errors import ConfigError, ConfigErrors, SyncbusError

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
    from .config import Settings

    return Settings.from_env(str(config_dir) if config_dir else None, bus, store)


# -- validate ---------------------------------------------------------------------------


@app.command()
@handle_errors
def validate(
    paths: Annotated[list[Path] | None, typer.Argument(help="Files to check on their own; none: the config dir")]
    = None,
    config_dir: ConfigDir = None,
    bus: BusUrl = None,
) -> None:
    """Check mapping and connector files; print file:line:col: message per problem, exit 1 if any."""
    from .project import load_project

    if not paths:
        settings = _settings(config_dir)
        project = load_project(settings.config_dir, strict_env=False)
        typer.echo(f"ok: {len(project.mappings)} mappings, {len(project.connectors.sources)} sources, "
                   f"{len(project.connectors.sinks)} sinks")
        return
    errors: list[ConfigError] = []
    for path in paths:
        try:
            _validate_one(path)
        except ConfigErrors as exc:
            errors.extend(exc.errors)
        except ConfigError as exc:
            errors.append(exc)
    if errors:
        raise ConfigErrors(errors)
    typer.echo(f"ok: {len(paths)} file{'s' if len(paths) != 1 else ''}")


def _validate_one(path: Path) -> None:
    from .config import load_connector_file
    from .errors import Location
    from .mapping.loader import load_mapping
    from .project import load_project
    from .yamlfile import load_yaml_file

    if path.is_dir():
        load_project(path, strict_env=False)
        return
    doc = load_yaml_file(path)
    data = doc.data
    if isinstance(data, dict) and "mapping" in data and "fields" in data:
        load_mapping(path)
    elif isinstance(data, dict) and ("sources" in data or "sinks" in data):
        load_connector_file(path, strict=False)
    elif isinstance(data, dict) and "cases" in data:
        from pydantic import ValidationError

        from .mapping.testing import TestFile
        from .yamlfile import validation_errors

        try:
            TestFile.model_validate(data)
        except ValidationError as exc:
            raise validation_errors(doc, exc) from None
    elif isinstance(data, dict) and ("mapping" in data or "source" in data or "target" in data):
        load_mapping(path)  # a mapping with missing keys: let the model say which
    else:
        raise ConfigError("not a mapping (needs 'mapping:'), connectors ('sources:'/'sinks:') or test "
                          "('cases:') file", Location(str(path), 1, 1))


# -- map ------------------------------------------------------------------------------------


@app.command("map")
@handle_errors
def map_cmd(
    mapping: Annotated[Path, typer.Argument(help="The mapping file")],
    input: Annotated[str | None, typer.Argument(help="Record file (JSON or XML); - or none: stdin")] = None,
    content_type: Annotated[str | None, typer.Option("--content-type", "-t",
                                                     help="application/json or application/xml")] = None,
    config_dir: ConfigDir = None,
    bus: BusUrl = None,
) -> None:
    """Dry-run one mapping on one record and print the payload exactly as it would be sent."""
    from .mapping.loader import load_mapping

    compiled = load_mapping(mapping)
    data, name = _read_input(input)
    ctype = content_type or _sniff(data, name)
    result = compiled.map_bytes(data, ctype)
    if result.skipped:
        typer.echo("skipped: the record does not pass `when`", err=True)
        return
    out = sys.stdout.buffer
    many = len(result.outputs) > 1
    for i, output in enumerate(result.outputs):
        if many:
            typer.echo(f"target {output.target.index}: sink {output.target.sink} ({output.target.format})",
                       err=True)
        out.write(output.body)
        if many and i < len(result.outputs) - 1:
            out.write(b"\n")
    if sys.stdout.isatty():
        out.write(b"\n")
    out.flush()


def _read_input(name: str | None) -> tuple[bytes, str]:
    """Read at most MAX_INPUT bytes: a 100 MB input is refused without being read."""
    if name in (None, "-"):
        stream = sys.stdin.buffer
        label = "stdin"
    else:
        path = Path(name)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise SyncbusError(f"input file {name} not found") from None
        if size > MAX_INPUT:
            raise SyncbusError(f"input {name} is {size} bytes; the limit is {MAX_INPUT}")
        stream = path.open("rb")
        label = name
    try:
        data = stream.read(MAX_INPUT + 1)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    if len(data) > MAX_INPUT:
        raise SyncbusError(f"input {label} is larger than the limit of {MAX_INPUT} bytes")
    return data, label


def _sniff(data: bytes, name: str) -> str:
    lower = name.lower()
    if lower.endswith(".xml"):
        return "application/xml"
    if lower.endswith(".json"):
        return "application/json"
    head = data[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    return "application/xml" if head.startswith(b"<") else "application/json"


# -- test -------------------------------------------------------------------------------


@app.command("test")
@handle_errors
def test_cmd(
    path: Annotated[Path | None, typer.Argument(help="A test file or folder (default: mappings/tests)")] = None,
    config_dir: ConfigDir = None,
    bus: BusUrl = None,
) -> None:
    """Run mapping unit tests (mappings/tests/*.yaml: input and expected output)."""
    from .mapping.testing import run_tests

    settings = _settings(config_dir)
    target = path or settings.config_dir
    report = run_tests(target, settings.config_dir)
    for err in report.errors:
        typer.echo(str(err))
    for r in report.results:
        mark = "PASS" if r.ok else "FAIL"
        typer.echo(f"{mark} {r.file}: {r.name}")
        if not r.ok:
            typer.echo("  " + r.detail.replace("\n", "\n  "))
    total = len(report.results)
    if total == 0 and not report.errors:
        _fail(f"error: no mapping tests found under {target}")
    typer.echo(f"mapping tests: {report.passed} of {total} cases ok"
               + (f", {report.failed} failing" if report.failed else "")
               + (f", {len(report.errors)} file errors" if report.errors else ""))
    if report.failed or report.errors:
        raise Exit1()


# -- catalog / schema -------------------------------------------------------------------


@app.command()
@handle_errors
def catalog(
    config_dir: ConfigDir = None,
    bus: BusUrl = None,
    format: Annotated[str, typer.Option("--format", help="markdown or html")] = "markdown",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file")] = None,
) -> None:
    """Print the interface catalogue: systems, direction, fields, schedule, security, owner, version."""
    from .mapping.catalog import build_catalog, render_html, render_markdown
    from .project import load_project

    if format not in ("markdown", "md", "html"):
        raise SyncbusError(f"--format must be markdown or html, not {format!r}")
    settings = _settings(config_dir)
    project = load_project(settings.config_dir, strict_env=False)
    entries = build_catalog(list(project.mappings.values()), project.connectors)
    text = render_html(entries) if format == "html" else render_markdown(entries)
    _write(text, output)


@app.command()
@handle_errors
def schema(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file")] = None,
    config_dir: ConfigDir = None,
    bus: BusUrl = None,
) -> None:
    """Print the JSON Schema of the mapping file format (for editors such as VS Code YAML)."""
    from .mapping.spec import mapping_json_schema

    text = json.dumps(mapping_json_schema(), indent=2, ensure_ascii=False) + "\n"
    _write(text, output)


# -- run -----------------------------------------------------------------------------------


@app.command()
@handle_errors
def run(
    config_dir: ConfigDir = None,
    bus: BusUrl = None,
    store: StoreUrl = None,
    port: Annotated[int | None, typer.Option("--port", envvar="SYNCBUS_PORT", help="HTTP port (8080)")] = None,
    host: Annotated[str | None, typer.Option("--host", envvar="SYNCBUS_HOST", help="Bind address")] = None,
    max_in_flight: Annotated[int, typer.Option(help="Records in flight per route (backpressure)")] = 1000,
    log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
    no_trace: Annotated[bool, typer.Option("--no-trace", help="Do not record trace events")] = False,
) -> None:
    """Run connectors, routes and the HTTP server until SIGTERM/SIGINT."""
    import logging

    from .project import load_project
    from .router import RouterOptions
    from .runtime import Runtime, serve

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("httpx", "httpcore", "aiokafka"):  # one line per request/metadata refresh
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))
    settings = _settings(config_dir, bus, store)
    from .config import Settings

    settings = Settings(settings.config_dir, settings.bus_url, settings.store_url,
                        port or settings.port, host or settings.host)
    project = load_project(settings.config_dir)
    runtime = Runtime(settings, project, options=RouterOptions(max_in_flight=max_in_flight),
                      trace=not no_trace)
    typer.echo(f"syncbus: {len(project.mappings)} routes, bus {settings.bus_url}, "
               f"http://{settings.host}:{settings.port}", err=True)
    serve(runtime, settings.host, settings.port, log_level.lower())


# -- dead letters ------------------------------------------------------------------------

dlq_app = typer.Typer(no_args_is_help=True, help="Dead letters: list, show, edit, replay, discard.")
app.add_typer(dlq_app, name="dlq")


def _store(config_dir: Path | None, bus: str | None, store: str | None) -> Any:
    from .dlq.store import Store

    return Store(_settings(config_dir, bus, store).resolved_store_url())


def _print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False, indent=2))


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
    from .dlq.replay import parse_since

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

    from .dlq.replay import default_actor

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

    from .bus import open_bus
    from .dlq.replay import default_actor, parse_since, replay, replay_matching

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
    from .dlq.replay import default_actor

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
    from .dlq.trace_view import load_trace

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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
