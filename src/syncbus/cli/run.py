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
from .security import EncryptBus, TlsCert, TlsClientCa, TlsKey, TlsRequireClientCert, run_security  # issue 12

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
    log_format: Annotated[str, typer.Option("--log-format", envvar="SYNCBUS_LOG_FORMAT",  # issue 9: logs.py
                                            help="text, or json: one object per line")] = "text",
    no_trace: Annotated[bool, typer.Option("--no-trace", help="Do not record trace events")] = False,
    tls_cert: TlsCert = None, tls_key: TlsKey = None, tls_client_ca: TlsClientCa = None,  # issue 12
    tls_require_client_cert: TlsRequireClientCert = False, encrypt_bus: EncryptBus = False,  # issue 12
    workers: Annotated[int | None, typer.Option(  # issue 11: workers.py
        "--workers", envvar="SYNCBUS_WORKERS", min=1,
        help="Processes sharing the port and the routes' work (default: the number of cores on the embedded "
             "bus; 1 on Kafka, where every worker joining or leaving rebalances the routes' groups)")] = None,
) -> None:
    """Run connectors, routes and the HTTP server until SIGTERM/SIGINT."""
    import os
    import sys

    from ..workers import WorkerIdentity, default_workers, prepare_worker, run_parent  # issue 11

    worker = WorkerIdentity.from_env(os.environ)  # issue 11: set by the parent of `--workers N`
    parent_settings = _settings(config_dir, bus, store)
    if workers is None:
        # On Kafka each worker is a group member: a rebalance at every start, stop and reload hands records in
        # flight to another member, which delivers them again (deduplicated by targets, but ours). Opt in there.
        workers = default_workers() if parent_settings.bus_url.startswith("embedded") else 1
    if worker is None and workers > 1:
        raise typer.Exit(run_parent(sys.argv[1:], workers, host or parent_settings.host,
                                    parent_settings.port if port is None else port, log_format))
    if worker is not None:
        prepare_worker(os.environ)
        port = worker.port if worker.port is not None else port
    from ..config import Settings
    from ..ingress.server import serve
    from ..logs import banner_line  # issue 9
    from ..logs import configure as configure_logging  # issue 9: text or JSON, masked (SYNCBUS_LOG_MASK)
    from ..project import load_project
    from ..router import RouterOptions
    from ..runtime import Runtime

    configure_logging(log_format, log_level)  # also keeps httpx, httpcore and aiokafka at WARNING
    tls = run_security(tls_cert, tls_key, tls_client_ca, tls_require_client_cert, encrypt_bus)  # issue 12
    settings = _settings(config_dir, bus, store)
    # `--port 0` (any free port) is a port too: only None falls back to SYNCBUS_PORT / 8080.
    settings = Settings(settings.config_dir, settings.bus_url, settings.store_url,
                        settings.port if port is None else port, host or settings.host)
    project = load_project(settings.config_dir)
    runtime = Runtime(settings, project, options=RouterOptions(max_in_flight=max_in_flight),
                      trace=not no_trace)
    share = getattr(runtime.bus, "share", None)  # issue 11: the embedded bus splits by key among workers
    if worker is not None and callable(share):
        share(worker.index, worker.count)

    def banner(bound_host: str, bound_port: int) -> None:
        # Printed once the socket listens, with the port actually bound: scripts wait for this line.
        line = banner_line(f"syncbus: {len(project.mappings)} routes, bus {settings.bus_url}, "  # issue 9: json
                           f"{'https' if tls else 'http'}://{bound_host}:{bound_port}", log_format)  # issue 12
        if worker is not None:
            worker.announce(line)  # issue 11: the parent prints worker 0's line once every worker listens
        else:
            typer.echo(line, err=True)

    serve(runtime, settings.host, settings.port, log_level.lower(), on_ready=banner, tls=tls,
          reuse_port=worker is not None)  # issue 11: workers share the port
