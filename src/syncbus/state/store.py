"""The state store: everything a node keeps besides the bus, in one SQLAlchemy database.

Dead letters and their audit, record outcomes (the ledger), trace events,
ingress idempotency keys and source checkpoints. The default is the SQLite
file of the embedded bus; several nodes share one PostgreSQL
(``--store postgresql://...``). Each concern lives in its own module as a
part of this class, so there is one connection pool and one ``create_all``.
"""

from __future__ import annotations

from . import sessions as _sessions  # noqa: F401 -- console_sessions joins metadata before create_all
from .checkpoints import CheckpointStore
from .idempotency import IdempotencyStore
from .outcomes import OutcomeStore
from .trace import TraceStore
from .versions import VersionStore  # issue 10: mapping versions, change audit, shadow results


class Store(OutcomeStore, TraceStore, IdempotencyStore, CheckpointStore, VersionStore):
    """Dead letters, outcomes, trace, idempotency keys, checkpoints -- see the parts' modules."""
