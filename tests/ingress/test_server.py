"""The hardened HTTP server of `syncbus run` (issue 6): limits, timeouts, shedding, JSON errors, banner.

Real `syncbus run` processes (tests/e2e/harness.py) and raw sockets on
loopback: what is tested is what a slow, huge or flooding client meets.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import resource
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from syncbus.ingress.app import create_app
from syncbus.ingress.connection import GuardedConfig, HttpLimits
from syncbus.ingress.server import ServerError, limits_from_env, raise_fd_limit
from tests.e2e.harness import ADMIN_KEY, SYNCBUS, Node, free_port, write_config

DEAD_TARGET = "http://127.0.0.1:9/nowhere"  # nothing is delivered in these tests
FLOOD = 1_500


@dataclass
class LimitedNode(Node):
    """A node with ``SYNCBUS_HTTP_*`` settings of its own."""

    http_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {**super().env(), **{f"SYNCBUS_HTTP_{k}": v for k, v in self.http_env.items()}}


def _start(root: Path, **http_env: str) -> LimitedNode:
    write_config(root, DEAD_TARGET)
    return LimitedNode(root, f"embedded://{root}/bus.db", f"sqlite:///{root}/store.db", http_env=http_env).start()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LimitedNode]:
    """Short timeouts and a low connection limit, so each defence shows within a second or two."""
    n = _start(tmp_path_factory.mktemp("node"), HEADER_TIMEOUT="1s", BODY_TIMEOUT="1s", MAX_CONNECTIONS="300",
               KEEP_ALIVE_REQUESTS="3")
    yield n
    n.stop()


@pytest.fixture(scope="module")
def roomy_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LimitedNode]:
    """Default limits: 1,000 slow clients fit, and stay connected for the 10 s header timeout."""
    n = _start(tmp_path_factory.mktemp("roomy"))
    yield n
    n.stop()


@pytest.fixture(scope="module", autouse=True)
def enough_descriptors() -> Iterator[None]:
    """The flood tests hold 1,500 sockets in this process too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FLOOD + 500
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"needs {wanted} open files, the hard limit is {hard}")
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- raw HTTP ------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    first_byte: float  # seconds from the request's start

    def json(self) -> Any:
        return json.loads(self.body)


def parse(raw: bytes, first_byte: float) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return Answer(status, headers, body, first_byte)


def read_answer(sock: socket.socket, started: float, timeout: float = 10.0) -> Answer:
    """Read until the server closes (every refusal closes the connection)."""
    sock.settimeout(timeout)
    chunks: list[bytes] = []
    first: float | None = None
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        if first is None:
            first = time.monotonic() - started
        chunks.append(chunk)
    assert first is not None, "the server closed the connection without answering"
    return parse(b"".join(chunks), first)


def exchange(port: int, data: bytes, timeout: float = 10.0) -> Answer:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_answer(sock, started, timeout)


def send_in_background(sock: socket.socket, data: bytes) -> threading.Thread:
    """Send a large request while the test reads the answer (the server answers before reading it all)."""

    def send() -> None:
        with contextlib.suppress(OSError):
            sock.sendall(data)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def assert_json_error(answer: Answer, status: int, code: str | None = None) -> dict[str, Any]:
    assert answer.status == status, answer
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert set(body) >= {"error", "message", "status"} and body["status"] == status
    if code is not None:
        assert body["error"] == code
    return body


def healthz_seconds(port: int) -> float:
    """Seconds for a /healthz on a new connection; fails on anything but 200."""
    started = time.monotonic()
    answer = exchange(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", timeout=5)
    assert answer.status == 200, answer
    return time.monotonic() - started


GET = b"GET /healthz HTTP/1.1\r\nHost: t\r\n"


# -- header and body limits ----------------------------------------------------------------


def test_slow_header_client_is_cut_off_after_the_header_timeout(node: LimitedNode) -> None:
    answer = exchange(node.port, GET)  # the head never ends
    body = assert_json_error(answer, 408, "request_timeout")
    assert "headers" in body["message"]
    assert 0.8 <= answer.first_byte <= 3.0


def test_a_connection_that_sends_nothing_is_closed(node: LimitedNode) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
        assert sock.recv(100) == b""
    assert 0.8 <= time.monotonic() - started <= 3.0


def test_slow_body_is_cut_off_after_the_body_timeout(node: LimitedNode) -> None:
    head = (b"POST /ingress/crm HTTP/1.1\r\nHost: t\r\nX-API-Key: e2e-key\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{\"order_id\":")
    answer = exchange(node.port, head)
    body = assert_json_error(answer, 408, "request_timeout")
    assert "body" in body["message"]
    assert 0.8 <= answer.first_byte <= 3.0


def test_64_mib_header_gets_431_quickly(node: LimitedNode) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
        sender = send_in_background(sock, GET + b"X-Big: " + b"a" * (64 << 20) + b"\r\n\r\n")
        answer = read_answer(sock, started)
        sender.join(10)
    assert_json_error(answer, 431, "headers_too_large")
    assert answer.first_byte < 1.0


def test_100_000_headers_get_431(node: LimitedNode) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
        sender = send_in_background(sock, GET + b"".join(b"h%d: v\r\n" % i for i in range(100_000)) + b"\r\n")
        answer = read_answer(sock, started)
        sender.join(10)
    assert_json_error(answer, 431, "headers_too_large")
    assert answer.first_byte < 1.0


def test_too_many_small_headers_get_431(node: LimitedNode) -> None:
    answer = exchange(node.port, GET + b"".join(b"h%d: v\r\n" % i for i in range(150)) + b"\r\n")
    body = assert_json_error(answer, 431, "headers_too_large")
    assert "100 header fields" in body["message"]


def test_headers_within_the_limits_are_served(node: LimitedNode) -> None:
    answer = exchange(node.port, GET + b"".join(b"h%d: %s\r\n" % (i, b"v" * 200) for i in range(90))
                      + b"Connection: close\r\n\r\n")
    assert answer.status == 200


# -- JSON errors from the protocol and the app ---------------------------------------------


@pytest.mark.parametrize("length", [b"abc", b"-1", b"1, 2", b"99999999999999999999999"])
def test_malformed_content_length_is_json_400(node: LimitedNode, length: bytes) -> None:
    answer = exchange(node.port, b"POST /ingress/crm HTTP/1.1\r\nHost: t\r\nContent-Length: " + length
                      + b"\r\n\r\n{}")
    assert_json_error(answer, 400, "bad_request")


def test_invalid_http_is_json_400(node: LimitedNode) -> None:
    assert_json_error(exchange(node.port, b"HELLO THERE\r\n\r\n"), 400, "bad_request")


def test_405_has_allow_and_a_json_body(node: LimitedNode) -> None:
    answer = exchange(node.port, b"DELETE /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert_json_error(answer, 405, "method_not_allowed")
    assert answer.headers["allow"] == "GET"


def test_unknown_path_is_json_404_and_no_redirect_uses_the_host_header(node: LimitedNode) -> None:
    answer = exchange(node.port, b"GET /healthz/ HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
    assert_json_error(answer, 404, "not_found")
    assert "location" not in answer.headers


@pytest.mark.parametrize(("query", "name"), [("offset=" + "1" + "0" * 30, "offset"), ("offset=-1", "offset"),
                                             ("limit=0", "limit"), ("limit=1001", "limit"), ("limit=ten", "limit")])
def test_dlq_query_out_of_bounds_is_json_400(node: LimitedNode, query: str, name: str) -> None:
    r = httpx.get(f"{node.url}/dlq?{query}", headers={"X-API-Key": ADMIN_KEY}, timeout=5)
    assert r.status_code == 400
    assert r.json() == {"error": "bad_request", "status": 400,
                        "message": f"{name} must be an integer from {1 if name == 'limit' else 0} to "
                                   f"{1000 if name == 'limit' else 10**9}"}


def test_dlq_query_within_bounds_is_served(node: LimitedNode) -> None:
    r = httpx.get(f"{node.url}/dlq?offset={10**9}&limit=1000", headers={"X-API-Key": ADMIN_KEY}, timeout=5)
    assert r.status_code == 200, r.text
    assert r.json()["items"] == []


def test_an_upgrade_request_is_served_as_http_1_1_and_closed(node: LimitedNode) -> None:
    answer = exchange(node.port, GET + b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                      b"HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n")
    assert answer.status == 200 and answer.json() == {"status": "ok"}


def test_an_upgrade_request_with_a_body_is_refused_not_read_as_empty(node: LimitedNode) -> None:
    answer = exchange(node.port, b"POST /ingress/crm HTTP/1.1\r\nHost: t\r\nX-API-Key: e2e-key\r\n"
                      b"Content-Type: application/json\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
                      b"Content-Length: 16\r\n\r\n{\"order_id\":\"A\"}")
    body = assert_json_error(answer, 400, "bad_request")
    assert "Upgrade" in body["message"]


def test_keep_alive_ends_after_the_request_limit(node: LimitedNode) -> None:
    with httpx.Client(base_url=node.url, timeout=5) as client:
        answers = [client.get("/healthz") for _ in range(3)]
    assert [a.headers.get("connection") for a in answers] == [None, None, "close"]


def test_the_node_log_has_no_traceback_after_abuse(node: LimitedNode) -> None:
    exchange(node.port, b"POST /ingress/crm HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n")
    exchange(node.port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64)  # TLS to a plain port
    exchange(node.port, b"GET /dlq?offset=" + b"9" * 40 + b" HTTP/1.1\r\nHost: t\r\nX-API-Key: "
             + ADMIN_KEY.encode() + b"\r\nConnection: close\r\n\r\n")
    exchange(node.port, b"GET /%ff%fe HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    exchange(node.port, b"GET /\xff\xfe HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    exchange(node.port, b"POST /ingress/crm HTTP/1.1\r\nHost: t\r\nX-API-Key: e2e-key\r\n"
             b"Content-Type: application/json\r\nContent-Length: 50\r\n\r\n{")  # cut off by the body timeout
    assert healthz_seconds(node.port) < 1.0
    log = node.tail(10_000)
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log


# -- connections ---------------------------------------------------------------------------


def _outcome(sock: socket.socket) -> str:
    """What became of a flood connection: answered (status), closed, still open, or reset."""
    sock.setblocking(False)
    try:
        data = sock.recv(4096)
    except BlockingIOError:
        return "open"
    except ConnectionResetError:
        return "reset"
    if not data:
        return "closed"
    answer = parse(data, 0.0)
    assert_json_error(answer, answer.status)
    return str(answer.status)


def test_connection_flood_sheds_slow_clients_and_healthz_stays_fast(node: LimitedNode) -> None:
    flood: list[socket.socket] = []
    latencies: list[float] = []
    try:
        for i in range(FLOOD):
            sock = socket.create_connection(("127.0.0.1", node.port), timeout=5)
            sock.sendall(GET)  # a head that never ends
            flood.append(sock)
            if i % 250 == 249:
                latencies.append(healthz_seconds(node.port))
        latencies += [healthz_seconds(node.port) for _ in range(3)]
        time.sleep(0.3)
        outcomes = Counter(_outcome(s) for s in flood)
    finally:
        for sock in flood:
            sock.close()
    assert max(latencies) < 1.0, latencies
    assert set(outcomes) <= {"503", "408", "closed", "open"}, outcomes
    assert outcomes["503"] >= FLOOD - 300 - 300, outcomes  # at least those beyond the limit (minus timeouts)
    assert "HTTP connection limit reached" in node.tail(10_000)


def test_new_connections_get_503_when_every_connection_is_busy(tmp_path: Path) -> None:
    tiny = _start(tmp_path, MAX_CONNECTIONS="4", BODY_TIMEOUT="10s")
    busy: list[socket.socket] = []
    try:
        for _ in range(4):  # complete heads, bodies still coming: busy, not sheddable
            sock = socket.create_connection(("127.0.0.1", tiny.port), timeout=5)
            sock.sendall(b"POST /ingress/crm HTTP/1.1\r\nHost: t\r\nX-API-Key: e2e-key\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
            busy.append(sock)
        time.sleep(0.3)
        answer = exchange(tiny.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", timeout=5)
        assert_json_error(answer, 503, "overloaded")
        assert answer.headers["retry-after"] == "1"
    finally:
        for sock in busy:
            sock.close()
        tiny.stop()
    assert "HTTP connection limit reached (4 open, limit 4)" in tiny.tail(1000)


def test_healthz_within_1s_with_1000_slow_clients_and_a_64_mib_header(roomy_node: LimitedNode) -> None:
    port = roomy_node.port
    slow: list[socket.socket] = []
    try:
        for _ in range(1_000):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(GET + b"X-Slow: ")
            slow.append(sock)
        big = socket.create_connection(("127.0.0.1", port), timeout=10)
        answers: list[Answer] = []
        reader = threading.Thread(target=lambda: answers.append(read_answer(big, time.monotonic())), daemon=True)
        reader.start()
        sender = send_in_background(big, GET + b"X-Big: " + b"a" * (64 << 20) + b"\r\n\r\n")
        latencies = []
        for _ in range(10):
            latencies.append(healthz_seconds(port))
            time.sleep(0.05)
        reader.join(10)
        sender.join(10)
        big.close()
        assert [a.status for a in answers] == [431]
        assert max(latencies) < 1.0, latencies
        assert all(_outcome(s) == "open" for s in slow)  # all still connected: nobody was shed
    finally:
        for sock in slow:
            sock.close()


# -- start-up ------------------------------------------------------------------------------


def test_banner_shows_the_real_port_once_bound(tmp_path: Path) -> None:
    write_config(tmp_path, DEAD_TARGET)
    proc = subprocess.Popen([SYNCBUS, "run", "--config-dir", str(tmp_path), "--bus", f"embedded://{tmp_path}/b.db",
                             "--port", "0", "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "E2E_KEYS": "k"}, start_new_session=True)
    try:
        assert proc.stderr is not None
        banner = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not banner.startswith("syncbus: "):
            banner = proc.stderr.readline()
            assert banner, "syncbus run ended before printing its banner"
        match = re.fullmatch(r"syncbus: 1 routes, bus embedded://\S+, http://127\.0\.0\.1:(\d+)\n", banner)
        assert match, banner
        port = int(match.group(1))
        assert port not in (0, 8080)
        assert healthz_seconds(port) < 1.0  # listening as soon as the banner is out: no retry needed
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_an_address_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    write_config(tmp_path, DEAD_TARGET)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = subprocess.run([SYNCBUS, "run", "--config-dir", str(tmp_path), "--bus",
                               f"embedded://{tmp_path}/b.db", "--port", str(taken.getsockname()[1]),
                               "--log-level", "warning"], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "E2E_KEYS": "k"})
    assert proc.returncode == 1
    assert re.fullmatch(r"error: cannot listen on 127\.0\.0\.1:\d+: Address already in use\n", proc.stderr)


def test_limits_come_from_the_environment() -> None:
    limits = limits_from_env({"SYNCBUS_HTTP_MAX_HEADER_BYTES": "16KiB", "SYNCBUS_HTTP_HEADER_TIMEOUT": "500ms",
                              "SYNCBUS_HTTP_MAX_CONNECTIONS": "123", "SYNCBUS_HTTP_BODY_TIMEOUT": ""})
    assert (limits.max_header_bytes, limits.header_timeout, limits.max_connections) == (16384, 0.5, 123)
    assert limits.body_timeout == HttpLimits().body_timeout
    for bad in ({"SYNCBUS_HTTP_HEADER_TIMEOUT": "soon"}, {"SYNCBUS_HTTP_MAX_HEADERS": "0"},
                {"SYNCBUS_HTTP_MAX_CONNECTIONS": "1.5"}):
        with pytest.raises(ServerError, match="SYNCBUS_HTTP_"):
            limits_from_env(bad)


def test_the_open_files_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 1024:
        pytest.skip("needs a finite hard limit of at least 1024")
    code = ("import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit("
            "resource.RLIMIT_NOFILE)[1])); from syncbus.ingress.server import raise_fd_limit; "
            "print(raise_fd_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    out = subprocess.run([str(Path(SYNCBUS).parent / "python"), "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == [str(hard), str(hard)]
    assert raise_fd_limit() >= soft


# -- the catch-all, in-process behind real sockets ------------------------------------------


class BrokenRuntime:
    """A runtime whose readiness check fails with text that must not reach the client."""

    async def readiness(self) -> dict[str, bool]:
        raise RuntimeError("secret-detail-7f3a")


def test_an_unexpected_error_is_a_bare_500_and_one_logged_traceback(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    config = GuardedConfig(create_app(BrokenRuntime(), manage_lifecycle=False), HttpLimits(), host="127.0.0.1",
                           port=port, log_config=None, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    caplog.set_level(logging.ERROR)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
    finally:
        server.should_exit = True
        thread.join(10)
    assert r.status_code == 500
    assert r.json() == {"error": "internal_error", "message": "internal error (logged)", "status": 500}
    with_traceback = [rec for rec in caplog.records if rec.exc_info]
    assert len(with_traceback) == 1 and "secret-detail-7f3a" in caplog.text
    assert "secret-detail-7f3a" not in r.text
