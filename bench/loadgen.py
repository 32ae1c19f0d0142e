"""A benchmark load generator: POSTs CRM orders to ``/ingress/<source>`` over keep-alive connections.

Runs in its own process (uvloop, raw asyncio streams, pre-built requests) so
the client's own cost stays far below the node's. Two modes:

* ``--mode closed``: ``--connections`` workers each send the next order as
  soon as the previous one was answered, for ``--seconds`` (maximum load).
* ``--mode paced``: one order every 1/``--rate`` seconds on a fixed schedule
  (open loop), spread over the connections; for latency at a given load.
  An order's time is when it was due: if the node answers too slowly for the
  connections to keep up, the wait in our queue counts as latency too.

Every order has its own ``order_id`` (the record key). Writes a JSON report
to ``--out``: counts, accepted per second, the schedule lag, and for each
accepted order ``[record_id, send_time]`` (``time.monotonic()``, comparable
with the target's arrival times on Linux).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import socket
import time
from pathlib import Path
from typing import Any

import orjson


def build_request(host: str, port: int, path: str, api_key: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"X-API-Key: {api_key}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


class Generator:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        template = orjson.loads(Path(args.order).read_bytes())
        self.template = template
        self.sends: list[tuple[str, float]] = []
        self.accepted = 0
        self.errors: dict[str, int] = {}
        self.per_second: dict[int, int] = {}
        self.numbers = itertools.count()
        self.max_lag = 0.0
        self.t0 = 0.0
        self.last_accept = 0.0

    def request(self, n: int) -> bytes:
        order = dict(self.template)
        order["order_id"] = f"SO-{self.args.tag}-{n:09d}"
        a = self.args
        return build_request(a.host, a.port, f"/ingress/{a.source}", a.api_key, orjson.dumps(order))

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self.args.host, self.args.port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return reader, writer

    async def exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int,
                       due: float | None) -> None:
        data = self.request(n)
        sent = time.monotonic()
        writer.write(data)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        i = lower.find(b"content-length:")
        length = int(lower[i + 15: lower.find(b"\r\n", i)]) if i >= 0 else 0
        body = await reader.readexactly(length) if length else b""
        if status == 202:
            self.accepted += 1
            second = int(sent - self.t0)
            self.per_second[second] = self.per_second.get(second, 0) + 1
            if self.args.record:
                # Latency counts from when the order was DUE, not when a free connection sent it:
                # otherwise a slow node hides its queueing in ours (coordinated omission).
                self.sends.append((orjson.loads(body)["id"], due if due is not None else sent))
            self.last_accept = time.monotonic()
        else:
            key = str(status)
            self.errors[key] = self.errors.get(key, 0) + 1

    async def send(self, conn: list[Any], n: int, due: float | None = None) -> None:
        """One exchange on ``conn`` ([reader, writer], reconnected after a failure)."""
        try:
            if not conn:
                conn.extend(await self.connect())
            await self.exchange(conn[0], conn[1], n, due)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            key = type(exc).__name__
            self.errors[key] = self.errors.get(key, 0) + 1
            if conn:
                conn[1].close()
                conn.clear()
            await asyncio.sleep(0.01)

    async def closed_worker(self, deadline: float) -> None:
        conn: list[Any] = []
        try:
            while time.monotonic() < deadline:
                await self.send(conn, next(self.numbers))
        finally:
            if conn:
                conn[1].close()

    async def paced_worker(self, queue: asyncio.Queue[tuple[int, float] | None]) -> None:
        conn: list[Any] = []
        try:
            while (item := await queue.get()) is not None:
                await self.send(conn, *item)
        finally:
            if conn:
                conn[1].close()

    async def run(self) -> dict[str, Any]:
        a = self.args
        self.t0 = time.monotonic()
        deadline = self.t0 + a.seconds
        if a.mode == "closed":
            await asyncio.gather(*(self.closed_worker(deadline) for _ in range(a.connections)),
                                 return_exceptions=False)
        else:
            queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
            workers = [asyncio.create_task(self.paced_worker(queue)) for _ in range(a.connections)]
            total = int(a.rate * a.seconds)
            for n in range(total):
                due = self.t0 + n / a.rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    self.max_lag = max(self.max_lag, -delay)
                queue.put_nowait((n, due))
            for _ in workers:
                queue.put_nowait(None)
            await asyncio.gather(*workers)
        elapsed = time.monotonic() - self.t0
        busy = (self.last_accept or time.monotonic()) - self.t0
        return {"mode": a.mode, "seconds": elapsed, "accepted": self.accepted, "errors": self.errors,
                "accepted_per_second": self.accepted / busy if busy > 0 else 0.0,
                "per_second": [self.per_second.get(s, 0) for s in range(int(elapsed) + 1)],
                "max_schedule_lag": self.max_lag, "t0": self.t0, "sends": self.sends}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="POST CRM orders to a syncbus node")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--source", default="crm-orders")
    parser.add_argument("--api-key", default="bench-key")
    parser.add_argument("--order", required=True, help="JSON file of one order (the template)")
    parser.add_argument("--mode", choices=("closed", "paced"), default="closed")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--tag", default="bench", help="distinguishes order ids between runs")
    parser.add_argument("--record", action="store_true", help="keep [record_id, send_time] per order")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    report = runner(Generator(args).run())
    Path(args.out).write_bytes(orjson.dumps(report))


if __name__ == "__main__":
    main()
