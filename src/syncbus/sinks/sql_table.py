"""The SQL sink's target table: reflect it (or create it in a sandbox), check it, build the write statements.

The table is reflected once, so a typo in a column name is reported by name
before any SQL is sent, and the statements are built once per column set.
SQLite and PostgreSQL get a native ``INSERT … ON CONFLICT DO UPDATE``; other
dialects a select-then-write per row in the same transaction (safe because
records with the same key arrive in order).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine

from syncbus.errors import DeliveryError

log = logging.getLogger(__name__)

NATIVE_UPSERT: dict[str, Callable[[sa.Table], Any]] = {
    "sqlite": sqlite_dialect.insert,
    "postgresql": pg_dialect.insert,
}

Columns = tuple[str, ...]
RowGroup = tuple[Columns, list[dict[str, Any]]]  # rows with the same columns: one executemany


@dataclass(slots=True)
class TableSpec:
    """What the sink config says about the table (kept apart from the pydantic model for the worker threads)."""

    sink: str
    table: str  # as configured, `schema.table` allowed
    mode: Literal["insert", "upsert"]
    key_columns: list[str]
    columns: list[str] | None
    idempotency_column: str | None
    create_table: bool
    schema: str | None = field(init=False)
    name: str = field(init=False)

    def __post_init__(self) -> None:
        schema, _, name = self.table.rpartition(".")
        self.schema = schema or None
        self.name = name


def reflect_or_create(engine: Engine, spec: TableSpec, db: str, sample: Sequence[str] | None) -> sa.Table | None:
    """The table as the database has it; None only while create_table waits for a first record."""
    try:
        return reflect(engine, spec)
    except sa_exc.NoSuchTableError:
        if not spec.create_table:
            raise DeliveryError(
                f"{spec.sink}: table {spec.table} does not exist in {db} "
                "(create it, or set create_table: true for a sandbox)", retryable=False) from None
    names = columns_to_create(spec, sample)
    if names is None:
        return None
    keys = set(spec.key_columns)
    table = sa.Table(spec.name, sa.MetaData(),
                     *[sa.Column(n, sa.Text, primary_key=n in keys, nullable=n not in keys) for n in names],
                     schema=spec.schema)
    try:
        table.create(engine, checkfirst=True)
    except (sa_exc.OperationalError, sa_exc.ProgrammingError):
        # Another process may have won the race: then its table is there to reflect.
        try:
            return reflect(engine, spec)
        except sa_exc.NoSuchTableError:
            pass
        raise
    log.info("sink %s: created table %s (%s)", spec.sink, spec.table, ", ".join(names))
    return reflect(engine, spec)


def reflect(engine: Engine, spec: TableSpec) -> sa.Table:
    with engine.connect() as conn:
        return sa.Table(spec.name, sa.MetaData(), schema=spec.schema, autoload_with=conn)


def columns_to_create(spec: TableSpec, sample: Sequence[str] | None) -> list[str] | None:
    if spec.columns is not None:
        body: list[str] = list(spec.columns)
    elif sample is not None:
        body = [c for c in sample if isinstance(c, str)]
    else:
        return None
    extra = [spec.idempotency_column] if spec.idempotency_column else []
    return list(dict.fromkeys([*spec.key_columns, *body, *extra]))


def check_table(table: sa.Table, spec: TableSpec, native_upsert: bool) -> None:
    """Every configured column exists; upsert has a unique key to conflict on."""
    named = [("key column", k) for k in spec.key_columns]
    named += [("column", c) for c in spec.columns or []]
    if spec.idempotency_column:
        named.append(("idempotency column", spec.idempotency_column))
    for what, col in named:
        if col not in table.c:
            raise DeliveryError(f"{spec.sink}: {what} {col!r} does not exist in table {spec.table}",
                                retryable=False)
    if spec.mode == "upsert" and native_upsert and not has_unique(table, spec.key_columns):
        raise DeliveryError(
            f"{spec.sink}: upsert needs a primary key or unique constraint on "
            f"({', '.join(spec.key_columns)}) in table {spec.table}", retryable=False)


def has_unique(table: sa.Table, keys: list[str]) -> bool:
    wanted = set(keys)
    if {c.name for c in table.primary_key.columns} == wanted:
        return True
    for constraint in table.constraints:
        if isinstance(constraint, sa.UniqueConstraint) and {c.name for c in constraint.columns} == wanted:
            return True
    return any(index.unique and {c.name for c in index.columns} == wanted for index in table.indexes)


class Statements:
    """The INSERT / upsert statement per column set, built once (compiling them is not free)."""

    def __init__(self, table: sa.Table, spec: TableSpec, backend: str, native_upsert: bool) -> None:
        self.table = table
        self.spec = spec
        self.backend = backend
        self.native_upsert = native_upsert
        self._cache: dict[Columns, Any] = {}

    def execute(self, conn: Connection, cols: Columns, rows: list[dict[str, Any]]) -> None:
        """Write rows that all have the columns ``cols``."""
        if self.spec.mode == "upsert" and not self.native_upsert:
            for row in rows:
                select_then_write(conn, self.table, self.spec.key_columns, row)
            return
        conn.execute(self._statement(cols), rows)

    def _statement(self, cols: Columns) -> Any:
        stmt = self._cache.get(cols)
        if stmt is not None:
            return stmt
        table = self.table
        if self.spec.mode == "insert":
            stmt = sa.insert(table)
        else:
            keys = self.spec.key_columns
            ins = NATIVE_UPSERT[self.backend](table)
            targets = [table.c[k] for k in keys]
            updates = {c: ins.excluded[c] for c in cols if c not in keys}
            stmt = (ins.on_conflict_do_update(index_elements=targets, set_=updates) if updates
                    else ins.on_conflict_do_nothing(index_elements=targets))
        self._cache[cols] = stmt
        return stmt


def select_then_write(conn: Connection, table: sa.Table, keys: list[str], row: dict[str, Any]) -> None:
    """Upsert for dialects without ON CONFLICT: look the key up, then update or insert."""
    match = sa.and_(*[table.c[k] == row[k] for k in keys])
    found = conn.execute(sa.select(sa.literal(1)).select_from(table).where(match).limit(1)).first()
    if found is None:
        conn.execute(sa.insert(table), [row])
        return
    updates = {c: v for c, v in row.items() if c not in keys}
    if updates:
        conn.execute(sa.update(table).where(match).values(updates))
