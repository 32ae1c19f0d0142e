"""The embedded bus's write transaction: everything queued since the last one, committed at once.

Split out of :mod:`syncbus.bus.embedded` (its docstring has the design): the
queued operations (a publish, a ``publish_once`` with its idempotency claim,
an offset commit) and the one function the writer thread runs per group
commit. The queueing and the futures stay with :class:`EmbeddedBus`; this
module is what runs on the SQLite side and knows nothing of the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import IdempotencyConflict
from ..state import crypto  # issue 12: values sealed with SYNCBUS_ENCRYPT_BUS; reading always opens
from .base import Published
from .embedded_sqlite import PARTITION


@dataclass(slots=True)
class _Publish:
    topic: str
    key: str | None
    value: bytes
    headers: dict[str, str]
    ts: float
    future: asyncio.Future[Any]
    # (scope, key, fingerprint, record id) for publish_once: claim and append in one transaction
    once: tuple[str, str, str, str] | None = None


@dataclass(slots=True)
class _Commit:
    group: str
    offsets: dict[tuple[str, int], int]
    future: asyncio.Future[Any]
    # Workers sharing a group (EmbeddedBus.share): (the group, every worker's share group). The group's
    # row then moves to the lowest of the shares' rows -- once every share has one.
    derive: tuple[str, tuple[str, ...]] | None = None


_Op = _Publish | _Commit


def _earlier_claim(conn: sqlite3.Connection, claims: dict[tuple[str, str], Published], op: _Publish,
                   ) -> Published | IdempotencyConflict | None:
    """The record an earlier publish_once of the same (scope, key) made, or a conflict, or None."""
    assert op.once is not None
    scope, key, fingerprint, _rid = op.once
    found = claims.get((scope, key))
    if found is None:
        row = conn.execute('SELECT record_id, fingerprint, topic, "offset" FROM idempotency '
                           'WHERE scope=? AND key=?', (scope, key)).fetchone()
        if row is None:
            return None
        found = Published(row[0], row[2], PARTITION, row[3], duplicate=True, fingerprint=row[1])
    if found.fingerprint != fingerprint:
        return IdempotencyConflict(scope, key)
    return Published(found.record_id, found.topic, found.partition, found.offset, duplicate=True,
                     fingerprint=found.fingerprint)


def _write_batch(conn: sqlite3.Connection, ops: list[_Op]) -> list[Any]:
    """One transaction for everything queued; returns each op's result.

    A publish gets its offset; a publish_once its :class:`Published` (or the
    conflict to raise); a commit -1.
    """
    seal = crypto.codec().seal_bus  # issue 12
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Read the high-water marks inside the write transaction: another process
        # may have appended since our last batch.
        next_off: dict[str, int] = {}
        results: list[Any] = []
        rows: list[tuple[Any, ...]] = []
        claims: dict[tuple[str, str], Published] = {}
        commits: list[tuple[str, str, int, int]] = []
        derived: list[tuple[str, tuple[str, ...], str, int]] = []
        for op in ops:
            if isinstance(op, _Publish):
                if op.once is not None:
                    earlier = _earlier_claim(conn, claims, op)
                    if earlier is not None:
                        results.append(earlier)
                        continue
                off = next_off.get(op.topic)
                if off is None:
                    row = conn.execute('SELECT next_offset FROM topics WHERE topic=? AND "partition"=?',
                                       (op.topic, PARTITION)).fetchone()
                    off = row[0] if row else 0
                next_off[op.topic] = off + 1
                rows.append((op.topic, PARTITION, off, op.key, seal(op.value),  # issue 12
                             orjson.dumps(op.headers), op.ts))
                if op.once is None:
                    results.append(off)
                else:
                    scope, key, fingerprint, rid = op.once
                    claims[(scope, key)] = Published(rid, op.topic, PARTITION, off, duplicate=False,
                                                     fingerprint=fingerprint)
                    conn.execute('INSERT INTO idempotency (scope, key, record_id, fingerprint, topic, "offset", '
                                 'created) VALUES (?, ?, ?, ?, ?, ?, ?)', (scope, key, rid, fingerprint, op.topic,
                                                                          off, op.ts))
                    results.append(claims[(scope, key)])
            else:
                commits.extend((op.group, t, p, o) for (t, p), o in op.offsets.items())
                if op.derive is not None:
                    derived.extend((op.derive[0], op.derive[1], t, p) for t, p in op.offsets)
                results.append(-1)
        if rows:
            conn.executemany('INSERT INTO log (topic, "partition", "offset", key, value, headers, ts) '
                             'VALUES (?, ?, ?, ?, ?, ?, ?)', rows)
            conn.executemany('INSERT INTO topics (topic, "partition", next_offset) VALUES (?, ?, ?) '
                             'ON CONFLICT (topic, "partition") '
                             'DO UPDATE SET next_offset=excluded.next_offset',
                             [(t, PARTITION, o) for t, o in next_off.items()])
        if commits:
            # MAX: a commit never moves a group backwards (e.g. a late commit from a
            # consumer that lost ownership); resetting a group is a deliberate UPDATE.
            conn.executemany('INSERT INTO offsets ("group", topic, "partition", next_offset) '
                             'VALUES (?, ?, ?, ?) ON CONFLICT ("group", topic, "partition") '
                             'DO UPDATE SET next_offset=MAX(next_offset, excluded.next_offset)', commits)
        for group, shares, topic, part in derived:
            marks = ",".join("?" * len(shares))
            conn.execute('INSERT INTO offsets ("group", topic, "partition", next_offset) '
                         'SELECT ?, ?, ?, MIN(next_offset) FROM offsets '
                         f'WHERE topic=? AND "partition"=? AND "group" IN ({marks}) HAVING COUNT(*)=? '
                         'ON CONFLICT ("group", topic, "partition") '
                         'DO UPDATE SET next_offset=MAX(next_offset, excluded.next_offset)',
                         (group, topic, part, topic, part, *shares, len(shares)))
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return results
