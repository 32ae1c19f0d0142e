"""A real, scriptable HTTP target system for tests (uvicorn on 127.0.0.1, in a background thread).

It records every request and answers from a script, so a test can say
"503 twice, then 200", "sleep past the client's timeout", "429 with
Retry-After: 1", "require this bearer token", or act as an OAuth2 token
endpoint. Running in its own thread with its own event loop, it serves sync
tests and async tests alike (the test's loop is never blocked by it)::

    with TargetServer() as target:                  # or: async with TargetServer() as target
        target.script(503, 503, Reply(200, {"ok": True}))
        ... deliver to target.url_for("/orders") ...
        assert [r.status for r in target.requests] == [503, 503, 200]

    token_url = target.oauth(client_id="syncbus", client_secret="s3cret", expires_in=60)
    # now every non-token path needs "Authorization: Bearer <a token it issued>"

Run it on its own (for benchmarks or manual tests): ``python tests/sinks/target_server.py --port 8099``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import uvicorn

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(slots=True)
class Reply:
    """A canned answer. ``body``: bytes/str as is, dict/list as JSON. ``delay``: seconds before answering."""

    status: int = 200
    body: bytes | str | dict[str, Any] | list[Any] = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0

    def encode(self) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        headers = {k.lower(): v for k, v in self.headers.items()}
        if isinstance(self.body, dict | list):
            content = json.dumps(self.body).encode()
            headers.setdefault("content-type", "application/json")
        elif isinstance(self.body, str):
            content = self.body.encode()
            headers.setdefault("content-type", "text/plain; charset=utf-8")
        else:
            content = self.body
        headers["content-length"] = str(len(content))
        return content, [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


def _reply(value: Reply | int) -> Reply:
    return value if isinstance(value, Reply) else Reply(int(value))


@dataclass(slots=True)
class RecordedRequest:
    """One request as the target saw it. Header names are lower-case; ``time`` is time.monotonic()."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    time: float
    client: tuple[str, int] | None
    status: int = 0  # the answer chosen on arrival (a delayed answer is already set while it waits)

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(self.text, keep_blank_values=True).items()}


class TargetServer:
    """A scriptable HTTP server on a free port of 127.0.0.1; see the module docstring."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 default: Reply | int | None = None, *, uvloop: bool = False) -> None:
        self.host = host
        self._uvloop = uvloop  # faster event loop, for benchmarks
        self._requested_port = port
        self.port = 0
        self.default: Reply = _reply(default) if default is not None else Reply(200, {"ok": True})
        self._lock = threading.Condition()
        self._requests: list[RecordedRequest] = []
        self._scripts: dict[str | None, deque[Reply]] = {}
        # auth of the protected (non-token) paths: token -> server-side expiry (monotonic)
        self._auth_required = False
        self._accepted: dict[str, float] = {}
        self._issued: set[str] = set()
        self._token_path: str | None = None
        self._client_id = ""
        self._client_secret = ""
        self.token_lifetime: float = 3600.0
        self._token_delay = 0.0
        self._token_numbers = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._sock: socket.socket | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url_for(self, path: str = "/") -> str:
        return self.url + (path if path.startswith("/") else "/" + path)

    def start(self) -> TargetServer:
        if self._thread is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        self.port = sock.getsockname()[1]
        self._sock = sock
        config = uvicorn.Config(self, log_level="warning", access_log=False, lifespan="off",
                                loop="asyncio", timeout_keep_alive=30)
        self._server = uvicorn.Server(config)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                assert self._server is not None
                factory = None
                if self._uvloop:
                    import uvloop

                    factory = uvloop.new_event_loop
                with asyncio.Runner(loop_factory=factory) as runner:
                    runner.run(self._server.serve(sockets=[sock]))
            except BaseException as exc:  # surfaced by start() below
                failure.append(exc)

        self._thread = threading.Thread(target=run, name=f"target-server-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if failure or not self._thread.is_alive():
                raise RuntimeError(f"target server did not start: {failure[0] if failure else 'thread died'}")
            if time.monotonic() > deadline:
                raise RuntimeError("target server did not start within 10s")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        server.force_exit = True  # do not wait for handlers that sleep on purpose
        thread.join(timeout=10)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None

    def __enter__(self) -> TargetServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> TargetServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    # ------------------------------------------------------------------ scripting

    def script(self, *replies: Reply | int, path: str | None = None) -> None:
        """Queue answers, used in order; then the default answer. ``path`` limits them to one path.

        Without ``path`` they serve every path except the OAuth2 token endpoint.
        """
        with self._lock:
            self._scripts.setdefault(path, deque()).extend(_reply(r) for r in replies)

    def set_default(self, reply: Reply | int) -> None:
        """The answer once the script is used up (initially 200 {"ok": true})."""
        with self._lock:
            self.default = _reply(reply)

    def require_bearer(self, token: str) -> None:
        """Protected paths answer 401 unless ``Authorization: Bearer <token>`` (or an issued token)."""
        with self._lock:
            self._auth_required = True
            self._accepted[token] = float("inf")

    def oauth(self, path: str = "/oauth/token", *, client_id: str = "syncbus",
              client_secret: str = "s3cret", expires_in: float = 3600.0, delay: float = 0.0) -> str:
        """Serve an OAuth2 client-credentials token endpoint at ``path``; return its URL.

        Tokens are "token-1", "token-2", … valid (server side) for ``expires_in``
        seconds; every other path then requires one of them. Client credentials
        are accepted as HTTP Basic or as form fields. ``delay``: seconds before
        each token answer (a slow identity provider).
        """
        with self._lock:
            self._token_delay = delay
            self._token_path = path
            self._client_id, self._client_secret = client_id, client_secret
            self.token_lifetime = expires_in
            self._auth_required = True
        return self.url_for(path)

    def revoke_tokens(self) -> None:
        """Every token issued so far stops working (the target answers 401)."""
        with self._lock:
            for token in self._issued:
                self._accepted.pop(token, None)
            self._issued.clear()

    def reset(self) -> None:
        """Forget requests, scripts, auth and tokens; keep running.

        Stopping uvicorn takes ~0.2s (fixed sleeps in its shutdown), so test
        suites share one server per session and reset it before each test.
        """
        with self._lock:
            self._token_numbers = itertools.count(1)
            self.token_lifetime = 3600.0
            self._token_delay = 0.0
            self._requests.clear()
            self._scripts.clear()
            self._auth_required = False
            self._accepted.clear()
            self._issued.clear()
            self._token_path = None
            self.default = Reply(200, {"ok": True})

    # ------------------------------------------------------------------ inspection

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    @property
    def token_requests(self) -> list[RecordedRequest]:
        return self.requests_to(self._token_path) if self._token_path else []

    def wait_for(self, count: int, timeout: float = 5.0, path: str | None = None) -> list[RecordedRequest]:
        """Block until at least ``count`` requests (to ``path``) have arrived; raise on timeout."""
        deadline = time.monotonic() + timeout

        def matching() -> list[RecordedRequest]:
            return [r for r in self._requests if path is None or r.path == path]

        with self._lock:
            while len(found := matching()) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"expected {count} requests{f' to {path}' if path else ''}, "
                                       f"got {len(found)} within {timeout}s")
                self._lock.wait(left)
            return found

    async def wait_for_async(self, count: int, timeout: float = 5.0,
                             path: str | None = None) -> list[RecordedRequest]:
        return await asyncio.to_thread(self.wait_for, count, timeout, path)

    # ------------------------------------------------------------------ ASGI app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        record = RecordedRequest(
            method=scope["method"], path=scope["path"],
            query=scope.get("query_string", b"").decode("latin-1"),
            headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
            body=b"".join(chunks), time=time.monotonic(), client=scope.get("client"))
        with self._lock:
            self._requests.append(record)
            reply = self._decide(record)
            record.status = reply.status
            self._lock.notify_all()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        content, headers = reply.encode()
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    def _decide(self, req: RecordedRequest) -> Reply:
        """Pick the answer (called with the lock held)."""
        queue = self._scripts.get(req.path)
        if queue:
            return queue.popleft()
        if req.path == self._token_path:
            return self._issue_token(req)
        if self._auth_required and not self._authorized(req):
            return Reply(401, {"error": "invalid_token"},
                         {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        queue = self._scripts.get(None)
        if queue:
            return queue.popleft()
        return self.default

    def _authorized(self, req: RecordedRequest) -> bool:
        value = req.headers.get("authorization", "")
        if not value.startswith("Bearer "):
            return False
        expiry = self._accepted.get(value.removeprefix("Bearer "))
        return expiry is not None and time.monotonic() < expiry

    def _issue_token(self, req: RecordedRequest) -> Reply:
        form = req.form()
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        basic = req.headers.get("authorization", "")
        if basic.startswith("Basic "):
            with contextlib.suppress(ValueError):
                client_id, _, client_secret = base64.b64decode(basic[6:]).decode().partition(":")
        if req.method != "POST":
            return Reply(405, {"error": "invalid_request"})
        if form.get("grant_type") != "client_credentials":
            return Reply(400, {"error": "unsupported_grant_type"})
        if (client_id, client_secret) != (self._client_id, self._client_secret):
            return Reply(401, {"error": "invalid_client", "error_description": "bad client credentials"})
        token = f"token-{next(self._token_numbers)}"
        self._accepted[token] = time.monotonic() + self.token_lifetime
        self._issued.add(token)
        return Reply(200, {"access_token": token, "token_type": "Bearer", "expires_in": self.token_lifetime},
                     delay=self._token_delay)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="run the scriptable test target on its own")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--uvloop", action="store_true", help="use uvloop (faster)")
    args = parser.parse_args()
    server = TargetServer(args.host, args.port, uvloop=args.uvloop).start()
    print(server.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
