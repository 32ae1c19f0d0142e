"""The baseline for Kafka → Kafka: a bare aiokafka consume → produce pipe in one process.

Same client settings as syncbus (consumer group, no auto-commit, the bus's
fetch limits; producer idempotent, ``acks=all``, linger 5 ms, 64 KiB batches)
and the same event loop (uvloop) and the same at-least-once discipline (offsets committed only after the
produced records were acknowledged, up to 1000 records in flight), but no
decoding, mapping, metrics or tracing: what the Kafka plumbing alone costs.
Exits after ``--count`` records were acknowledged (or ``--seconds``)::

    python bench/kafka_pipe.py --bootstrap 127.0.0.1:9092 --source A --target C --count 50000
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import deque

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition


async def pipe(args: argparse.Namespace) -> None:
    consumer = AIOKafkaConsumer(
        args.source, bootstrap_servers=args.bootstrap, group_id=args.group, enable_auto_commit=False,
        auto_offset_reset="earliest", max_partition_fetch_bytes=1024 * 1024, fetch_max_bytes=8 * 1024 * 1024)
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, enable_idempotence=True, acks="all",
                                linger_ms=5, max_batch_size=64 * 1024)
    await consumer.start()
    await producer.start()
    # (futures of one fetched batch, the offsets to commit once they are all acknowledged)
    pending: deque[tuple[list[asyncio.Future[object]], dict[TopicPartition, int]]] = deque()
    in_flight = 0
    acked = 0
    deadline = time.monotonic() + args.seconds
    last_commit = time.monotonic()
    to_commit: dict[TopicPartition, int] = {}
    try:
        while acked < args.count and time.monotonic() < deadline:
            batches = {}
            if in_flight < 1000:
                batches = await consumer.getmany(timeout_ms=200, max_records=min(500, 1000 - in_flight))
                for tp, msgs in batches.items():
                    futures = [await producer.send(args.target, value=m.value, key=m.key, headers=list(m.headers))
                               for m in msgs]
                    pending.append((futures, {tp: msgs[-1].offset + 1}))
                    in_flight += len(futures)
            while pending and (in_flight >= 1000 or all(f.done() for f in pending[0][0])):
                futures, offsets = pending.popleft()
                await asyncio.gather(*futures)
                in_flight -= len(futures)
                acked += len(futures)
                to_commit.update(offsets)
            now = time.monotonic()
            if to_commit and now - last_commit >= 0.2:
                await consumer.commit(to_commit)
                to_commit = {}
                last_commit = now
            if not batches and pending:
                await asyncio.sleep(0.001)
        while pending:
            futures, offsets = pending.popleft()
            await asyncio.gather(*futures)
            to_commit.update(offsets)
        if to_commit:
            await consumer.commit(to_commit)
    finally:
        await producer.stop()
        await consumer.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="consume → produce baseline")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--group", default="bench-raw-pipe")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=120.0)
    args = parser.parse_args(argv)
    try:
        import uvloop  # syncbus run is on uvloop too (uvicorn picks it)

        uvloop.run(pipe(args))
    except ImportError:  # pragma: no cover
        asyncio.run(pipe(args))


if __name__ == "__main__":
    main()
