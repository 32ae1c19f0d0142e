"""The dead-letter text search (``syncbus dlq list --text``, ``GET /dlq?q=``, the console), encrypted or not.

The database can look inside payloads stored in clear text only; a payload
sealed at rest (``SYNCBUS_DATA_KEYS``) is ciphertext to it, so a search left to
SQL alone would silently miss every encrypted letter -- the ones holding the
personal data people search for. So the query keeps, beside the rows whose
payload or error matches, every *sealed* row the other filters let through,
and those are opened here and matched on their plaintext. A sealed row whose
key is missing fails the search with the codec's error, as reading it would.

Matching follows the database's ``LIKE`` either way: ASCII case-insensitive on
SQLite, exact on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import LargeBinary, Text, cast, literal, or_, select, type_coerce
from sqlalchemy.engine import Connection

from . import crypto
from .crypto import MAGIC, Codec
from .tables import dead_letters

NEWEST_FIRST = (dead_letters.c.last_failed_at.desc(), dead_letters.c.id.desc())
# (plaintext payload, content type, error) -> what the searching caller may see of them
SearchView = Callable[[bytes, str | None, str], tuple[bytes, str]]


# Not the usual backslash: PostgreSQL reads the ESCAPE of a bytea LIKE as a bytea literal, where a lone
# backslash is invalid input -- every payload search on PostgreSQL failed with it.
ESCAPE = "!"


def _like(text: str) -> str:
    escaped = text.replace(ESCAPE, ESCAPE * 2).replace("%", ESCAPE + "%").replace("_", ESCAPE + "_")
    return f"%{escaped}%"


def candidates(text: str, sqlite: bool) -> Any:
    """Rows whose clear payload or error contains ``text``, and every sealed row (matched after opening)."""
    pattern = _like(text)
    sealed = MAGIC.decode("ascii") + "%"
    # SQLite's LIKE never matches a BLOB: compare the payload as text there. PostgreSQL compares bytea with
    # bytea (the column is only typed as text for SQLAlchemy, which allows LIKE on strings alone).
    value = cast(dead_letters.c.value, Text) if sqlite else type_coerce(dead_letters.c.value, Text)
    needle: Any = pattern if sqlite else literal(pattern.encode("utf-8"), LargeBinary)
    prefix: Any = sealed if sqlite else literal(sealed.encode("ascii"), LargeBinary)
    return or_(value.like(needle, escape=ESCAPE), dead_letters.c.error.like(pattern, escape=ESCAPE),
               value.like(prefix))


def _contains(haystack: bytes, needle: bytes, sqlite: bool) -> bool:
    return needle.lower() in haystack.lower() if sqlite else needle in haystack  # bytes.lower(): ASCII only


def matching_ids(conn: Connection, conds: list[Any], text: str, sqlite: bool,
                 view: SearchView | None = None) -> list[str]:
    """Ids of the letters that pass ``conds`` and contain ``text`` in payload or error, newest failure first.

    ``view``: what the caller may see of a letter (a read-only key: the payload masked, the error scrubbed);
    then every candidate is matched on that view alone, so a search cannot reveal what the view hides.
    """
    needle = text.encode("utf-8")
    query = select(dead_letters.c.id, dead_letters.c.value, dead_letters.c.error, dead_letters.c.headers).where(
        *conds, candidates(text, sqlite)).order_by(*NEWEST_FIRST)
    ids: list[str] = []
    for row in conn.execute(query):
        value, error = bytes(row.value), row.error or ""
        if view is not None:
            ctype = (row.headers or {}).get("content-type")
            seen_value, seen_error = view(crypto.open(value), ctype if isinstance(ctype, str) else None, error)
            if not (_contains(seen_error.encode("utf-8"), needle, sqlite) or _contains(seen_value, needle, sqlite)):
                continue
        elif Codec.is_sealed(value) and not (_contains(error.encode("utf-8"), needle, sqlite)
                                             or _contains(crypto.open(value), needle, sqlite)):
            continue
        ids.append(str(row.id))
    return ids
