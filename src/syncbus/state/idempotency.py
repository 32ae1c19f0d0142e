"""Ingress idempotency keys that cannot lose a record.

A claim is ``pending`` until the bus acknowledged the record, then
``confirmed``. A retry that finds an unconfirmed claim publishes again under
the SAME record id (targets drop the duplicate by idempotency key) instead of
answering "duplicate" for a record that may never have reached the bus -- the
hole a crash between claim and publish used to leave. The same key with a
different body is refused (IETF Idempotency-Key draft: 422).

On the embedded bus claim and publish are one SQLite transaction instead (see
``bus/embedded.py``); this table serves buses that cannot do that (Kafka).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import IdempotencyConflict, IdempotencyInProgress
from .db import Database, StoreError
from .models import as_utc, utcnow
from .tables import idempotency_keys


@dataclass(frozen=True, slots=True)
class Claim:
    """What a claim attempt found: ``new`` (ours, publish it), or the earlier claim's record id."""

    record_id: str
    new: bool           # we made the claim: publish
    confirmed: bool     # an earlier claim whose record is known to be on the bus
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


class IdempotencyStore(Database):
    """The idempotency part of the state store."""

    def idempotency_claim(self, source: str, key: str, record_id: str, fingerprint: str = "",
                          in_progress_for: float = 10.0) -> Claim:
        """Claim ``(source, key)`` for ``record_id``, or report the earlier claim.

        An unconfirmed claim younger than ``in_progress_for`` seconds belongs to a
        request still publishing: :class:`IdempotencyInProgress` (HTTP 409). An
        older one was left by a crash: it is taken over (``new=True``) with the
        ORIGINAL record id, so the retry publishes the same record.
        """
        now = utcnow()
        for _ in range(3):
            try:
                with self._tx(write=True) as conn:
                    row = conn.execute(self._lock(select(idempotency_keys).where(
                        idempotency_keys.c.source == source, idempotency_keys.c.key == key))).first()
                    if row is None:
                        conn.execute(insert(idempotency_keys).values(
                            source=source, key=key, record_id=record_id, fingerprint=fingerprint,
                            status="pending", created_at=now))
                        return Claim(record_id, new=True, confirmed=False)
                    if row.fingerprint and fingerprint and row.fingerprint != fingerprint:
                        raise IdempotencyConflict(source, key)
                    if row.status == "confirmed":
                        return Claim(str(row.record_id), new=False, confirmed=True, topic=row.topic,
                                     partition=row.partition, offset=row.offset)
                    if as_utc(row.created_at) > now - timedelta(seconds=in_progress_for):
                        raise IdempotencyInProgress(source, key)
                    conn.execute(update(idempotency_keys).where(
                        idempotency_keys.c.source == source, idempotency_keys.c.key == key).values(created_at=now))
                    return Claim(str(row.record_id), new=True, confirmed=False)
            except StoreError as e:
                if not isinstance(e.__cause__, IntegrityError):
                    raise
        raise StoreError(f"idempotency key {key!r} of source {source!r}: could not be claimed")

    def idempotency_confirm(self, source: str, key: str, record_id: str, topic: str, partition: int,
                            offset: int) -> None:
        """The record is on the bus: a repeat of the key is now a plain duplicate."""
        with self._tx(write=True) as conn:
            conn.execute(update(idempotency_keys).where(
                idempotency_keys.c.source == source, idempotency_keys.c.key == key,
                idempotency_keys.c.record_id == record_id).values(
                status="confirmed", topic=topic, partition=partition, offset=offset))

    def idempotency_abandon(self, source: str, key: str, record_id: str) -> None:
        """The publish failed but may still land (a Kafka timeout): let the client's retry take over at once.

        The retry then publishes under the same record id, so if the first
        attempt did land after all, targets drop the second by idempotency key.
        """
        with self._tx(write=True) as conn:
            conn.execute(update(idempotency_keys).where(
                idempotency_keys.c.source == source, idempotency_keys.c.key == key,
                idempotency_keys.c.record_id == record_id, idempotency_keys.c.status == "pending").values(
                created_at=datetime(2000, 1, 1, tzinfo=UTC)))

    def idempotency_release(self, source: str, key: str, record_id: str) -> bool:
        """Undo our pending claim (the publish failed for sure; the client may retry). Never someone else's."""
        with self._tx(write=True) as conn:
            result = conn.execute(delete(idempotency_keys).where(
                idempotency_keys.c.source == source, idempotency_keys.c.key == key,
                idempotency_keys.c.record_id == record_id, idempotency_keys.c.status == "pending"))
            return result.rowcount > 0

    def unconfirmed_claims(self, older_than: datetime) -> list[tuple[str, str, str]]:
        """(source, key, record id) of claims never confirmed: records that may not be on the bus."""
        with self._tx() as conn:
            return [(r.source, r.key, r.record_id) for r in conn.execute(select(idempotency_keys).where(
                idempotency_keys.c.status == "pending", idempotency_keys.c.created_at < as_utc(older_than)))]

    def purge_idempotency(self, before: datetime) -> int:
        """Retention: forget keys claimed before ``before``; returns how many."""
        with self._tx(write=True) as conn:
            return int(conn.execute(delete(idempotency_keys).where(
                idempotency_keys.c.created_at < as_utc(before))).rowcount)
