"""A real `syncbus run` node with named admin keys and a scriptable target, for the console tests."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.harness import Node, order, wait_until, write_config
from tests.sinks.target_server import TargetServer

ALICE_KEY = "alice-console-key"
BOB_KEY = "bob-console-key"
CAROL_KEY = "carol-read-only-key"
DAVE_KEY = "dave-feeds-sources-only"
ROUTE = "orders-to-erp"


class ConsoleNode(Node):
    """The e2e node with two named admin keys, so the audit shows who did what."""

    def env(self) -> dict[str, str]:
        return {**super().env(),
                "SYNCBUS_ADMIN_KEYS": f"alice:{ALICE_KEY},bob:{BOB_KEY},carol:{CAROL_KEY},dave:{DAVE_KEY}",
                "SYNCBUS_KEY_SCOPES": "carol=dlq:read,dave=ingress:*", "SYNCBUS_MASK_FIELDS": "customer"}


@pytest.fixture(scope="module")
def target() -> Iterator[TargetServer]:
    with TargetServer() as server:
        yield server


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, target: TargetServer) -> Iterator[ConsoleNode]:
    root = write_config(tmp_path_factory.mktemp("console") / "config", target.url_for("/erp/orders"), attempts=1)
    n = ConsoleNode(root, f"embedded://{root}/var/syncbus.db", f"sqlite:///{root}/var/syncbus.db")
    n.start()
    yield n
    n.stop()


def mapping_dead_letter(node: Node, seq: int, **extra: object) -> str:
    """Post an order whose amount cannot be mapped; returns the id of its (pending, reason mapping) letter."""
    with httpx.Client(timeout=10) as client:
        rid = node.post(client, order(seq, amount="five", **extra)).json()["id"]
    found: list[str] = []

    def letter() -> bool:
        items = httpx.get(f"{node.url}/dlq", params={"text": "five"}, headers={"X-API-Key": ALICE_KEY},
                          timeout=5).json()["items"]
        found[:] = [d["id"] for d in items if d["record_id"] == rid]
        return bool(found)

    wait_until(letter, timeout=30, what=f"dead letter of record {rid}")
    return found[0]


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF field on the page"
    return m.group(1)


def login(node: Node, key: str = ALICE_KEY) -> httpx.Client:
    """A client holding a console session (cookies), logged in through the form like a browser."""
    client = httpx.Client(base_url=node.url, timeout=10)
    page = client.get("/console/login")
    r = client.post("/console/login", data={"csrf": csrf_of(page.text), "key": key, "next": ""})
    assert r.status_code == 303, r.text
    return client


@pytest.fixture
def session(node: ConsoleNode) -> Iterator[httpx.Client]:
    client = login(node)
    yield client
    client.close()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives headless Chromium through Selenium")
