"""A state store holding two known stretches of one flow, for the effect report's tests.

Version 4 ran two days ago, version 5 ran in the last day. Every number the
report should show follows from the table below, so the tests can state the
expected p50/p95, rates and changes exactly:

=========  =======  ===================  ========  ============  ==============================
version    records  processing time      attempts  dead letters  resolution
=========  =======  ===================  ========  ============  ==============================
4          10       1, 2, ... 10 s       11 (1 x)  1 (mapping)   delivered 1 h after it failed
5          10       2, 4, ... 20 s       10        0             --
=========  =======  ===================  ========  ============  ==============================

plus one skipped record on each day (mapped by no version).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, update

from syncbus.state import Store
from syncbus.state.models import DeadLetter
from syncbus.state.tables import dead_letters, record_outcomes

ROUTE = "crm-order-to-erp"
NOW = datetime.now(UTC).replace(microsecond=0)
V4_AT = NOW - timedelta(days=1, hours=12)
V5_AT = NOW - timedelta(hours=12)


def fill(store: Store, route: str = ROUTE) -> None:
    outcomes: list[dict] = []
    trace: list[tuple] = []
    for version, start, step in ((4, V4_AT, 1), (5, V5_AT, 2)):
        for i in range(10):
            rid = f"v{version}-{i}"
            received = start + timedelta(minutes=i)
            delivered = received + timedelta(seconds=(i + 1) * step)
            trace += [(rid, None, "received", received.timestamp(), {"source": "crm"}),
                      (rid, route, "mapped", (received + timedelta(milliseconds=5)).timestamp(),
                       {"version": version, "key": rid})]
            if version == 4 and i == 0:   # one failed attempt before the good one
                trace.append((rid, route, "attempt", (received + timedelta(milliseconds=8)).timestamp(),
                              {"sink": "erp-orders", "outcome": "retryable"}))
            trace += [(rid, route, "attempt", delivered.timestamp(), {"sink": "erp-orders", "outcome": "ok"}),
                      (rid, route, "delivered", delivered.timestamp(), {"sink": "erp-orders", "attempts": 1})]
            outcomes.append({"route": route, "record_id": rid, "outcome": "delivered", "topic": "crm.orders",
                             "partition": 0, "offset": len(outcomes), "at": delivered})
        skipped = start + timedelta(minutes=30)
        outcomes.append({"route": route, "record_id": f"skip-{version}", "outcome": "skipped",
                         "topic": "crm.orders", "partition": 0, "offset": len(outcomes), "at": skipped})
    failed_at = V4_AT + timedelta(minutes=40)
    outcomes.append({"route": route, "record_id": "v4-bad", "outcome": "dead_lettered", "topic": "crm.orders",
                     "partition": 0, "offset": len(outcomes), "at": failed_at})
    trace.append(("v4-bad", None, "received", failed_at.timestamp(), {"source": "crm"}))
    store.add_trace_rows(trace)
    with store._tx(write=True) as conn:
        conn.execute(insert(record_outcomes), outcomes)
    letter = DeadLetter(route=route, reason="mapping", error="field 'VBELN': required", value=b"{}",
                        first_failed_at=failed_at, last_failed_at=failed_at, mapping_version=4,
                        record_id="v4-bad", topic="crm.orders")
    store.add(letter)
    store.transition([letter.id], "pending", "discarded", "discard", "ops", "test data")
    with store._tx(write=True) as conn:   # resolved one hour after it failed
        conn.execute(update(dead_letters).where(dead_letters.c.id == letter.id).values(
            status_at=failed_at + timedelta(hours=1)))
