"""What source tests share: a state store with the parts sources use, and reading a topic back."""

from __future__ import annotations

import time
from typing import Any

from syncbus.bus.base import Bus
from syncbus.record import Record
from syncbus.state.checkpoints import CheckpointStore
from syncbus.state.trace import TraceStore


class State(CheckpointStore, TraceStore):
    """The parts of the state store a poll source touches: checkpoints, slots, trace."""


async def topic_records(bus: Bus, topic: str, *, group: str = "test-reader", settle: float = 0.3) -> list[Record]:
    """Every record on ``topic`` (a fresh consumer group reads from the start until it goes quiet)."""
    consumer = bus.consumer(group, [topic])
    await consumer.start()
    out: list[Record] = []
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline:
            batch = await consumer.fetch(1000, timeout=settle)
            if not batch:
                break
            out += batch
    finally:
        await consumer.stop()
    return out


def numbers(records: list[Record]) -> list[Any]:
    """The ``n`` of each record the ``generate`` source made, in bus order."""
    import orjson

    return [orjson.loads(r.value)["n"] for r in records]
