"""The life of one record, for ``syncbus trace`` and ``GET /trace/{id}``.

Accepts a record id or a dead-letter id (on-call staff usually start from the
dead letter) and summarises the outcome per route.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..state import Store, StoreError

if TYPE_CHECKING:
    from ..ingress.security.masking import Masker


def load_trace(store: Store, some_id: str, masker: Masker | None = None) -> dict[str, Any] | None:
    """The trace view; ``masker``: as a read-only key sees it (texts that may quote the record scrubbed)."""
    if not some_id.isprintable():  # no id holds control characters (and PostgreSQL refuses NUL in a query)
        return None
    record_id = some_id
    if some_id.startswith("dl-"):
        try:
            record_id = store.get(some_id).record_id
        except StoreError:
            return None
    events = store.trace(record_id)
    if not events:
        matches = store.find_record_ids(some_id, limit=2)
        if len(matches) == 1:
            record_id = matches[0]
            events = store.trace(record_id)
    if not events:
        return None
    outcome: dict[str, str] = {}
    for ev in events:
        if ev.route and ev.stage in ("delivered", "dead_lettered", "skipped", "replayed"):
            outcome[ev.route] = ev.stage
    view = {"record_id": record_id, "outcome": outcome, "events": [e.to_json() for e in events]}
    if masker:
        view = masker.trace(view, store.letters_of_record(record_id))
    return view
