"""``syncbus sync --full SOURCE`` (cli/sources.py), run as the real command against a node's bus and store."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from syncbus.bus.embedded import EmbeddedBus
from syncbus.state.store import Store

from .helpers import numbers, topic_records

SYNCBUS = str(Path(sys.executable).parent / "syncbus")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "connectors").mkdir()
    (tmp_path / "connectors" / "c.yaml").write_text(textwrap.dedent("""\
        sources:
          - {name: gen, type: generate, topic: gen.out, count: 5, batch_size: 2}
          - {name: crm, type: http_ingress, topic: crm.orders}
        sinks:
          - {name: erp, type: http, url_env: ERP_URL}
        """))
    bus = EmbeddedBus(str(tmp_path / "var" / "syncbus.db"))  # the node's state, as `syncbus run` leaves it

    async def touch() -> None:
        await bus.start()
        await bus.stop()

    asyncio.run(touch())
    return tmp_path


def sync(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SYNCBUS, "sync", *args, "--config-dir", str(config)], capture_output=True, text=True,
                          timeout=120)


def test_a_full_load_beside_the_node(config: Path) -> None:
    run = sync("--full", "gen", config=config)  # ERP_URL is unset: only gen's variables matter
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip() == "gen: 5 records in 3 pages onto gen.out; cursor now 5"
    store = Store(f"sqlite:///{config / 'var' / 'syncbus.db'}")
    store.put_checkpoint("gen", 9)  # the running node is further along meanwhile
    store.close()
    again = sync("--full", "gen", config=config)
    assert again.stdout.strip() == "gen: 5 records in 3 pages onto gen.out; cursor now 9"  # never moves back

    async def read() -> list[int]:
        bus = EmbeddedBus(str(config / "var" / "syncbus.db"))
        await bus.start()
        try:
            return numbers(await topic_records(bus, "gen.out"))
        finally:
            await bus.stop()

    assert asyncio.run(read()) == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]


@pytest.mark.parametrize(("args", "message"), [
    (("gen",), "say --full"),
    (("--full", "gne"), "no poll source named 'gne' (did you mean 'gen'? poll sources: gen)"),
    (("--full", "crm"), "source 'crm' is a http_ingress source: records are pushed to it"),
])
def test_what_cannot_be_loaded_is_refused(config: Path, args: tuple[str, ...], message: str) -> None:
    run = sync(*args, config=config)
    assert run.returncode == 1
    assert message in run.stderr and "Traceback" not in run.stderr
