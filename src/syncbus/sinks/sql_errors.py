"""How the SQL sink judges a database error: worth another try, or a dead letter.

Decided by class and by the codes drivers attach (SQLSTATE for PostgreSQL,
``sqlite_errorname`` for SQLite), never by message text: messages change with
the server's language (``lc_messages = 'zh_CN'``) and version, codes do not.

Retryable: the database is away, busy, locked or out of resources, or the
transaction lost a deadlock — another try can succeed. Permanent: the data
(constraint violations, bad values) or the SQL (no such table) — repeating
the same statement gives the same answer.
"""

from __future__ import annotations

import re
from typing import Any, Final

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from syncbus.errors import DeliveryError

# SQLSTATE classes worth another try: connection exception, transaction rollback
# (deadlock, serialization failure), insufficient resources, operator intervention
# (shutdown, statement timeout), system error. Plus lock_not_available / object in use.
_RETRY_SQLSTATE_CLASSES: Final = frozenset({"08", "40", "53", "57", "58"})
_RETRY_SQLSTATES: Final = frozenset({"55P03", "55006"})
_RETRY_SQLITE: Final = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_IOERR", "SQLITE_PROTOCOL",
                        "SQLITE_CANTOPEN")
_PASSWORD_IN_URL: Final = re.compile(r"(://[^:/@]*:)[^@]*@")


def redact_url(url: str) -> str:
    """A database URL for messages: the password replaced by ***, even if the URL does not parse."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return _PASSWORD_IN_URL.sub(r"\1***@", url)


def check_database_url(value: str) -> str:
    """Pydantic validator of a database URL option (the sql sink's ``url``, sql_poll's ``dsn``)."""
    try:
        make_url(value)
    except Exception:
        raise ValueError(f"invalid database URL {redact_url(value)!r}: expected "
                         "dialect+driver://user:password@host/db or sqlite:////absolute/path.db") from None
    return value


def is_transient(exc: BaseException) -> bool:
    """True if the same statement may succeed later (see the module docstring)."""
    if not isinstance(exc, sa_exc.SQLAlchemyError):
        return False
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return True  # pool checkout timed out / connection dropped
    if isinstance(exc, sa_exc.IntegrityError | sa_exc.DataError | sa_exc.NotSupportedError):
        return False
    orig = getattr(exc, "orig", None)
    sqlite_name = getattr(orig, "sqlite_errorname", None)
    if isinstance(sqlite_name, str):
        return sqlite_name.startswith(_RETRY_SQLITE)
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(state, str) and len(state) == 5:
        return state[:2] in _RETRY_SQLSTATE_CLASSES or state in _RETRY_SQLSTATES
    # No code (e.g. "connection refused" before the server ever answered): drivers use
    # these two classes for "cannot talk to the server".
    return isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)


def is_constraint(exc: BaseException) -> bool:
    """A row the table refuses (NOT NULL, CHECK, UNIQUE, FK) or a value it cannot hold: the record's fault."""
    return isinstance(exc, sa_exc.IntegrityError | sa_exc.DataError)


def delivery_error(exc: sa_exc.SQLAlchemyError, sink: str, table: str, db: str) -> DeliveryError:
    """The DeliveryError for one record, with the database's own one-line explanation."""
    orig: Any = getattr(exc, "orig", None)
    text = first_line(str(orig) if orig is not None else str(exc))
    retryable = is_transient(exc)
    if is_constraint(exc):
        message = f"{sink}: rejected by table {table}: {text}"
    elif retryable:
        message = f"{sink}: {text} (table {table} in {db})"
    else:
        message = f"{sink}: table {table}: {text}"
    return DeliveryError(message, retryable=retryable)


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown database error"
