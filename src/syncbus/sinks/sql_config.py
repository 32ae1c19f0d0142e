"""The SQL sink's options: the ``type: sql`` block (see :mod:`syncbus.sinks.sql`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from syncbus.sinks.base import SinkConfig
from syncbus.sinks.sql_errors import check_database_url
from syncbus.units import Duration

__all__ = ["SqlSinkConfig"]


class SqlSinkConfig(SinkConfig):
    """``type: sql`` — write each mapped record as a row of a database table (insert or upsert), in batches."""

    type: Literal["sql"] = Field("sql", description="The sink type: sql.")
    url: str = Field(
        repr=False, json_schema_extra={"secret": True},
        description="SQLAlchemy database URL, e.g. postgresql+psycopg://user:pw@host/db?sslmode=verify-full or "
                    "sqlite:////abs/path.db (give it as url_env: VAR: it usually holds a password). Query "
                    "parameters go to the driver (sslmode, sslrootcert, application_name, ...).")
    table: str = Field(min_length=1, description="Target table; `schema.table` for another schema.")
    mode: Literal["insert", "upsert"] = Field(
        "upsert",
        description="upsert: INSERT ... ON CONFLICT (key_columns) DO UPDATE, so replays land on the same row; "
                    "insert: plain INSERT (a duplicate key is a permanent error).")
    key_columns: list[str] = Field(
        default_factory=list,
        description="The row's identity (the ON CONFLICT target); required for upsert. The table needs "
                    "a primary key or unique constraint on exactly these columns.")
    columns: list[str] | None = Field(
        None,
        description="Columns to write, taken from the mapped record's fields of the same name; other "
                    "fields are ignored. Default: every field of the record (an unknown one is an error).")
    idempotency_column: str | None = Field(
        None,
        description="Also write the delivery's idempotency key to this column (a record that maps to "
                    "several rows gets `<key>#<row index>`).")
    batch_size: int = Field(
        500, ge=1, le=10_000,
        description="Most records written in one transaction. A record whose row the table refuses "
                    "(NOT NULL, CHECK, UNIQUE, FK) fails alone: the batch is redone record by record.")
    batch_linger: Duration = Field(
        0.02, ge=0, le=10,
        description="How long a record may wait for others to share its transaction (duration, e.g. 20ms); "
                    "0 writes at once (batches then form only while a write is in progress).")
    connect_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra keyword arguments for the driver's connect(), e.g. TLS for PostgreSQL: "
                    "{sslmode: verify-full, sslrootcert: /etc/syncbus/finance-ca.pem, sslcert: ..., sslkey: ...}. "
                    "Passwords belong in url (from the environment), not here.")
    create_table: bool = Field(
        False,
        description="Create the table if it is missing, with TEXT columns and key_columns as primary key "
                    "(for sandboxes and tests; production tables belong to the target system).")
    pool_size: int = Field(
        4, ge=1, le=64,
        description="Database connections, threads running the blocking calls, and batches in flight "
                    "(SQLite: always one writer).")
    lock_timeout: Duration = Field(
        5.0, ge=0,
        description="SQLite only: how long to wait for a locked database before the attempt fails "
                    "(and is retried).")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return check_database_url(value)

    @field_validator("key_columns", "columns")
    @classmethod
    def _check_names(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        seen: set[str] = set()
        for name in value:
            if not name.strip():
                raise ValueError("column names must not be empty")
            if name in seen:
                raise ValueError(f"column {name!r} is listed twice")
            seen.add(name)
        return value

    @model_validator(mode="after")
    def _check_keys(self) -> SqlSinkConfig:
        if self.mode == "upsert" and not self.key_columns:
            raise ValueError("mode upsert needs key_columns (the columns that identify a row)")
        if self.columns is not None:
            missing = [k for k in self.key_columns if k not in self.columns]
            if missing:
                raise ValueError(f"key column {missing[0]!r} is not in columns")
        if self.idempotency_column is not None and not self.idempotency_column.strip():
            raise ValueError("idempotency_column must not be empty")
        return self
