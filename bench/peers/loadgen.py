"""Load generator of the peer HTTP path: POSTs N corpus orders over C keep-alive connections, then exits.

Closed loop at a fixed concurrency: each of ``--connections`` workers sends the
next order as soon as its previous one was answered, until ``--records``
orders were sent and answered. Orders are the corpus lines in turn; past the
end of the corpus it starts again with ``R<k>-`` put before each ``order_id``
(and ``--tag`` before that), so every order sent is distinct. The same requests go to every tool (syncbus's
ingress answers 202, Benthos and Camel 200: any 2xx counts as accepted).

Runs in its own process (uvloop, raw asyncio streams, requests built before
the clock starts), so its cost is not the tool's. Writes a JSON report to
``--out``: sent, accepted, errors by kind, seconds, and how many of the
accepted orders were APPROVED (the ones the tool should deliver)::

    python bench/peers/loadgen.py --url http://127.0.0.1:8080/ingress/crm-orders \\
        --corpus var/peers/corpus.jsonl --records 20000 --connections 32 --out load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


def build_requests(corpus: list[bytes], count: int, host: str, port: int, path: str,
                   headers: dict[str, str], tag: str = "") -> tuple[list[bytes], list[bool]]:
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    out: list[bytes] = []
    approved: list[bool] = []
    for i in range(count):
        body = corpus[i % len(corpus)]
        rnd = i // len(corpus)
        if rnd or tag:
            prefix = f"{tag}{f'R{rnd}' if rnd else ''}-"
            body = body.replace(b'"order_id": "', f'"order_id": "{prefix}'.encode(), 1)
        approved.append(b'"status": "APPROVED"' in body)
        out.append((f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n{extra}"
                    f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
    return out, approved


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    i = lower.find(b"\r\ncontent-length:")
    if i >= 0:
        j = lower.find(b"\r\n", i + 2)
        length = int(lower[i + 17: j])
        if length:
            await reader.readexactly(length)
    elif b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


class Load:
    def __init__(self, requests: list[bytes], approved: list[bool], host: str, port: int) -> None:
        self.requests = requests
        self.approved = approved
        self.host, self.port = host, port
        self.next = 0
        self.accepted = 0
        self.accepted_approved = 0
        self.errors: dict[str, int] = {}

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    async def worker(self, deadline: float) -> None:
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while self.next < len(self.requests) and time.monotonic() < deadline:
            n = self.next
            self.next += 1
            for _attempt in range(3):
                try:
                    if conn is None:
                        reader, writer = await asyncio.open_connection(self.host, self.port)
                        sock = writer.get_extra_info("socket")
                        if sock is not None:
                            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        conn = (reader, writer)
                    conn[1].write(self.requests[n])
                    status = await read_response(conn[0])
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                    self.error(type(exc).__name__)
                    if conn is not None:
                        conn[1].close()
                        conn = None
                    await asyncio.sleep(0.05)
                    continue
                if 200 <= status < 300:
                    self.accepted += 1
                    self.accepted_approved += self.approved[n]
                else:
                    self.error(str(status))
                break
        if conn is not None:
            conn[1].close()

    async def run(self, connections: int, timeout: float) -> dict[str, Any]:
        t0 = time.monotonic()
        await asyncio.gather(*(self.worker(t0 + timeout) for _ in range(connections)))
        seconds = time.monotonic() - t0
        return {"sent": self.next, "accepted": self.accepted, "accepted_approved": self.accepted_approved,
                "errors": self.errors, "seconds": seconds,
                "accepted_per_s": self.accepted / seconds if seconds else 0.0,
                "timed_out": self.next < len(self.requests)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT/path (loopback only)")
    parser.add_argument("--corpus", required=True, help="JSON lines (bench/peers/corpus.py)")
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    parser.add_argument("--tag", default="", help="put before every order_id (distinct ids between runs)")
    parser.add_argument("--header", action="append", default=[], help="extra 'Name: value' header")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    url = urlsplit(args.url)
    host = url.hostname or "127.0.0.1"
    if not (host == "localhost" or host.startswith("127.") or host == "::1"):
        parser.error("the load generator only sends to loopback addresses")
    port = url.port or 80
    corpus = [line for line in Path(args.corpus).read_bytes().splitlines() if line.strip()]
    headers = dict(h.split(":", 1) for h in args.header)
    requests, approved = build_requests(corpus, args.records, host, port, url.path or "/",
                                        {k.strip(): v.strip() for k, v in headers.items()}, args.tag)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    report = runner(Load(requests, approved, host, port).run(args.connections, args.timeout))
    Path(args.out).write_text(json.dumps(report), encoding="utf-8")


if __name__ == "__main__":
    main()
