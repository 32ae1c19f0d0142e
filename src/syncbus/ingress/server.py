"""The HTTP server ``syncbus run`` starts: uvicorn with the hardened protocol (DESIGN §7, issue 6).

The runtime wires bus, store, sinks and router; how they are exposed over
HTTP (the listening socket, the protocol and its limits, the file-descriptor
budget, the start-up banner) is this module's concern, so runtime.py imports
nothing from here.

Limits come from ``SYNCBUS_HTTP_*`` environment variables (README, "HTTP
limits"); at start the soft RLIMIT_NOFILE is raised to the hard limit and the
connection limit is kept below it, so a flood gets 503s instead of EMFILE
(which failed every other request, sinks and store included).

Security (issue 12): HTTPS and client certificates (``TlsOptions``), and the
security settings of ``security/context.py`` and the data keys of
``state/crypto.py``, all checked before the socket listens; the app runs
inside ``security/asgi.py``'s layer (real client address, masked answers).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import resource
import socket
from collections.abc import Callable, Mapping
from typing import Any

import uvicorn

from .. import memory  # issue 11
from ..errors import SyncbusError
from ..reload import hot_reload  # issue 9
from ..state import crypto
from ..units import parse_duration, parse_size
from .connection import GuardedConfig, HttpLimits
from .errors import error_response
from .security.asgi import SecurityLayer
from .security.context import build_context
from .security.tls import TlsOptions

log = logging.getLogger(__name__)

ENV_PREFIX = "SYNCBUS_HTTP_"
# Environment variable (after the prefix) → (field of HttpLimits, parser).
_SETTINGS: dict[str, tuple[str, Callable[[str], float]]] = {
    "MAX_HEADER_BYTES": ("max_header_bytes", parse_size),
    "MAX_HEADERS": ("max_headers", int),
    "HEADER_TIMEOUT": ("header_timeout", parse_duration),
    "BODY_TIMEOUT": ("body_timeout", parse_duration),
    "KEEP_ALIVE_TIMEOUT": ("keep_alive_timeout", parse_duration),
    "KEEP_ALIVE_REQUESTS": ("keep_alive_requests", int),
    "MAX_CONNECTIONS": ("max_connections", int),
    "BACKLOG": ("backlog", int),
}
# Descriptors kept free of HTTP connections: store, bus, sink connection pools, dropped files, logs.
FD_RESERVE = 512

OnReady = Callable[[str, int], None]


class ServerError(SyncbusError):
    """The HTTP server cannot start as configured (bad limit setting, address in use)."""


def limits_from_env(env: Mapping[str, str]) -> HttpLimits:
    """The limits, each overridable as ``SYNCBUS_HTTP_<NAME>`` (sizes like 32KiB, durations like 10s)."""
    limits = HttpLimits()
    changes: dict[str, Any] = {}
    for suffix, (name, parse) in _SETTINGS.items():
        raw = env.get(ENV_PREFIX + suffix)
        if raw is None or not raw.strip():
            continue
        try:
            value = parse(raw.strip())
        except ValueError:
            raise ServerError(f"{ENV_PREFIX}{suffix}={raw!r} is not a valid "
                              f"{'duration' if parse is parse_duration else 'number'}") from None
        if value <= 0:
            raise ServerError(f"{ENV_PREFIX}{suffix} must be greater than 0")
        changes[name] = type(getattr(limits, name))(value)
    return dataclasses.replace(limits, **changes)


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (idle connections are cheap; EMFILE is not). New soft."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else target
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-files limit from %d to %d: %s", soft, target, exc)
        return soft
    return target


def fit_to_fds(limits: HttpLimits, fd_limit: int) -> HttpLimits:
    """Keep the connection limit under the open-files limit, leaving the rest of the node its descriptors."""
    reserve = min(FD_RESERVE, fd_limit // 4)
    budget = max(16, fd_limit - reserve)
    if limits.max_connections <= budget:
        return limits
    log.warning("HTTP connection limit lowered from %d to %d to fit the open-files limit of %d",
                limits.max_connections, budget, fd_limit)
    return dataclasses.replace(limits, max_connections=budget)


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """Bind before the runtime starts: an address in use is one line and exit 1, with nothing started.

    ``reuse_port``: the workers of ``syncbus run --workers N`` each bind the
    port the parent checked (SO_REUSEPORT); the kernel spreads connections.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # issue 11: workers
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


# Objects a collection of the youngest generation waits for (CPython's default: 700).
GC_THRESHOLDS = (10_000, 10, 10)


def tune_gc() -> None:
    """Make the cyclic garbage collector fit a long-running node with many records in flight.

    With a thousand records in flight, their objects outlive the young
    generations, so CPython's default thresholds ran a full collection of the
    whole heap every second or so (~120 ms each: a fifth of the CPU, and the
    p99 latency). Freezing what exists after start-up (modules, compiled
    mappings, config models: never garbage) takes it out of every full
    collection, and a larger first threshold lets short-lived records die by
    reference counting before a collection looks at them. Measured on the
    ingress → HTTP route at 250 orders/s: p99 86 ms → 19 ms, +25 % records/s.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class GracefulServer(uvicorn.Server):
    """uvicorn's server, exiting 0 after a signalled drain and telling ``on_ready`` the bound address."""

    def __init__(self, config: uvicorn.Config, on_ready: OnReady | None = None) -> None:
        super().__init__(config)
        self.on_ready = on_ready

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        # uvicorn re-raises the signal after shutting down, so the process "dies of"
        # SIGTERM. A stop that drained and committed everything is a clean exit: 0.
        self._captured_signals.clear()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.on_ready is not None:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            self.on_ready(host, port)


def check_mtls_sources(runtime: Any, tls: TlsOptions | None) -> None:
    """A source with ``auth: {mtls: true}`` needs a server that asks for client certificates."""
    if tls is not None and tls.verifies_clients:
        return
    for name, component in runtime.project.connectors.sources.items():
        if getattr(getattr(component.config, "auth", None), "mtls", False):
            raise ServerError(f"source {name} requires client certificates (auth: {{mtls: true}}): start with "
                              "--tls-cert, --tls-key and --tls-client-ca")


def secured_app(runtime: Any, tls: TlsOptions | None = None) -> Any:
    """The app inside the security layer, every security setting checked (a bad one raises, naming it)."""
    from .app import create_app

    crypto.configure()  # SYNCBUS_DATA_KEYS / SYNCBUS_ENCRYPT_BUS: a bad key is a start-up error
    ctx = build_context(runtime)
    check_mtls_sources(runtime, tls)
    app = create_app(runtime, manage_lifecycle=False)

    async def _data_key_error(_request: Any, exc: Exception) -> Any:
        # The message names the key id and the setting, never key material: say it, not "internal error".
        return error_response(503, "data_key_unavailable", str(exc))

    app.add_exception_handler(crypto.CryptoError, _data_key_error)
    return SecurityLayer(app, ctx)


def serve(runtime: Any, host: str, port: int, log_level: str = "info", *, limits: HttpLimits | None = None,
          on_ready: OnReady | None = None, tls: TlsOptions | None = None, reuse_port: bool = False) -> None:
    """Run the HTTP server until SIGTERM/SIGINT, which stop intake first, then the runtime (graceful).

    ``on_ready(host, port)`` is called once the socket listens, with the real
    port (``port=0`` picks a free one). ``tls``: serve HTTPS (``security/tls.py``).
    ``reuse_port``: a worker of ``syncbus run --workers N`` (``workers.py``).
    """
    app = secured_app(runtime, tls)
    limits = fit_to_fds(limits or limits_from_env(os.environ), raise_fd_limit())
    # The TLS files are read (and refused with one line) before anything listens or starts.
    config = GuardedConfig(app, limits, tls=tls, log_level=log_level, access_log=False, lifespan="on",
                           timeout_graceful_shutdown=15, server_header=False)
    sock = bind(host, port, reuse_port=reuse_port)
    # The runtime starts before the HTTP server, not in its lifespan hook: a sink
    # that cannot start (missing table, bad folder) is then one line and exit 1,
    # not uvicorn's "Application startup failed" traceback.
    server = GracefulServer(config, on_ready)

    async def main() -> None:
        trimmer = asyncio.create_task(memory.trim_periodically(), name="syncbus-malloc-trim")  # issue 11
        await runtime.start()
        try:
            async with hot_reload(runtime):  # issue 9: config watcher + SIGHUP, uvicorn logs via logs.py
                await server.serve(sockets=[sock])
        finally:
            trimmer.cancel()
            await runtime.stop()

    memory.limit_arenas()  # issue 11: before the bus, store and trace threads start (memory.py)
    tune_gc()
    try:
        with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:  # uvloop when installed
            runner.run(main())
    finally:
        sock.close()
    log.info("syncbus stopped cleanly")
