"""``syncbus keys rotate``: re-seal every stored payload with the current data key.

Rotation is: put a new key FIRST in ``SYNCBUS_DATA_KEYS`` (keeping the old one), restart the
nodes (new values are sealed with it), run this (old values are re-sealed), then remove the
old key. Values written before encryption was turned on are sealed here too, so after one
run nothing in the store is readable without a key.

It runs beside live nodes: rows are re-sealed in small transactions, and a dead letter is
only replaced if its value is still the one that was read (compare-and-set), so an edit
made meanwhile is never overwritten. Audit and trace rows are append-only; shadow samples
(``shadow report --examples``) are deleted and re-inserted under a new ``seq``, never changed
in place, so a row updated by its ``seq`` still holds what was read. In the embedded bus,
sealed records are re-sealed, and plaintext ones sealed only with ``--encrypt-bus``.

Every sealed column of the store is here: ``dead_letters.value``, ``dlq_audit.details``
(edits), ``trace_events.detail`` and ``shadow_samples.detail``. A column sealed anywhere
else must be added to :func:`rotate_store`, or removing the old key makes it unreadable.
"""

from __future__ import annotations

import base64
import binascii
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from .crypto import JSON_TAG, Codec, CryptoError
from .db import Database
from .tables import dead_letters, dlq_audit, trace_events
from .versions import shadow_samples

BATCH = 500


@dataclass
class RotationReport:
    """Rows re-sealed per table, and rows that already had the current key."""

    resealed: dict[str, int] = field(default_factory=dict)
    current: dict[str, int] = field(default_factory=dict)

    def add(self, table: str, resealed: int, current: int) -> None:
        self.resealed[table] = self.resealed.get(table, 0) + resealed
        self.current[table] = self.current.get(table, 0) + current

    def to_json(self) -> dict[str, Any]:
        return {"resealed": self.resealed, "already_current": self.current}


def _json_kid(codec: Codec, value: Any) -> str | None:
    """The key id of a sealed JSON column value; None for a plaintext one."""
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get(JSON_TAG), str):
        try:
            return codec.kid_of(base64.b64decode(value[JSON_TAG], validate=True)) or "?"
        except (binascii.Error, ValueError):
            return "?"
    return None


def _rotate_dead_letters(db: Database, codec: Codec, current: str, report: RotationReport) -> None:
    """The payload and the error (which may quote it) of every letter, compare-and-set against both."""
    last = ""
    while True:
        with db._tx() as conn:
            rows = conn.execute(select(dead_letters.c.id, dead_letters.c.value, dead_letters.c.error)
                                .where(dead_letters.c.id > last).order_by(dead_letters.c.id).limit(BATCH)).all()
        if not rows:
            return
        last = rows[-1].id
        changes = [(r.id, bytes(r.value), r.error) for r in rows
                   if codec.kid_of(bytes(r.value)) != current
                   or (r.error is not None and codec.text_kid(r.error) != current)]
        with db._tx(write=True) as conn:
            for dl_id, old, old_error in changes:
                same_error = dead_letters.c.error.is_(None) if old_error is None else dead_letters.c.error == old_error
                conn.execute(update(dead_letters).where(dead_letters.c.id == dl_id, dead_letters.c.value == old,
                                                        same_error)
                             .values(value=codec.seal(codec.open(old)),
                                     error=codec.seal_text(codec.open_text(old_error))))
        report.add("dead_letters", len(changes), len(rows) - len(changes))


def _rotate_json(db: Database, codec: Codec, current: str, report: RotationReport, table: Any, column: str,
                 wanted: Callable[[Any], bool]) -> None:
    """Re-seal a JSON column (plaintext rows chosen by ``wanted``), by ``seq`` in batches.

    The table's rows must never change in place (append-only, or replaced under a new
    ``seq``): the update matches the ``seq`` only -- JSON columns have no equality on
    PostgreSQL to compare-and-set with. A row deleted meanwhile is not counted.
    """
    col = table.c[column]
    last = 0
    while True:
        with db._tx() as conn:
            rows = conn.execute(select(table.c.seq, col, *([table.c.action] if "action" in table.c else []))
                                .where(table.c.seq > last).order_by(table.c.seq).limit(BATCH)).all()
        if not rows:
            return
        last = rows[-1].seq
        changes = []
        for row in rows:
            value = row._mapping[column]
            kid = _json_kid(codec, value)
            if kid == current or (kid is None and not wanted(row)):
                continue
            changes.append((row.seq, codec.seal_json(codec.open_json(value))))
        resealed = 0
        with db._tx(write=True) as conn:
            for seq, sealed in changes:
                resealed += conn.execute(update(table).where(table.c.seq == seq).values({column: sealed})).rowcount
        report.add(table.name, resealed, len(rows) - len(changes))


def rotate_store(store_url: str, codec: Codec) -> RotationReport:
    """Re-seal dead letters, the payloads in their audit (edits), trace details and shadow samples."""
    if codec.keyring is None:
        raise CryptoError("syncbus keys rotate needs SYNCBUS_DATA_KEYS (the first key is the one to seal with)")
    current = codec.keyring.current
    report = RotationReport()
    db = Database(store_url)
    try:
        _rotate_dead_letters(db, codec, current, report)
        _rotate_json(db, codec, current, report, dlq_audit, "details", lambda row: row.action == "edit")
        _rotate_json(db, codec, current, report, trace_events, "detail", lambda row: True)
        _rotate_json(db, codec, current, report, shadow_samples, "detail", lambda row: True)
    finally:
        db.close()
    return report


def rotate_bus(path: Path, codec: Codec, report: RotationReport, *, seal_plaintext: bool) -> None:
    """Re-seal the embedded bus's sealed records (and, with ``seal_plaintext``, its plaintext ones)."""
    if codec.keyring is None:
        raise CryptoError("syncbus keys rotate needs SYNCBUS_DATA_KEYS")
    current = codec.keyring.current
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=30000")
        last = 0
        while True:
            rows = conn.execute("SELECT rowid, value FROM log WHERE rowid > ? ORDER BY rowid LIMIT ?",
                                (last, BATCH)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            changes = []
            for rowid, value in rows:
                kid = codec.kid_of(bytes(value))
                if kid == current or (kid is None and not seal_plaintext):
                    continue
                changes.append((codec.seal(codec.open(bytes(value))), rowid, bytes(value)))
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("UPDATE log SET value=? WHERE rowid=? AND value=?", changes)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            report.add("bus", len(changes), len(rows) - len(changes))
    finally:
        conn.close()
