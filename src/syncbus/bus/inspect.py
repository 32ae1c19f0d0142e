"""Reading a bus from the outside, for ``syncbus ledger``: which records it holds, where each group stands.

Both buses answer the same two questions without joining a consumer group
(so an operator's ledger run never disturbs the running routes): the records
published to some topics in a time window, and the committed offsets of some
consumer groups.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..errors import BusError
from ..record import H_ID, H_RECEIVED_AT, H_REPLAY_ROUTE, H_SOURCE
from .base import parse_bus_url
from .kafka_security import ClientSecurity, connect_error, from_url_options


@dataclass(frozen=True, slots=True)
class BusEntry:
    """One record as the bus holds it (the value is not needed to account for it)."""

    record_id: str
    topic: str
    partition: int
    offset: int
    source: str | None
    received_at: float
    replay_route: str | None   # set on replays: the copy of a record, not a new one


GroupOffsets = dict[tuple[str, str, int], int]   # (group, topic, partition) -> next offset to read


def _entry(topic: str, partition: int, offset: int, headers: dict[str, str], ts: float) -> BusEntry:
    rid = headers.get(H_ID) or f"{topic}-{partition}-{offset}"
    try:
        received = float(headers.get(H_RECEIVED_AT) or ts)
    except ValueError:
        received = ts
    return BusEntry(rid, topic, partition, offset, headers.get(H_SOURCE), received, headers.get(H_REPLAY_ROUTE))


async def read_entries(bus_url: str, topics: Sequence[str], since: float, until: float) -> list[BusEntry]:
    """Records published to ``topics`` with a bus timestamp in [since, until) (epoch seconds)."""
    scheme, target = parse_bus_url(bus_url)
    if scheme == "embedded":
        return await asyncio.to_thread(_embedded_entries, target, list(topics), since, until)
    return await _kafka_entries(*_brokers(target), list(topics), since, until)


async def read_group_offsets(bus_url: str, groups: dict[str, Sequence[str]]) -> GroupOffsets:
    """Committed offsets of each group for its topics (absent: nothing committed yet)."""
    scheme, target = parse_bus_url(bus_url)
    if scheme == "embedded":
        return await asyncio.to_thread(_embedded_offsets, target, groups)
    return await _kafka_offsets(*_brokers(target), groups)


def _brokers(target: str) -> tuple[str, ClientSecurity]:
    """``host:port[,host:port]`` and the TLS/SASL settings of the bus URL's options."""
    from .kafka import split_bootstrap

    bootstrap, options = split_bootstrap(target)
    return bootstrap, from_url_options(options, os.environ)


# -- embedded -------------------------------------------------------------------------


def _connect(path: str) -> sqlite3.Connection:
    if not Path(path).exists():
        raise BusError(f"embedded bus {path}: no such file (is --bus or --config-dir right?)")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def _embedded_entries(path: str, topics: list[str], since: float, until: float) -> list[BusEntry]:
    if not topics:
        return []
    try:
        with _connect(path) as conn:
            marks = ",".join("?" * len(topics))
            rows = conn.execute(f'SELECT topic, "partition", "offset", headers, ts FROM log WHERE topic IN ({marks}) '
                                'AND ts >= ? AND ts < ? ORDER BY topic, "partition", "offset"', (*topics, since, until))
            return [_entry(t, p, o, orjson.loads(h), ts) for t, p, o, h, ts in rows]
    except sqlite3.Error as e:
        raise BusError(f"embedded bus {path}: cannot read the log: {e}") from e


def _embedded_offsets(path: str, groups: dict[str, Sequence[str]]) -> GroupOffsets:
    out: GroupOffsets = {}
    try:
        with _connect(path) as conn:
            for group, topics in groups.items():
                for topic in topics:
                    for partition, off in conn.execute(
                            'SELECT "partition", next_offset FROM offsets WHERE "group"=? AND topic=?', (group, topic)):
                        out[(group, topic, partition)] = off
    except sqlite3.Error as e:
        raise BusError(f"embedded bus {path}: cannot read committed offsets: {e}") from e
    return out


# -- kafka ----------------------------------------------------------------------------


async def _kafka_entries(bootstrap: str, security: ClientSecurity, topics: list[str], since: float,
                         until: float) -> list[BusEntry]:
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    if not topics:
        return []
    # Without a group, subscribing assigns every partition of the topics to us: no group is joined.
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                client_id="syncbus-ledger", **security.kwargs)
    out: list[BusEntry] = []
    try:
        await consumer.start()
        deadline = asyncio.get_running_loop().time() + 10
        while not consumer.assignment() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        tps: list[TopicPartition] = sorted(consumer.assignment())
        if not tps:
            return []
        ends = await consumer.end_offsets(tps)
        starts = await consumer.offsets_for_times({tp: int(since * 1000) for tp in tps})
        remaining = {}
        for tp in tps:
            found = starts.get(tp)
            if found is None or found.offset >= ends[tp]:
                continue
            consumer.seek(tp, found.offset)
            remaining[tp] = ends[tp]
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=2000)
            if not batches:
                raise BusError(f"kafka bus {bootstrap}: reading {sorted({tp.topic for tp in remaining})} stalled")
            for tp, msgs in batches.items():
                for m in msgs:
                    ts = m.timestamp / 1000.0
                    if since <= ts < until:
                        headers = {k: (v or b"").decode("utf-8", "replace") for k, v in (m.headers or ())}
                        out.append(_entry(m.topic, m.partition, m.offset, headers, ts))
                    if m.offset + 1 >= remaining.get(tp, 0):
                        remaining.pop(tp, None)
    except KafkaError as err:
        raise await connect_error(bootstrap, security, err, f"cannot read {topics}") from err
    finally:
        await _stop_quietly(consumer)
    return out


async def _stop_quietly(consumer: Any) -> None:
    """aiokafka's group-less consumer re-raises the CancelledError of its own helper task on stop."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # we are being cancelled ourselves


async def _kafka_offsets(bootstrap: str, security: ClientSecurity, groups: dict[str, Sequence[str]]) -> GroupOffsets:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="syncbus-ledger", **security.kwargs)
    out: GroupOffsets = {}
    try:
        await admin.start()
        for group, topics in groups.items():
            wanted = set(topics)
            found = await admin.list_consumer_group_offsets(group)
            for tp, meta in found.items():
                if tp.topic in wanted and meta.offset >= 0:
                    out[(group, tp.topic, tp.partition)] = meta.offset
    except KafkaError as err:
        raise await connect_error(bootstrap, security, err, "cannot read committed offsets") from err
    finally:
        await admin.close()
    return out
