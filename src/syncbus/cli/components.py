"""``syncbus plugins`` and ``syncbus docs``: what types are installed, and their reference.

Both read the component registry, so what they print is exactly what
``syncbus validate`` accepts -- plugins included, and broken plugins listed
with the reason instead of silently missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import SyncbusError
from .common import ConfigDir, _print_json, _write, app, handle_errors

KIND_NAMES = {"source": "source", "sources": "source", "sink": "sink", "sinks": "sink", "codec": "codec",
              "codecs": "codec", "transform": "transform", "transforms": "transform"}
HEADINGS = {"source": "sources", "sink": "sinks", "codec": "codecs", "transform": "transforms"}

KindOption = Annotated[str | None, typer.Option("--kind", help="source, sink, codec or transform")]


def _kind(value: str | None) -> Any:
    if value is None:
        return None
    kind = KIND_NAMES.get(value.strip().lower())
    if kind is None:
        raise SyncbusError(f"--kind must be source, sink, codec or transform, not {value!r}")
    return kind


def _wrap(text: str, width: int = 100) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command()
@handle_errors
def plugins(
    kind: KindOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
    config_dir: ConfigDir = None,
) -> None:
    """List every source, sink, codec and transform type with its options (plugins included)."""
    from ..components.registry import registry

    reg = registry()
    wanted = _kind(kind)
    specs = reg.specs(wanted)
    broken = reg.broken(wanted)
    if as_json:
        _print_json({"types": [s.to_json() for s in specs], "broken": [b.to_json() for b in broken]})
        return
    lines: list[str] = []
    current = None
    for spec in specs:
        if spec.kind != current:
            current = spec.kind
            lines.append(("\n" if lines else "") + HEADINGS[spec.kind])
        flags = [f for f in (spec.status if spec.status != "stable" else "",
                             "" if spec.origin in ("builtin", "registered") else f"plugin {spec.origin}") if f]
        label = spec.signature or spec.name
        lines.append(f"  {label}{' [' + ', '.join(flags) + ']' if flags else ''}: {_wrap(spec.summary)}")
        for o in spec.options():
            if o.name in ("name", "type"):
                continue
            extra = ["required" if o.required else (f"default {o.default_text()}" if o.default_text() else "")]
            if o.secret:
                extra.append("secret: env only")
            detail = ", ".join(e for e in [o.type, *extra] if e)
            lines.append(f"      {o.name} ({detail}){': ' + _wrap(o.description, 80) if o.description else ''}")
    if broken:
        lines.append("\nbroken plugins (not usable)")
        lines.extend(f"  {b.kind} {b.name}: {b.reason}" for b in broken)
    typer.echo("\n".join(lines))


@app.command()
@handle_errors
def docs(
    type_name: Annotated[str | None, typer.Argument(metavar="[TYPE]",
                                                    help="One type (e.g. sql_poll, or sink/kafka); all when omitted")]
    = None,
    kind: KindOption = None,
    format: Annotated[str, typer.Option("--format", help="markdown, json or jsonschema")] = "markdown",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file")] = None,
    config_dir: ConfigDir = None,
) -> None:
    """The reference of every type -- options, defaults, secrets, examples, status -- from the specs."""
    from ..components.docs import render_json, render_markdown
    from ..components.registry import registry
    from ..components.schema import connectors_schema, render
    from ..components.spec import KINDS, Kind

    if format not in ("markdown", "md", "json", "jsonschema"):
        raise SyncbusError(f"--format must be markdown, json or jsonschema, not {format!r}")
    reg = registry()
    wanted = _kind(kind)
    if type_name and "/" in type_name:
        prefix, _, type_name = type_name.partition("/")
        wanted = _kind(prefix)
    specs = reg.specs(wanted)
    if type_name:
        specs = [s for s in specs if s.name == type_name]
        if not specs:
            kinds: tuple[Kind, ...] = (wanted,) if wanted else KINDS
            broken = [b for k in kinds if (b := reg.find_broken(k, type_name)) is not None]
            if broken:
                raise broken[0].error()
            names = sorted({n for k in kinds for n in reg.known(k)})
            close = [s for k in kinds if (s := reg.suggest(k, type_name))]
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise SyncbusError(f"no type named {type_name!r} ({hint}known: {', '.join(names)})")
    if format == "jsonschema":
        text = render(connectors_schema(specs))
    elif format == "json":
        text = render_json(specs)
    else:
        text = render_markdown(specs, title=not type_name)
    _write(text, output)
