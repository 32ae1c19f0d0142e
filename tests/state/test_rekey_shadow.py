"""`syncbus keys rotate` re-seals shadow samples too: with the old key gone, `shadow report --examples` reads them."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from syncbus.state import Store, crypto, sqlite_url
from syncbus.state.rekey import rotate_store
from syncbus.state.versions import ShadowResult
from tests.cli.conftest import run_cli

PHONE = "13812345678"
ENV = {"SYNCBUS_ACTOR": "tester", "SYNCBUS_BUS": "kafka://127.0.0.1:9", "SYNCBUS_STORE": "",
       "SYNCBUS_CONFIG_DIR": "", "SYNCBUS_ENCRYPT_BUS": ""}


def key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


K1, K2 = key(), key()


def codec(spec: str) -> crypto.Codec:
    return crypto.codec_from_env({"SYNCBUS_DATA_KEYS": spec})


def sample(record_id: str) -> ShadowResult:
    return ShadowResult(shadow="orders-v2", live_route="orders", shadow_version=2, live_version=1,
                        record_id=record_id, key=record_id, outcome="different", paths=("phone",),
                        detail={"values": {"phone": [PHONE, PHONE + "0"]}, "input": f'{{"phone": "{PHONE}"}}'})


def fill(url: str) -> None:
    """Two samples in clear (written before keys were set) and two sealed with k1."""
    store = Store(url)
    try:
        with crypto.using(crypto.Codec()):
            store.add_shadow_results([sample("clear-1"), sample("clear-2")])
        with crypto.using(codec(f"k1:{K1}")):
            store.add_shadow_results([sample("k1-1"), sample("k1-2")])
    finally:
        store.close()


def read_back(url: str) -> dict[str, object]:
    """The samples' details by record id, with k2 as the only key (k1 removed)."""
    store = Store(url)
    try:
        with crypto.using(codec(f"k2:{K2}")):
            return {s.record_id: s.detail for s in store.shadow_samples("orders-v2")}
    finally:
        store.close()


def stored_details(url: str) -> list[str]:
    """The ``detail`` column as the database holds it."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [str(r[0]) for r in conn.execute(text("SELECT detail FROM shadow_samples"))]
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return sqlite_url(tmp_path / "store.db")


def test_rotation_reseals_shadow_samples_clear_and_old_key(url: str) -> None:
    fill(url)
    assert sum(PHONE in d for d in stored_details(url)) == 2          # the two written before keys
    with pytest.raises(crypto.MissingDataKey):
        read_back(url)                                               # k1 is gone: unreadable before rotating
    report = rotate_store(url, codec(f"k2:{K2},k1:{K1}"))
    assert (report.resealed["shadow_samples"], report.current["shadow_samples"]) == (4, 0)
    again = rotate_store(url, codec(f"k2:{K2},k1:{K1}"))
    assert (again.resealed["shadow_samples"], again.current["shadow_samples"]) == (0, 4)  # idempotent
    expected = sample("x").detail
    assert read_back(url) == {r: expected for r in ("clear-1", "clear-2", "k1-1", "k1-2")}
    details = stored_details(url)
    assert len(details) == 4 and not any(PHONE in d for d in details)
    assert all("$sbx1" in d for d in details)


def test_no_plaintext_left_in_the_sqlite_file(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    fill(sqlite_url(db))
    store = Store(sqlite_url(db))
    with store._tx() as conn:   # overwritten values are zeroed whatever SQLite's build default
        assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() == 1
    store.close()
    rotate_store(sqlite_url(db), codec(f"k2:{K2},k1:{K1}"))
    on_disk = b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal")) if p.exists())
    assert PHONE.encode() not in on_disk


def test_keys_rotate_then_shadow_report_examples_without_the_old_key(tmp_path: Path) -> None:
    """The commands as people run them: rotate with k2 first, drop k1, the report's examples still open."""
    url = sqlite_url(tmp_path / "store.db")
    fill(url)
    store_args = ("--store", url, "--config-dir", str(tmp_path))
    run = run_cli("keys", "rotate", "--json", *store_args, env={**ENV, "SYNCBUS_DATA_KEYS": f"k2:{K2},k1:{K1}"})
    assert run.code == 0, run.err
    assert json.loads(run.out)["resealed"]["shadow_samples"] == 4
    report = run_cli("shadow", "report", "orders", "--json", "--examples", "10", *store_args,
                 env={**ENV, "SYNCBUS_DATA_KEYS": f"k2:{K2}"})
    assert report.code == 0, report.err
    examples = json.loads(report.out)["examples"]
    assert len(examples) == 4
    assert PHONE in json.dumps(examples)
