"""``syncbus sync --full SOURCE``: a full load of a poll source, beside a running node or without one.

It runs as its own process on the same bus and state store as ``syncbus
run`` (the same ``--config-dir``/``--bus``/``--store`` resolution as every
command), publishes every record of a full snapshot through the same
publisher (ids, metrics, trace), and at the end moves the source's stored
cursor to the furthest of its own and the running node's -- never back. The
running node keeps polling meanwhile; a record both publish is a duplicate,
which the idempotency keys of the targets absorb (at-least-once).
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer

from ..errors import SyncbusError
from .common import BusUrl, ConfigDir, StoreUrl, _settings, _store, app, handle_errors


class NotAPollSource(SyncbusError):
    """``sync`` was given a source that cannot be polled (unknown, or a push source)."""


@app.command()
@handle_errors
def sync(
    source: Annotated[str, typer.Argument(help="The poll source to load")],
    full: Annotated[bool, typer.Option("--full", help="Load everything, ignoring the stored cursor")] = False,
    config_dir: ConfigDir = None,
    bus: BusUrl = None,
    store: StoreUrl = None,
) -> None:
    """Run a full load of a poll source (initial load, backfill) onto the bus; the node keeps running."""
    import difflib

    from ..config import load_connectors
    from ..sources.base import PollSource
    from ..supervisor import build_source

    if not full:
        raise SyncbusError("say --full: `syncbus sync --full SOURCE` (incremental polls are the running node's)")
    settings = _settings(config_dir, bus, store)
    connectors = load_connectors(settings.config_dir, strict=False, strict_for={source})
    component = connectors.sources.get(source)
    polls = sorted(n for n, c in connectors.sources.items() if c.spec is not None
                   and isinstance(c.spec.factory, type) and issubclass(c.spec.factory, PollSource))
    if component is None:
        close = difflib.get_close_matches(source, polls, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise NotAPollSource(f"no poll source named {source!r} ({hint}poll sources: {', '.join(polls) or 'none'})")
    if source not in polls:
        raise NotAPollSource(f"source {source!r} is a {component.type} source: records are pushed to it, "
                             "there is nothing to load")
    state = _store(config_dir, bus, store)
    if not callable(getattr(state, "merge_checkpoint", None)):
        raise SyncbusError("the state store keeps no checkpoints (CheckpointStore is not part of it)")
    result = asyncio.run(_full_load(build_source(component), settings.bus_url, state))
    typer.echo(f"{source}: {result.records} records in {result.pages} pages onto {component.config.topic}; "
               f"cursor now {json.dumps(result.cursor, ensure_ascii=False, default=str)}")


async def _full_load(source: Any, bus_url: str, state: Any) -> Any:
    from ..bus import open_bus
    from ..metrics import Metrics
    from ..sources.poller import PollRunner
    from ..sources.publisher import Publisher
    from ..tracing import TraceRecorder

    bus = open_bus(bus_url)
    metrics = Metrics()
    trace = TraceRecorder(state)
    runner = PollRunner(source, Publisher(bus, metrics, trace), state, metrics)
    await bus.start()
    try:
        await bus.ensure_topics([source.topic])
        await trace.start()
        try:
            return await runner.run_full()
        finally:
            await runner.stop()
            await trace.stop()
    finally:
        await bus.stop()
        state.close()
