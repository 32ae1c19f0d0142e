from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from syncbus.bus.embedded import EmbeddedBus
from syncbus.metrics import Metrics

from .helpers import State


@pytest.fixture
def state(tmp_path: Path) -> Iterator[State]:
    s = State(f"sqlite:///{tmp_path / 'state.db'}")
    yield s
    s.close()


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[EmbeddedBus]:
    b = EmbeddedBus(str(tmp_path / "bus.db"))
    await b.start()
    yield b
    await b.stop()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()
