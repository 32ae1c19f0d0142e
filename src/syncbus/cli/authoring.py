"""Commands for people writing flows: validate, map, test, catalog, schema."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError, ConfigErrors, SyncbusError
from .common import (
    MAX_INPUT,
    BusUrl,
    ConfigDir,
    Exit1,
    StoreUrl,
    _fail,
    _settings,
    _write,
    app,
    handle_errors,
)

# -- validate ---------------------------------------------------------------------------


@app.command()
@handle_errors
def validate(
    paths: Annotated[list[Path] | None, typer.Argument(help="Files to check on their own; none: the config dir")]
    = None,
    config_dir: ConfigDir = None,
    bus: BusUrl = None,
) -> None:
    """Check mapping, connector and mapping test files; print file:line:col: message per problem, exit 1 if any.

    Warnings (a route reading a topic no source publishes to) are printed as
    ``file:line:col: warning: ...`` and do not change the exit code.
    """
    if not paths:
        from ..mapping.validation import validate_config_dir

        settings = _settings(config_dir)
        found = validate_config_dir(settings.config_dir)
        for warning in found.warnings:
            typer.echo(str(warning))
        if found.errors:
            raise ConfigErrors(found.errors)
        project = found.project
        tests = len(list((settings.config_dir / "mappings" / "tests").glob("*.y*ml")))
        typer.echo(f"ok: {len(project.mappings)} mappings, {len(project.connectors.sources)} sources, "
                   f"{len(project.connectors.sinks)} sinks, {tests} test files"
                   + (f", {len(found.warnings)} warnings" if found.warnings else ""))
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
    from ..config import load_connector_file
    from ..errors import Location
    from ..mapping.loader import load_mapping
    from ..project import load_project
    from ..yamlfile import load_yaml_file

    if path.is_dir():
        load_project(path, strict_env=False)
        return
    doc = load_yaml_file(path)
    data = doc.data
    if isinstance(data, dict) and "mapping" in data and "fields" in data:
        load_mapping(path)
    elif isinstance(data, dict) and ("sources" in data or "sinks" in data):
        load_connector_file(path, strict=False)
    elif isinstance(data, dict) and ("cases" in data or path.parent.name == "tests"):
        from ..mapping.testing import check_test_file

        problems = check_test_file(path)
        if problems:
            raise ConfigErrors(problems)
    elif isinstance(data, dict) and ("mapping" in data or "source" in data or "target" in data):
        load_mapping(path)  # a mapping with missing keys: let the model say which
    else:
        raise ConfigError("not a mapping (needs 'mapping:'), connectors ('sources:'/'sinks:') or test "
                          "('cases:') file", Location(str(path), 1, 1))


# -- map ------------------------------------------------------------------------------------


@app.command("map")
@handle_errors
def map_cmd(
    mapping: Annotated[Path, typer.Argument(help="The mapping file (with --version: or a route name)")],
    input: Annotated[str | None, typer.Argument(help="Record file (JSON or XML); - or none: stdin")] = None,
    content_type: Annotated[str | None, typer.Option("--content-type", "-t",
                                                     help="application/json or application/xml")] = None,
    config_dir: ConfigDir = None,
    bus: BusUrl = None,
    version: Annotated[str | None, typer.Option("--version", help="Map with this version from the route's "
                                                                 "history (number or hash prefix)")] = None,
    store: StoreUrl = None,  # issue 10: --version reads the history in the state store
) -> None:
    """Dry-run one mapping on one record and print the payload exactly as it would be sent."""
    from ..mapping.loader import load_mapping

    if version is not None:  # issue 10: a version from the history
        from ..changes.versioned import mapping_from_history
        from .common import _store

        compiled = mapping_from_history(_store(config_dir, bus, store), mapping, version,
                                        _settings(config_dir, bus, store).config_dir)
    else:
        compiled = load_mapping(mapping)
    data, name = _read_input(input)
    ctype = content_type or _sniff(data, name)
    result = compiled.map_bytes(data, ctype)
    if result.skipped:
        typer.echo("skipped: the record does not pass `when`", err=True)
        return
    out = sys.stdout.buffer
    many = len(result.outputs) > 1
    for output in result.outputs:
        if many:
            typer.echo(f"target {output.target.index}: sink {output.target.sink} ({output.target.format})",
                       err=True)
        out.write(output.body)
        if not output.body.endswith(b"\n"):
            out.write(b"\n")  # the output always ends with a newline (one per target)
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
    from ..mapping.testing import run_tests

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
    lang: Annotated[str, typer.Option("--lang", help="en or zh (headings and labels)")] = "en",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file")] = None,
) -> None:
    """Print the interface catalogue: systems, direction, fields, schedule, security, owner, version."""
    from ..mapping.catalog import catalog_for

    if format not in ("markdown", "md", "html"):
        raise SyncbusError(f"--format must be markdown or html, not {format!r}")
    if lang not in ("en", "zh"):
        raise SyncbusError(f"--lang must be en or zh, not {lang!r}")
    settings = _settings(config_dir)
    _write(catalog_for(settings.config_dir, "html" if format == "html" else "markdown", lang), output)


@app.command()
@handle_errors
def schema(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file")] = None,
    config_dir: ConfigDir = None,
    bus: BusUrl = None,
) -> None:
    """Print the JSON Schema of the mapping file format (for editors such as VS Code YAML)."""
    from ..mapping.spec import mapping_json_schema

    text = json.dumps(mapping_json_schema(), indent=2, ensure_ascii=False) + "\n"
    _write(text, output)
