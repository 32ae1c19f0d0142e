"""Is a Kafka broker serving metadata at host:port?  Exit 0 yes, 1 no.

Standard library only, so `kafka.sh up` can wait for readiness before any
virtualenv exists. A TCP connect is not enough: a KRaft broker accepts
connections before it has registered with its controller, and clients then
see an empty cluster. We send a Metadata (v4) request and require at least
one live broker in the answer.
"""

from __future__ import annotations

import socket
import struct
import sys

API_METADATA = 3
VERSION = 4  # the oldest Metadata version Kafka 4.x still serves


def _request(correlation_id: int) -> bytes:
    client = b"syncbus-probe"
    header = struct.pack(">hhih", API_METADATA, VERSION, correlation_id, len(client)) + client
    body = struct.pack(">ib", -1, 0)  # all topics (null array), no auto-creation
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return bytes(buf)


def live_brokers(host: str, port: int, timeout: float = 2.0) -> int:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(_request(7))
        (size,) = struct.unpack(">i", _read_exact(sock, 4))
        data = _read_exact(sock, size)
    correlation_id, _throttle, brokers = struct.unpack_from(">iii", data, 0)
    if correlation_id != 7:
        raise ConnectionError("unexpected correlation id")
    return brokers


def main(argv: list[str]) -> int:
    host, _, port = argv[1].rpartition(":")
    try:
        return 0 if live_brokers(host or "127.0.0.1", int(port)) > 0 else 1
    except (OSError, ValueError, struct.error):
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
