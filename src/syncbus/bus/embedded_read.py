"""The embedded bus's reads: records from a position on, a worker's share of them, marks and offsets.

Split out of :mod:`syncbus.bus.embedded` (its docstring has the design): the
functions the reader thread runs. Each takes the connection and returns plain
data; the consumer (``embedded_consumer``) and the bus decide when to call
them and first try the in-memory tail.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import orjson

from ..record import Record
from ..state import crypto  # issue 12: values sealed with SYNCBUS_ENCRYPT_BUS; reading always opens
from .embedded_sqlite import PARTITION


def _read_records(conn: sqlite3.Connection, positions: list[tuple[str, int]], limit: int) -> list[Record]:
    out: list[Record] = []
    for topic, pos in positions:
        if len(out) >= limit:
            break
        cur = conn.execute('SELECT "offset", key, value, headers, ts FROM log '
                           'WHERE topic=? AND "partition"=? AND "offset">=? ORDER BY "offset" LIMIT ?',
                           (topic, PARTITION, pos, limit - len(out)))
        for off, key, value, headers, ts in cur:
            out.append(Record(value=crypto.open(bytes(value)), key=key,  # issue 12
                              headers=orjson.loads(headers), topic=topic,
                              partition=PARTITION, offset=off, timestamp=ts))
    return out


def _read_share_records(conn: sqlite3.Connection, positions: list[tuple[str, int]], limit: int, index: int,
                        count: int) -> tuple[list[Record], dict[str, int], set[str]]:
    """``_read_records`` of one worker's share: (its records, per topic the position after what was
    scanned, the topics scanned to their end).

    The end is read first: every offset below it was committed when it was
    read, so the scan (a later snapshot) cannot miss one of them.
    """
    out: list[Record] = []
    scanned: dict[str, int] = {}
    at_end: set[str] = set()
    for topic, pos in positions:
        room = limit - len(out)
        if room <= 0:
            break
        row = conn.execute('SELECT next_offset FROM topics WHERE topic=? AND "partition"=?',
                           (topic, PARTITION)).fetchone()
        end = row[0] if row else 0
        if end <= pos:
            scanned[topic] = pos
            at_end.add(topic)
            continue
        rows = conn.execute('SELECT "offset", key, value, headers, ts FROM log '
                            'WHERE topic=? AND "partition"=? AND "offset">=? AND "offset"<? '
                            'AND syncbus_share(key, ?)=? ORDER BY "offset" LIMIT ?',
                            (topic, PARTITION, pos, end, count, index, room)).fetchall()
        for off, key, value, headers, ts in rows:
            out.append(Record(value=crypto.open(bytes(value)), key=key,  # issue 12
                              headers=orjson.loads(headers), topic=topic,
                              partition=PARTITION, offset=off, timestamp=ts))
        if len(rows) < room:
            scanned[topic] = end
            at_end.add(topic)
        else:
            scanned[topic] = rows[-1][0] + 1
    return out, scanned, at_end


def _read_high_water(conn: sqlite3.Connection, topics: Sequence[str] | None) -> dict[str, int]:
    if topics is None:
        rows = conn.execute('SELECT topic, next_offset FROM topics WHERE "partition"=?', (PARTITION,))
    else:
        marks = ",".join("?" * len(topics))
        rows = conn.execute('SELECT topic, next_offset FROM topics '
                            f'WHERE "partition"=? AND topic IN ({marks})', (PARTITION, *topics))
    return {t: o for t, o in rows}


def _read_committed(conn: sqlite3.Connection, group: str, topic: str) -> int:
    row = conn.execute('SELECT next_offset FROM offsets WHERE "group"=? AND topic=? AND "partition"=?',
                       (group, topic, PARTITION)).fetchone()
    return row[0] if row else 0
