"""The console on a node of several workers: one login holds whichever worker a connection reaches.

``syncbus run --workers 2`` on the embedded bus: both workers listen on one
port (SO_REUSEPORT) and the kernel hands each new connection to one of
them. A browser opens new connections whenever it likes, so every request
here goes out on a fresh connection (a new ``httpx.Client`` carrying the
cookies). Sessions kept in one worker's memory failed this: about half the
pages came back as "not logged in".

Which worker served a connection is read from /proc (the server side of the
connection is a socket of exactly one worker process), so the test can
insist that both did.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import Node, wait_until, write_config

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to see the workers")

WORKERS = 2
REQUESTS = 30
ALICE_KEY = "alice-workers-key"
PAGES = ["/console/routes", "/console/dead-letters", "/console/audit", "/console/trace?id=x", "/console/catalog",
         "/console/ledger"]


class ConsoleNode(Node):
    def env(self) -> dict[str, str]:
        return {**super().env(), "SYNCBUS_ADMIN_KEYS": f"alice:{ALICE_KEY}"}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ConsoleNode]:
    root = write_config(tmp_path / "config", "http://127.0.0.1:9/unused", attempts=1)
    n = ConsoleNode(root, f"embedded://{tmp_path}/syncbus.db", f"sqlite:///{tmp_path}/syncbus.db",
                    extra_args=["--workers", str(WORKERS)])
    n.start()
    try:
        # /readyz answers once worker 0 listens; the start-up line comes once every worker does
        wait_until(lambda: "routes, bus " in n.tail(200), timeout=60, what="every worker started")
        assert len(workers(n)) == WORKERS, n.tail()
        yield n
    finally:
        assert n.stop() == 0, n.tail()


def workers(node: Node) -> set[int]:
    assert node.proc is not None
    return {int(p) for p in Path(f"/proc/{node.proc.pid}/task/{node.proc.pid}/children").read_text().split()}


def served_by(node: Node, response: httpx.Response) -> int:
    """The worker holding the server side of ``response``'s connection (which must still be open)."""
    client_port = response.extensions["network_stream"].get_extra_info("client_addr")[1]
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            local, remote = int(cols[1].rsplit(":", 1)[1], 16), int(cols[2].rsplit(":", 1)[1], 16)
            if local == node.port and remote == client_port:
                inodes.add(f"socket:[{cols[9]}]")
    owners = set()
    for pid in workers(node):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if fd.readlink().name in inodes:
                    owners.add(pid)
            except OSError:
                continue  # closed while we looked
    assert len(owners) == 1, f"connection from port {client_port}: owners {owners}"
    return owners.pop()


def fresh(node: Node, cookies: httpx.Cookies) -> httpx.Client:
    """A new client, hence a new connection: the kernel picks the worker again."""
    return httpx.Client(base_url=node.url, cookies=cookies, timeout=30)


def logged_in_as(response: httpx.Response) -> str | None:
    m = re.search(r'id="actor">([^<]+)<', response.text)
    return m.group(1) if response.status_code == 200 and m else None


def login(node: Node) -> tuple[httpx.Cookies, int]:
    """Log in through the form (its CSRF token in a double-submit cookie); the cookies and the worker that did it."""
    with httpx.Client(base_url=node.url, timeout=30) as client:
        page = client.get("/console/login")
        m = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert m, page.text
        r = client.post("/console/login", data={"csrf": m.group(1), "key": ALICE_KEY, "next": ""})
        assert r.status_code == 303 and r.headers["location"] == "/console/routes", r.text
        return httpx.Cookies(client.cookies), served_by(node, r)


def test_a_console_login_holds_on_every_worker_until_logout(node: ConsoleNode):
    cookies, login_worker = login(node)

    # The page after the login redirect, on the OTHER worker: it knows the session and shows its message.
    for _ in range(200):
        with fresh(node, cookies) as client:
            probe = client.get("/console/assets/console.css")   # reads no session: just finds out the worker
            if served_by(node, probe) == login_worker:
                continue
            first = client.get("/console/routes")               # same connection, so the same (other) worker
            assert logged_in_as(first) == "alice", (first.status_code, first.headers.get("location"))
            assert "signed in as alice" in first.text
            break
    else:
        pytest.fail("200 fresh connections all reached the worker that served the login")

    served: Counter[int] = Counter()
    csrf = ""
    for i in range(REQUESTS):
        with fresh(node, cookies) as client:
            r = client.get(PAGES[i % len(PAGES)])
            served[served_by(node, r)] += 1
            assert logged_in_as(r) == "alice", (i, PAGES[i % len(PAGES)], r.status_code, r.headers.get("location"))
            csrf = re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)  # type: ignore[union-attr]
    assert set(served) == workers(node), f"not every worker served a page: {served}"

    with fresh(node, cookies) as client:                        # log out on some worker…
        r = client.post("/console/logout", data={"csrf": csrf})
        assert r.status_code == 303 and r.headers["location"] == "/console/login", r.text

    served.clear()
    for i in range(REQUESTS):                                   # …and it is over on all of them
        with fresh(node, cookies) as client:                    # (the old cookie, as a copied cookie would be)
            r = client.get(PAGES[i % len(PAGES)])
            served[served_by(node, r)] += 1
            assert r.status_code == 303 and r.headers["location"].startswith("/console/login"), (i, r.status_code)
    assert set(served) == workers(node), f"not every worker answered after the logout: {served}"


def test_failed_logins_are_counted_by_the_node_not_by_each_worker(node: ConsoleNode):
    """Ten wrong keys over connections both workers served, then the right key: refused (429) on every worker."""
    from syncbus.console.sessions import LOGIN_FAILURES

    def attempt(key: str) -> tuple[int, int]:
        with httpx.Client(base_url=node.url, timeout=30) as client:
            page = client.get("/console/login")
            m = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert m, page.text
            r = client.post("/console/login", data={"csrf": m.group(1), "key": key, "next": ""})
            return r.status_code, served_by(node, r)

    wrong = [attempt(f"guess-{i}") for i in range(LOGIN_FAILURES)]
    assert {status for status, _w in wrong} == {403}
    assert {w for _s, w in wrong} == workers(node), f"the guesses did not reach every worker: {wrong}"
    refused: Counter[int] = Counter()
    for _ in range(40):
        status, worker = attempt(ALICE_KEY)
        assert status == 429, (status, worker)
        refused[worker] += 1
        if set(refused) == workers(node):
            break
    assert set(refused) == workers(node), f"not every worker refused: {refused}"
