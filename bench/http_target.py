"""A benchmark HTTP target: answers every request 200 as cheaply as Python can, in its own process.

A benchmark's target must never be the bottleneck, so this is a bare
``asyncio.Protocol`` on uvloop (no ASGI, no framework): it parses just enough
HTTP/1.1 to find the end of each request (keep-alive, pipelining, no chunked
bodies) and answers ``200 {}``. It remembers when each delivery arrived
(``time.monotonic()``, which on Linux is one clock for all processes) keyed by
its ``X-Syncbus-Record-Id``, so the benchmark can compute end-to-end latency.

Control paths (answered by the same server): ``GET /_stats`` -> ``{"count": n}``
(requests to other paths so far), ``GET /_arrivals`` -> ``[[record_id, t], ...]``,
``POST /_reset`` forgets everything. Prints its URL on stdout when ready::

    python bench/http_target.py [--port 0]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
from typing import Any

import orjson

_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class State:
    def __init__(self) -> None:
        self.count = 0
        self.arrivals: list[tuple[str, float]] = []


def _reply(body: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


class Target(asyncio.Protocol):
    def __init__(self, state: State) -> None:
        self.state = state
        self.buf = b""
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        out: list[bytes] = []
        state = self.state
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end]
            lower = head.lower()
            length = 0
            i = lower.find(b"\r\ncontent-length:")
            if i >= 0:
                j = lower.find(b"\r\n", i + 2)
                length = int(lower[i + 17: j if j >= 0 else len(lower)])
            total = end + 4 + length
            if len(buf) < total:
                break
            line_end = head.find(b"\r\n")
            request_line = head[:line_end if line_end >= 0 else len(head)]
            path = request_line.split(b" ", 2)[1] if request_line.count(b" ") >= 2 else b"/"
            if path.startswith(b"/_"):
                out.append(self._control(path))
            else:
                state.count += 1
                k = lower.find(b"\r\nx-syncbus-record-id:")
                if k >= 0:
                    e = head.find(b"\r\n", k + 2)
                    rid = head[k + 22: e if e >= 0 else len(head)].strip().decode("latin-1")
                    state.arrivals.append((rid, time.monotonic()))
                out.append(_OK)
            buf = buf[total:]
        self.buf = buf
        if out and self.transport is not None:
            self.transport.write(b"".join(out))

    def _control(self, path: bytes) -> bytes:
        state = self.state
        if path.startswith(b"/_stats"):
            return _reply(orjson.dumps({"count": state.count}))
        if path.startswith(b"/_arrivals"):
            return _reply(orjson.dumps(state.arrivals))
        if path.startswith(b"/_reset"):
            state.count = 0
            state.arrivals = []
            return _reply(b"{}")
        return _reply(b'{"error": "unknown control path"}')


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    state = State()
    server = await loop.create_server(lambda: Target(state), host, port, backlog=1024, reuse_address=True)
    bound = server.sockets[0].getsockname()
    print(f"http://{bound[0]}:{bound[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        runner = asyncio.run
    try:
        runner(serve(args.host, args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
