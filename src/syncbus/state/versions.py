"""Change management in the state store: mapping version history, change audit, shadow results.

Issue 10. Every mapping file content a node ever ran is kept, keyed by its
SHA-256, so a rollback restores the exact bytes that ran (comments included)
and ``syncbus diff`` can parse any two of them. A content is identified by its
hash, not its version number: people edit a file without bumping ``version``
now and then, and two different contents must never be confused. Recording is
an upsert, so several nodes loading the same file record it once.

Shadow runs (``shadow_of:``) store one small row per compared record -- the
outcome and the differing paths -- so the report is exact and a record
redelivered after a crash is not counted twice; full examples (both outputs)
are kept only for the last ``keep`` differing records per shadow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, Integer, String, Table, Text, delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from . import crypto
from .db import Database, StoreError
from .models import as_utc, utcnow
from .tables import SEQ, UTCDateTime, metadata

mapping_versions = Table(
    "mapping_versions", metadata,
    Column("route", String(200), primary_key=True),
    Column("hash", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("path", Text, nullable=False),
    Column("content", Text, nullable=False),
    Column("changelog", JSON, nullable=False),        # the entry of this version: by, reason, approved_by, date
    Column("shadow_of", String(200)),
    Column("loaded_at", UTCDateTime, nullable=False),  # first loaded
    Column("last_loaded_at", UTCDateTime, nullable=False),
    Index("ix_mapping_versions_route_version", "route", "version"),
)

change_audit = Table(
    "change_audit", metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("route", String(200), nullable=False, index=True),
    Column("action", String(20), nullable=False),       # promote | rollback
    Column("actor", String(200), nullable=False),
    Column("approved_by", String(200)),
    Column("reason", Text, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("from_version", Integer),
    Column("to_version", Integer),
    Column("hash", String(64)),
    Column("details", JSON, nullable=False),
)

shadow_results = Table(
    "shadow_results", metadata,
    Column("shadow", String(200), primary_key=True),
    Column("record_id", String(200), primary_key=True),
    Column("shadow_version", Integer, primary_key=True),
    Column("live_version", Integer, primary_key=True),
    Column("live_route", String(200), nullable=False),
    Column("key", Text),
    Column("outcome", String(10), nullable=False),     # same | different
    Column("paths", JSON, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Index("ix_shadow_results_live_at", "live_route", "at"),
)

shadow_samples = Table(
    "shadow_samples", metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("shadow", String(200), nullable=False),
    Column("live_route", String(200), nullable=False),
    Column("shadow_version", Integer, nullable=False),
    Column("live_version", Integer, nullable=False),
    Column("record_id", String(200), nullable=False),
    Column("key", Text),
    Column("paths", JSON, nullable=False),
    Column("detail", JSON, nullable=False),             # sealed: both values per path, the input record
    Column("at", UTCDateTime, nullable=False),
    Index("ix_shadow_samples_shadow_seq", "shadow", "seq"),
)

OUTCOMES = ("same", "different")
MIN_HASH_PREFIX = 6


class VersionNotFound(StoreError):
    """No version of the route matches what was asked for (a number or a hash prefix)."""

    def __init__(self, route: str, ref: str, known: Sequence[int] = ()) -> None:
        self.route = route
        self.ref = ref
        listed = ", ".join(str(v) for v in sorted(set(known))) or "none recorded"
        super().__init__(f"route {route!r} has no version {ref!r} in its history (known: {listed})")


class AmbiguousVersion(StoreError):
    """A hash prefix matches more than one recorded content."""


@dataclass(frozen=True, slots=True)
class MappingVersion:
    """One content of one route's mapping file as a node loaded it."""

    route: str
    hash: str
    version: int
    path: str
    content: str
    changelog: dict[str, Any]
    shadow_of: str | None
    loaded_at: datetime
    last_loaded_at: datetime

    def to_json(self, with_content: bool = False) -> dict[str, Any]:
        out = {"route": self.route, "version": self.version, "hash": self.hash, "path": self.path,
               "loaded_at": self.loaded_at.isoformat(), "last_loaded_at": self.last_loaded_at.isoformat(),
               "by": self.changelog.get("by"), "reason": self.changelog.get("reason"),
               "approved_by": self.changelog.get("approved_by"), "date": self.changelog.get("date"),
               "shadow_of": self.shadow_of}
        if with_content:
            out["content"] = self.content
        return out


@dataclass(frozen=True, slots=True)
class ChangeAuditEntry:
    """Who promoted or rolled back what, approved by whom, when and why."""

    route: str
    action: str
    actor: str
    reason: str
    approved_by: str | None = None
    from_version: int | None = None
    to_version: int | None = None
    hash: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=utcnow)
    seq: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "route": self.route, "action": self.action, "actor": self.actor,
                "approved_by": self.approved_by, "reason": self.reason, "at": self.at.isoformat(),
                "from_version": self.from_version, "to_version": self.to_version, "hash": self.hash,
                "details": self.details}


@dataclass(frozen=True, slots=True)
class ShadowResult:
    """One record compared by a shadow: ``same`` or ``different`` (with the differing paths)."""

    shadow: str
    live_route: str
    shadow_version: int
    live_version: int
    record_id: str
    key: str | None
    outcome: str
    paths: tuple[str, ...] = ()
    detail: dict[str, Any] | None = None   # a differing record's values; kept only as a sample
    at: datetime = field(default_factory=utcnow)


def _upsert(store: Database, table: Any, keys: list[Any], update: list[str]) -> Any:
    ins: Any = (sqlite.insert if store.is_sqlite else postgresql.insert)(table)
    return ins.on_conflict_do_update(index_elements=keys, set_={c: getattr(ins.excluded, c) for c in update})


class VersionStore(Database):
    """Mapping version history, the change audit and shadow results (issue 10)."""

    # -- versions ------------------------------------------------------------------

    def record_version(self, v: MappingVersion) -> None:
        """Keep a loaded content; loading it again only moves ``last_loaded_at``."""
        row = {"route": v.route, "hash": v.hash, "version": v.version, "path": v.path, "content": v.content,
               "changelog": v.changelog, "shadow_of": v.shadow_of, "loaded_at": v.loaded_at,
               "last_loaded_at": v.last_loaded_at}
        stmt = _upsert(self, mapping_versions, [mapping_versions.c.route, mapping_versions.c.hash],
                       ["last_loaded_at", "path"])
        with self._tx(write=True) as conn:
            conn.execute(stmt, [row])

    def versions(self, route: str) -> list[MappingVersion]:
        """Every content of the route, first loaded first."""
        query = (select(mapping_versions).where(mapping_versions.c.route == route)
                 .order_by(mapping_versions.c.loaded_at, mapping_versions.c.version))
        with self._tx() as conn:
            return [_version(r) for r in conn.execute(query)]

    def version_of(self, route: str, ref: str | int) -> MappingVersion:
        """A version by number (the newest loaded content with that number) or by a hash prefix."""
        text = str(ref).strip()
        known = self.versions(route)
        if text.isdigit():
            matches = [v for v in known if v.version == int(text)]
            if matches:
                return max(matches, key=lambda v: v.last_loaded_at)
        elif len(text) >= MIN_HASH_PREFIX:
            matches = [v for v in known if v.hash.startswith(text.lower())]
            if len(matches) > 1:
                raise AmbiguousVersion(f"route {route!r}: hash prefix {text!r} matches {len(matches)} versions")
            if matches:
                return matches[0]
        raise VersionNotFound(route, text, [v.version for v in known])

    def routes_with_versions(self) -> list[str]:
        with self._tx() as conn:
            return [r[0] for r in conn.execute(select(mapping_versions.c.route).distinct()
                                               .order_by(mapping_versions.c.route))]

    # -- change audit --------------------------------------------------------------

    def add_change_audit(self, entry: ChangeAuditEntry) -> int:
        with self._tx(write=True) as conn:
            result = conn.execute(insert(change_audit).values(
                route=entry.route, action=entry.action, actor=entry.actor, approved_by=entry.approved_by,
                reason=entry.reason, at=entry.at, from_version=entry.from_version, to_version=entry.to_version,
                hash=entry.hash, details=entry.details))
            key = result.inserted_primary_key
            return int(key[0]) if key else 0

    def change_audit(self, route: str | None = None, limit: int = 1000) -> list[ChangeAuditEntry]:
        """Oldest first."""
        query = select(change_audit).order_by(change_audit.c.seq).limit(limit)
        if route is not None:
            query = query.where(change_audit.c.route == route)
        with self._tx() as conn:
            return [ChangeAuditEntry(route=r.route, action=r.action, actor=r.actor, reason=r.reason,
                                     approved_by=r.approved_by, from_version=r.from_version,
                                     to_version=r.to_version, hash=r.hash, details=dict(r.details or {}),
                                     at=r.at, seq=r.seq) for r in conn.execute(query)]

    # -- shadow results ------------------------------------------------------------

    def add_shadow_results(self, results: Sequence[ShadowResult], keep: int = 100) -> None:
        """Upsert the per-record results; differing ones with ``detail`` become samples (the last ``keep``)."""
        if not results:
            return
        rows = [{"shadow": r.shadow, "record_id": r.record_id, "shadow_version": r.shadow_version,
                 "live_version": r.live_version, "live_route": r.live_route, "key": r.key, "outcome": r.outcome,
                 "paths": list(r.paths), "at": r.at} for r in results]
        stmt = _upsert(self, shadow_results, [shadow_results.c.shadow, shadow_results.c.record_id,
                                              shadow_results.c.shadow_version, shadow_results.c.live_version],
                       ["outcome", "paths", "at", "key"])
        samples = [r for r in results if r.outcome == "different" and r.detail is not None][-keep:]
        with self._tx(write=True) as conn:
            conn.execute(stmt, rows)
            if samples:  # a record compared again (redelivered) replaces its sample
                for shadow in {r.shadow for r in samples}:
                    conn.execute(delete(shadow_samples).where(
                        shadow_samples.c.shadow == shadow,
                        shadow_samples.c.record_id.in_([r.record_id for r in samples if r.shadow == shadow])))
                conn.execute(insert(shadow_samples), [
                    {"shadow": r.shadow, "live_route": r.live_route, "shadow_version": r.shadow_version,
                     "live_version": r.live_version, "record_id": r.record_id, "key": r.key,
                     "paths": list(r.paths), "detail": crypto.seal_json(r.detail), "at": r.at}
                    for r in samples])
                for shadow in {r.shadow for r in samples}:
                    cutoff = conn.execute(select(shadow_samples.c.seq).where(shadow_samples.c.shadow == shadow)
                                          .order_by(shadow_samples.c.seq.desc()).offset(keep).limit(1)).first()
                    if cutoff is not None:
                        conn.execute(delete(shadow_samples).where(shadow_samples.c.shadow == shadow,
                                                                  shadow_samples.c.seq <= cutoff[0]))

    def shadow_counts(self, live_route: str | None = None, shadow: str | None = None) -> list[dict[str, Any]]:
        """Per shadow and (shadow version, live version): same, different, first and last result; newest first."""
        query = (select(shadow_results.c.shadow, shadow_results.c.live_route, shadow_results.c.shadow_version,
                        shadow_results.c.live_version, shadow_results.c.outcome, func.count(),
                        func.min(shadow_results.c.at), func.max(shadow_results.c.at))
                 .group_by(shadow_results.c.live_route, shadow_results.c.shadow, shadow_results.c.shadow_version,
                           shadow_results.c.live_version, shadow_results.c.outcome))
        if live_route is not None:
            query = query.where(shadow_results.c.live_route == live_route)
        if shadow is not None:
            query = query.where(shadow_results.c.shadow == shadow)
        groups: dict[tuple[str, int, int], dict[str, Any]] = {}
        with self._tx() as conn:
            for name, live, sv, lv, outcome, n, first, last in conn.execute(query):
                g = groups.setdefault((name, sv, lv), {"shadow": name, "live_route": live, "shadow_version": sv,
                                                       "live_version": lv, "same": 0, "different": 0,
                                                       "first": None, "last": None})
                g[outcome] = int(n)
                first, last = _when(first), _when(last)
                g["first"] = first if g["first"] is None else min(g["first"], first)
                g["last"] = last if g["last"] is None else max(g["last"], last)
        return sorted(groups.values(), key=lambda g: g["last"], reverse=True)

    def shadow_results(self, shadow: str, shadow_version: int, live_version: int) -> list[ShadowResult]:
        """Every compared record of one shadow version against one live version, oldest first."""
        query = (select(shadow_results).where(shadow_results.c.shadow == shadow,
                                              shadow_results.c.shadow_version == shadow_version,
                                              shadow_results.c.live_version == live_version)
                 .order_by(shadow_results.c.at, shadow_results.c.record_id))
        with self._tx() as conn:
            return [ShadowResult(shadow=r.shadow, live_route=r.live_route, shadow_version=r.shadow_version,
                                 live_version=r.live_version, record_id=r.record_id, key=r.key,
                                 outcome=r.outcome, paths=tuple(r.paths or ()), at=r.at)
                    for r in conn.execute(query)]

    def shadow_samples(self, shadow: str, limit: int = 100) -> list[ShadowResult]:
        """The newest differing records with their values, newest first."""
        query = (select(shadow_samples).where(shadow_samples.c.shadow == shadow)
                 .order_by(shadow_samples.c.seq.desc()).limit(limit))
        with self._tx() as conn:
            return [ShadowResult(shadow=r.shadow, live_route=r.live_route, shadow_version=r.shadow_version,
                                 live_version=r.live_version, record_id=r.record_id, key=r.key,
                                 outcome="different", paths=tuple(r.paths or ()),
                                 detail=dict(crypto.open_json(r.detail or {})), at=r.at)
                    for r in conn.execute(query)]


def _when(value: Any) -> datetime:
    """min()/max() bypass the column type on SQLite: they may come back as text."""
    return as_utc(datetime.fromisoformat(value) if isinstance(value, str) else value)


def _version(r: Any) -> MappingVersion:
    return MappingVersion(route=r.route, hash=r.hash, version=r.version, path=r.path, content=r.content,
                          changelog=dict(r.changelog or {}), shadow_of=r.shadow_of, loaded_at=r.loaded_at,
                          last_loaded_at=r.last_loaded_at)
