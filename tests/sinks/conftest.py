"""Fixtures for the sink tests: a live target server and a Delivery factory."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from syncbus.sinks.base import Delivery
from tests.sinks.target_server import TargetServer


@pytest.fixture(scope="session")
def shared_target() -> Iterator[TargetServer]:
    with TargetServer() as server:
        yield server


@pytest.fixture
def target(shared_target: TargetServer) -> Iterator[TargetServer]:
    """The session's target server, reset to a clean state for this test."""
    shared_target.reset()
    yield shared_target
    shared_target.reset()


@pytest.fixture
def dead_url() -> Iterator[str]:
    """A URL on 127.0.0.1 where nothing listens: the port is bound (so nobody else takes it) but not listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/orders"
    finally:
        sock.close()


def _delivery(**overrides: Any) -> Delivery:
    values: dict[str, Any] = {
        "route": "crm-to-erp", "mapping_version": 3, "sink": "erp", "record_id": "rec-1", "key": "order-42",
        "idempotency_key": "crm-to-erp:order-42:rec-1", "body": b'{"VBELN": "42"}',
        "content_type": "application/json", "payload": {"VBELN": "42"},
    }
    values.update(overrides)
    return Delivery(**values)


@pytest.fixture
def make_delivery() -> Callable[..., Delivery]:
    return _delivery
