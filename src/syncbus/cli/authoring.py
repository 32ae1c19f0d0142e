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
    """Check mapping and connector files; print file:line:col: message per problem, exit 1 if any."""
    from ..project import load_project

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
    elif isinstance(data, dict) and "cases" in data:
        from pydantic import ValidationError

        from ..mapping.testing import TestFile
        from ..yamlfile import validation_errors

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
    from ..mapping.loader import load_mapping

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
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file")] = None,
) -> None:
    """Print the interface catalogue: systems, direction, fields, schedule, security, owner, version."""
    from ..mapping.catalog import build_catalog, render_html, render_markdown
    from ..project import load_project

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
    from ..mapping.spec import mapping_json_schema

    text = json.dumps(mapping_json_schema(), indent=2, ensure_ascii=False) + "\n"
    _write(text, output)
