"""`syncbus dlq ...` as the real command: paths relative to the config dir, filters, paging, guarded bulk work."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
import textwrap
from pathlib import Path

import pytest

from syncbus.bus.embedded import EmbeddedBus
from syncbus.cli.common import resolve_paths
from syncbus.config import Settings
from syncbus.state import Store, sqlite_url
from tests.dlq.conftest import make_letter

from .conftest import SYNCBUS

ENV = {"SYNCBUS_ACTOR": "tester", "SYNCBUS_BUS": "", "SYNCBUS_STORE": "", "SYNCBUS_CONFIG_DIR": ""}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config dir whose state lives where `syncbus run` puts it by default: var/syncbus.db inside it."""
    root = tmp_path / "cfg"
    (root / "mappings").mkdir(parents=True)
    (root / "connectors").mkdir()
    (root / "mappings" / "orders.yaml").write_text(textwrap.dedent("""\
        mapping: orders
        version: 1
        owner: sales-ops
        source: {topic: crm.orders}
        target: {sink: erp, format: json}
        fields: {ID: order_id}
        """))
    (root / "connectors" / "c.yaml").write_text(textwrap.dedent("""\
        sinks:
          - {name: erp, type: http, url: "http://127.0.0.1:9/x"}
        """))
    (root / "var").mkdir()

    async def create_bus() -> None:
        bus = EmbeddedBus(str(root / "var" / "syncbus.db"))
        await bus.start()
        await bus.stop()

    asyncio.run(create_bus())
    return root


def add(config: Path, n: int, start: int = 0, **fields: object) -> list[str]:
    store = Store(sqlite_url(config / "var" / "syncbus.db"))
    try:
        return [store.add(make_letter(i, **fields)) for i in range(start, start + n)]  # type: ignore[arg-type]
    finally:
        store.close()


def test_resolve_paths_makes_embedded_and_sqlite_paths_relative_to_the_config_dir(tmp_path: Path):
    cfg = tmp_path / "cfg"
    default = resolve_paths(Settings(cfg))
    assert default.bus_url == f"embedded://{cfg.resolve()}/var/syncbus.db"
    assert default.resolved_store_url() == f"sqlite:///{cfg.resolve()}/var/syncbus.db"
    assert resolve_paths(default) == default                                        # idempotent
    relative = resolve_paths(Settings(cfg, "embedded://state/bus.db", "sqlite:///state/store.db"))
    assert relative.bus_url == f"embedded://{cfg.resolve()}/state/bus.db"
    assert relative.store_url == f"sqlite:///{cfg.resolve()}/state/store.db"
    absolute = resolve_paths(Settings(cfg, "embedded:///srv/bus.db", "sqlite:////srv/store.db"))
    assert (absolute.bus_url, absolute.store_url) == ("embedded:///srv/bus.db", "sqlite:////srv/store.db")
    kafka = resolve_paths(Settings(cfg, "kafka://k:9092", None))
    assert kafka.bus_url == "kafka://k:9092"
    assert kafka.store_url == f"sqlite:///{cfg.resolve()}/var/syncbus-store.db"
    pg = resolve_paths(Settings(cfg, "kafka://k:9092", "postgresql://u:p@db/syncbus"))
    assert pg.store_url == "postgresql://u:p@db/syncbus"
    assert resolve_paths(Settings(Path("."))).config_dir == Path(".")   # the config dir itself is kept as given


def test_dead_letter_commands_find_the_state_from_any_directory(cli, config: Path, tmp_path: Path):
    [dl_id] = add(config, 1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = cli("dlq", "list", "--json", "--config-dir", str(config), cwd=elsewhere, env=ENV)
    assert run.code == 0, run.err
    assert [d["id"] for d in json.loads(run.out)] == [dl_id]
    relative = cli("dlq", "list", "--config-dir", "../cfg", cwd=elsewhere, env=ENV)
    assert relative.code == 0 and dl_id in relative.out
    assert not (elsewhere / "var").exists()


@pytest.mark.parametrize("args", [("dlq", "list"), ("dlq", "audit"), ("dlq", "show", "dl-x"), ("trace", "x"),
                                  ("dlq", "replay", "dl-x"), ("dlq", "discard", "dl-x"), ("ledger",)])
def test_no_state_is_an_error_naming_the_path_not_an_empty_store(cli, tmp_path: Path, args: tuple[str, ...]):
    empty = tmp_path / "wrong"
    (empty / "mappings").mkdir(parents=True)
    run = cli(*args, "--config-dir", str(empty), cwd=tmp_path, env=ENV)
    assert run.code == 1, run.out + run.err
    expected = f"no syncbus state at {empty.resolve()}/var/syncbus.db: is --config-dir right?"
    assert expected in run.err
    assert not (empty / "var").exists()


def test_list_filters_and_pages_with_a_key_column(cli, config: Path):
    add(config, 5)
    add(config, 2, start=10, reason="mapping", error="field 'NETWR': not a number")
    args = ("--config-dir", str(config))
    run = cli("dlq", "list", "--route", "orders", "--reason", "delivery", "--limit", "2", "--offset", "2", *args,
              env=ENV)
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0].split()[:4] == ["ID", "ROUTE", "KEY", "REASON"]
    assert [line.split()[2] for line in lines[1:3]] == ["SO-2", "SO-1"]          # newest first
    assert lines[-1] == "showing 3-4 of 5" and "next page: --offset 4" in run.err
    run = cli("dlq", "list", "--json", "--text", "NETWR", "--key", "SO-11", *args, env=ENV)
    assert [d["key"] for d in json.loads(run.out)] == ["SO-11"] and run.err.strip() == "showing 1-1 of 1"
    window = cli("dlq", "list", "--since", "2026-11-20T08:01:00Z", "--until", "2026-11-20T08:03:00", "--sink", "erp",
                 "--json", *args, env=ENV)
    assert [d["key"] for d in json.loads(window.out)] == ["SO-2", "SO-1"]
    assert "no dead letters match" in cli("dlq", "list", "--status", "discarded", *args, env=ENV).out
    bad = cli("dlq", "list", "--status", "lost", *args, env=ENV)
    assert bad.code == 1 and "--status 'lost': expected one of" in bad.err and "Traceback" not in bad.err


def test_replay_refuses_unfixed_mapping_failures_says_how_to_override(cli, config: Path, tmp_path: Path):
    [mapping] = add(config, 1, reason="mapping", value=b'{"order_id": "SO-1", "amount": "five"}')
    [delivery] = add(config, 1, start=1)
    args = ("--config-dir", str(config))
    dry = cli("dlq", "replay", "--route", "orders", "--dry-run", *args, env=ENV)
    assert dry.code == 0
    assert f"REFUSED   {mapping}" in dry.out and f"would replay {delivery}" in dry.out
    run = cli("dlq", "replay", mapping, delivery, *args, env=ENV)
    assert run.code == 1
    assert f"replayed {delivery}" in run.out
    assert f"REFUSED  {mapping}: {mapping} failed its mapping (mapping) and was not edited since" in run.out
    assert "replay anyway with --force" in run.out
    assert run.err.strip() == "1 replayed, 1 refused (need an edit, a newer mapping or --force)"
    fixed = tmp_path / "fixed.json"
    fixed.write_text('{"order_id": "SO-1", "amount": 5}')
    assert cli("dlq", "edit", mapping, "--file", str(fixed), "--reason", "typo", *args, env=ENV).code == 0
    after_edit = cli("dlq", "replay", mapping, *args, env=ENV)
    assert after_edit.code == 0 and f"replayed {mapping}" in after_edit.out
    again = cli("dlq", "replay", mapping, *args, env=ENV)
    assert again.code == 1 and "is replayed, not pending" in again.out


def test_force_replays_an_unfixed_letter(cli, config: Path):
    [mapping] = add(config, 1, reason="schema")
    run = cli("dlq", "replay", mapping, "--force", "--reason", "schema relaxed upstream", "--config-dir", str(config),
              env=ENV)
    assert run.code == 0, run.out + run.err
    audit = json.loads(cli("dlq", "audit", "--id", mapping, "--json", "--config-dir", str(config), env=ENV).out)
    first = audit[0]
    assert (first["action"], first["actor"], first["reason"]) == ("replay", "tester", "schema relaxed upstream")


def test_bulk_replay_at_a_rate_with_a_summary_and_no_bar_off_a_terminal(cli, config: Path):
    ids = add(config, 10)
    run = cli("dlq", "replay", "--route", "orders", "--rate", "20/s", "--config-dir", str(config), env=ENV)
    assert run.code == 0, run.out + run.err
    assert run.out.splitlines() == [f"replayed {i}" for i in ids]
    assert run.err.strip() == "10 replayed"                    # the summary only: stderr is not a terminal
    assert run.seconds >= 0.4                                  # (10 - 2 burst) / 20 per second
    bad = cli("dlq", "replay", "--route", "orders", "--rate", "fast", "--config-dir", str(config), env=ENV)
    assert bad.code == 1 and "rate 'fast'" in bad.err
    both = cli("dlq", "replay", ids[0], "--route", "orders", "--config-dir", str(config), env=ENV)
    assert both.code == 1 and "not both" in both.err


def test_bulk_replay_shows_a_progress_bar_on_a_terminal(config: Path):
    add(config, 5)
    leader, follower = pty.openpty()
    proc = subprocess.run([SYNCBUS, "dlq", "replay", "--route", "orders", "--config-dir", str(config)],
                          stdout=subprocess.PIPE, stderr=follower, env={**os.environ, **ENV}, timeout=60)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    terminal = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0
    assert "replaying" in terminal and "5/5" in terminal and "5 replayed" in terminal


def test_discard_needs_a_reason_for_bulk_and_everything_is_in_the_audit(cli, config: Path):
    ids = add(config, 3)
    args = ("--config-dir", str(config))
    refused = cli("dlq", "discard", "--route", "orders", *args, env=ENV)
    assert refused.code == 1 and "needs a reason" in refused.err
    assert cli("dlq", "discard", ids[0], *args, env=ENV).code == 0           # one letter: a default reason
    run = cli("dlq", "discard", "--route", "orders", "--reason", "test orders", *args, env=ENV)
    assert run.code == 0 and run.out.splitlines() == [f"discarded {i}" for i in ids[1:]]
    audit = json.loads(cli("dlq", "audit", "--action", "discard", "--actor", "tester", "--json", *args, env=ENV).out)
    assert [(a["dead_letter_id"], a["reason"]) for a in audit] == [(ids[0], "discarded via CLI"),
                                                                  (ids[1], "test orders"), (ids[2], "test orders")]
    text = cli("dlq", "audit", "--since", "1h", *args, env=ENV)
    assert text.out.splitlines()[0].split() == ["AT", "ACTOR", "ACTION", "DEAD", "LETTER", "REASON"]
    assert len(text.out.splitlines()) == 4
    assert "no audit entries match" in cli("dlq", "audit", "--actor", "nobody", *args, env=ENV).out
    bad = cli("dlq", "audit", "--action", "delete", *args, env=ENV)
    assert bad.code == 1 and "action 'delete'" in bad.err
