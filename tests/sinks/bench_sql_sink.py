"""Throughput of SqlSink.send into a SQLite file (or PostgreSQL), batched vs. one record per transaction.

Not collected by pytest. ``--concurrency`` is the number of sends in flight,
as a route's in-flight limit would keep them::

    .venv/bin/python tests/sinks/bench_sql_sink.py --rows 10000 --concurrency 200
    .venv/bin/python tests/sinks/bench_sql_sink.py --url postgresql+psycopg://postgres@127.0.0.1:5432/bench
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from syncbus.sinks.base import Delivery  # noqa: E402
from syncbus.sinks.sql import SqlSink  # noqa: E402

TABLE = """CREATE TABLE vouchers (
    voucher_no TEXT PRIMARY KEY, company TEXT NOT NULL, amount NUMERIC(15, 2) NOT NULL,
    currency TEXT, posting_date DATE, text TEXT, idempotency_key TEXT)"""


def delivery(i: int) -> Delivery:
    payload = {"voucher_no": f"1000-2026-{i:08d}", "company": "1000", "amount": f"{i % 9973}.{i % 100:02d}",
               "currency": "CNY", "posting_date": "2026-11-20", "text": f"ERP posting {i} / 财务凭证"}
    return Delivery(route="erp-posting-to-finance", mapping_version=1, sink="bench", record_id=str(i),
                    key=payload["voucher_no"], idempotency_key=f"erp-posting-to-finance:{i}:{i}", body=b"",
                    content_type="application/json", payload=payload)


async def run(url: str, rows: int, concurrency: int, batch_size: int, linger: str) -> float:
    sink = SqlSink({"name": "bench", "type": "sql", "url": url, "table": "vouchers",
                    "key_columns": ["voucher_no"], "idempotency_column": "idempotency_key",
                    "batch_size": batch_size, "batch_linger": linger, "timeout": "60s"})
    await sink.start()
    counter = iter(range(rows))

    async def worker() -> None:
        for i in counter:
            await sink.send(delivery(i))

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    await sink.close()
    print(f"{rows} rows, concurrency {concurrency}, batch_size {batch_size}, linger {linger}: "
          f"{rows / wall:,.0f} rows/s wall, {rows / cpu:,.0f} rows per CPU-second ({wall:.2f}s)")
    return rows / wall


def fresh(url: str | None, folder: Path, label: str) -> str:
    if url is None:
        url = f"sqlite:///{folder / f'{label}.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS vouchers")
        conn.exec_driver_sql(TABLE)
    engine.dispose()
    return url


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--linger", default="20ms")
    parser.add_argument("--url", help="a database to write to (default: a fresh SQLite file)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the one-record-per-transaction run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        batched = asyncio.run(run(fresh(args.url, folder, "batched"), args.rows, args.concurrency,
                                  args.batch_size, args.linger))
        if not args.no_baseline:
            single = asyncio.run(run(fresh(args.url, folder, "single"), args.rows, args.concurrency, 1, "0"))
            print(f"batching: {batched / single:.1f}x")


if __name__ == "__main__":
    main()
