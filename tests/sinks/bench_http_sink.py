"""Throughput of HttpSink.send against the local target server (not collected by pytest).

The target runs in its own process (uvloop, pinned to the last core when
possible) and this process pins itself to core 0, so the number is what ONE
core of syncbus can push through one sink::

    .venv/bin/python tests/sinks/bench_http_sink.py --sends 20000 --concurrency 50 [--uvloop] [--bearer]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from syncbus.sinks.base import Delivery  # noqa: E402
from syncbus.sinks.http import HttpSink  # noqa: E402


def start_target() -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, str(Path(__file__).with_name("target_server.py")), "--uvloop"]
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cores) > 1:
        cmd = ["taskset", "-c", str(cores[-1]), *cmd]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        raise SystemExit(f"target server did not start: {url!r}")
    return proc, url


async def run(url: str, sends: int, concurrency: int, bearer: bool) -> None:
    config: dict[str, object] = {"name": "bench", "type": "http", "url": url + "/orders",
                                 "max_connections": concurrency}
    if bearer:
        config["auth"] = {"bearer": {"token": "static"}}
    sink = HttpSink(config)
    await sink.start()
    body = b'{"VBELN": "0000004711", "KUNNR": "100042", "NETWR": "1234.50", "WAERK": "EUR"}'

    def delivery(i: int) -> Delivery:
        return Delivery(route="crm-to-erp", mapping_version=1, sink="bench", record_id=f"rec-{i}",
                        key=f"order-{i}", idempotency_key=f"crm-to-erp:order-{i}:rec-{i}", body=body,
                        content_type="application/json", payload=None)

    latencies: list[float] = []
    counter = iter(range(sends))

    async def worker() -> None:
        for i in counter:
            started = time.perf_counter()
            await sink.send(delivery(i))
            latencies.append(time.perf_counter() - started)

    # warm up: open the pool's connections
    await asyncio.gather(*(sink.send(delivery(-1)) for _ in range(concurrency)))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    await sink.close()
    latencies.sort()
    p50, p99 = statistics.median(latencies) * 1000, latencies[int(len(latencies) * 0.99)] * 1000
    print(f"{sends} sends, concurrency {concurrency}, loop {type(asyncio.get_running_loop()).__module__}: "
          f"{sends / wall:,.0f} sends/s wall, {sends / cpu:,.0f} sends per CPU-second, "
          f"p50 {p50:.1f} ms, p99 {p99:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sends", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--bearer", action="store_true", help="send with an Authorization header")
    parser.add_argument("--url", help="use a running target instead of starting one")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    proc, url = (None, args.url) if args.url else start_target()
    try:
        coro = run(url, args.sends, args.concurrency, args.bearer)
        if args.uvloop:
            import uvloop

            uvloop.run(coro)
        else:
            asyncio.run(coro)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
