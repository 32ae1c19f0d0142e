"""Operational state: dead letters, audit, record outcomes, trace, idempotency keys, checkpoints."""

from __future__ import annotations

from ..errors import IdempotencyConflict, IdempotencyInProgress
from .db import StoreError, StoreUnavailable, sqlite_url
from .deadletters import DeadLetterConflict, DeadLetterNotFound
from .idempotency import Claim
from .models import AuditEntry, DeadLetter, TraceEvent
from .outcomes import Outcome
from .store import Store

__all__ = ["AuditEntry", "Claim", "DeadLetter", "DeadLetterConflict", "DeadLetterNotFound", "IdempotencyConflict",
           "IdempotencyInProgress", "Outcome", "Store", "StoreError", "StoreUnavailable", "TraceEvent", "sqlite_url"]
