"""``syncbus run``: connectors, routes and the HTTP server."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import (
    BusUrl,
    ConfigDir,
    StoreUrl,
    _settings,
    app,
    handle_errors,
)

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

    from ..project import load_project
    from ..router import RouterOptions
    from ..runtime import Runtime, serve

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("httpx", "httpcore", "aiokafka"):  # one line per request/metadata refresh
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))
    settings = _settings(config_dir, bus, store)
    from ..config import Settings

    settings = Settings(settings.config_dir, settings.bus_url, settings.store_url,
                        port or settings.port, host or settings.host)
    project = load_project(settings.config_dir)
    runtime = Runtime(settings, project, options=RouterOptions(max_in_flight=max_in_flight),
                      trace=not no_trace)
    typer.echo(f"syncbus: {len(project.mappings)} routes, bus {settings.bus_url}, "
               f"http://{settings.host}:{settings.port}", err=True)
    serve(runtime, settings.host, settings.port, log_level.lower())
