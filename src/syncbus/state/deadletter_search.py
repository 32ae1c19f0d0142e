"""The dead-letter text search (``syncbus dlq list --text``, ``GET /dlq?text=``, the console), encrypted or not.

The database can look inside payloads stored in clear text only; a payload
sealed at rest (``SYNCBUS_DATA_KEYS``) is ciphertext to it, so a search left to
SQL alone would silently miss every encrypted letter -- the ones holding the
personal data people search for. So SQL only narrows: it keeps the rows whose
clear payload or error may match, and every *sealed* row the other filters let
through; then each row is opened here and matched on its plaintext. A sealed
row whose key is missing fails the search with the codec's error, as reading it
would.

The match is decided here, one rule on every database: the text anywhere in
the payload or the error, ASCII letters in either case (what SQLite's ``LIKE``
does; PostgreSQL's bytea ``LIKE`` is case-sensitive, so there the payload is
compared in ``encode(value, 'escape')`` form, case-insensitively).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import LargeBinary, Text, cast, exists, func, literal, or_, select, true, type_coerce
from sqlalchemy.engine import Connection

from . import crypto
from .crypto import MAGIC
from .tables import dead_letters, dlq_audit

NEWEST_FIRST = (dead_letters.c.last_failed_at.desc(), dead_letters.c.id.desc())
# whether a letter's value was ever edited (one indexed lookup per row): masking must know (masking.py)
EDITED = exists().where(dlq_audit.c.dead_letter_id == dead_letters.c.id, dlq_audit.c.action == "edit") \
    .label("edited")
# (plaintext payload, content type, error, edited) -> what the searching caller may see of them
SearchView = Callable[[bytes, str | None, str, bool], tuple[bytes, str]]


# Not the usual backslash: PostgreSQL reads the ESCAPE of a bytea LIKE as a bytea literal, where a lone
# backslash is invalid input -- every payload search on PostgreSQL failed with it.
ESCAPE = "!"


def _like(text: str) -> str:
    escaped = text.replace(ESCAPE, ESCAPE * 2).replace("%", ESCAPE + "%").replace("_", ESCAPE + "_")
    return f"%{escaped}%"


def _escape_form(data: bytes) -> str:
    """``data`` as PostgreSQL's ``encode(…, 'escape')`` writes it: NUL and bytes >= 0x80 as \\ooo, \\ doubled."""
    return "".join(f"\\{b:03o}" if b == 0 or b >= 0x80 else "\\\\" if b == 0x5C else chr(b) for b in data)


def candidates(text: str, sqlite: bool) -> Any:
    """Rows that may contain ``text`` (a superset: ``matching_ids`` decides), and every sealed row."""
    pattern = _like(text)
    sealed = MAGIC.decode("ascii") + "%"
    sealed_error = dead_letters.c.error.like(crypto.TEXT_TAG.replace("_", ESCAPE + "_") + "%", escape=ESCAPE)
    if sqlite:  # SQLite's LIKE never matches a BLOB: compare the payload as text; LIKE is case-insensitive.
        value = cast(dead_letters.c.value, Text)  # as text it ends at a NUL byte: instr() sees the whole blob
        return or_(value.like(pattern, escape=ESCAPE), func.instr(dead_letters.c.value,
                                                                  literal(text.encode("utf-8"), LargeBinary)) > 0,
                   dead_letters.c.error.like(pattern, escape=ESCAPE), value.like(sealed), sealed_error)
    # PostgreSQL: the bytea in its escape form (text), so ILIKE folds ASCII letters as SQLite's LIKE does
    escaped_value = func.encode(dead_letters.c.value, literal("escape"))
    prefix = literal(sealed.encode("ascii"), LargeBinary)
    return or_(escaped_value.ilike(_like(_escape_form(text.encode("utf-8"))), escape=ESCAPE),
               dead_letters.c.error.ilike(pattern, escape=ESCAPE),
               type_coerce(dead_letters.c.value, Text).like(prefix), sealed_error)


def _contains(haystack: bytes, needle: bytes) -> bool:
    return needle.lower() in haystack.lower()  # bytes.lower(): ASCII letters only, as SQLite's LIKE


def matching_ids(conn: Connection, conds: list[Any], text: str, sqlite: bool,
                 view: SearchView | None = None) -> list[str]:
    """Ids of the letters that pass ``conds`` and contain ``text`` in payload or error, newest failure first.

    ``view``: what the caller may see of a letter (a read-only key: the payload masked, the error scrubbed);
    then every candidate is matched on that view alone, so a search cannot reveal what the view hides.
    """
    needle = text.encode("utf-8")
    # A masked caller's view holds "****" where the stored text has a value: a search for it cannot be narrowed
    # by the stored text (anything else it finds in the view, the stored text holds as well).
    narrow = candidates(text, sqlite) if view is None or "*" not in text else true()
    query = (select(dead_letters.c.id, dead_letters.c.value, dead_letters.c.error, dead_letters.c.headers, EDITED)
             .where(*conds, narrow).order_by(*NEWEST_FIRST))
    ids: list[str] = []
    for row in conn.execution_options(stream_results=True, yield_per=500).execute(query):
        value, error = crypto.open(bytes(row.value)), crypto.open_text(row.error) or ""
        found = _contains(value, needle) or _contains(error.encode("utf-8"), needle)
        if view is not None and (found or "*" in text):
            # a view only hides: what the stored text lacks, the view lacks too (and the view costs more)
            ctype = (row.headers or {}).get("content-type")
            value, error = view(value, ctype if isinstance(ctype, str) else None, error, bool(row.edited))
            found = _contains(value, needle) or _contains(error.encode("utf-8"), needle)
        if found:
            ids.append(str(row.id))
    return ids
