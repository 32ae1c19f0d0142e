"""Encryption at rest (state/crypto.py): what reaches the disk, legacy rows, missing keys, rotation, the bus."""

from __future__ import annotations

import base64
import os
import sqlite3
from pathlib import Path

import pytest

from syncbus.bus.embedded import EmbeddedBus
from syncbus.state import DeadLetter, Store, TraceEvent, crypto, sqlite_url
from syncbus.state.rekey import RotationReport, rotate_bus, rotate_store

PHONE = b"13812345678"
PAYLOAD = b'{"order_id": "SO-1", "customer": {"phone": "13812345678"}}'


def key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


K1, K2 = key(), key()


def codec(spec: str, encrypt_bus: bool = False) -> crypto.Codec:
    return crypto.codec_from_env({"SYNCBUS_DATA_KEYS": spec, "SYNCBUS_ENCRYPT_BUS": "1" if encrypt_bus else ""})


def on_disk(db: Path) -> bytes:
    """Every byte SQLite keeps for the database: the file and its write-ahead log."""
    return b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal")) if p.exists())


def letter(value: bytes = PAYLOAD, error: str = "boom") -> DeadLetter:
    return DeadLetter(route="r", reason="delivery", error=error, value=value, record_id=os.urandom(4).hex(),
                      topic="t", headers={"content-type": "application/json"})


def test_data_keys_are_checked() -> None:
    for spec, message in [("k1", "expected KID:BASE64KEY"), ("k1:notbase64!", "not valid base64"),
                          (f"k1:{base64.b64encode(b'short').decode()}", "AES-256 needs 32"),
                          (f"k1:{K1},k1:{K2}", "twice"), ("bad id:" + K1, "expected KID")]:
        with pytest.raises(crypto.DataKeyError, match=message) as info:
            codec(spec)
        assert K1 not in str(info.value)
    with pytest.raises(crypto.DataKeyError, match="needs SYNCBUS_DATA_KEYS"):
        crypto.codec_from_env({"SYNCBUS_ENCRYPT_BUS": "1"})


def test_dead_letters_audit_and_trace_are_sealed_on_disk(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    with crypto.using(codec(f"k1:{K1}")):
        store = Store(sqlite_url(db))
        dl_id = store.add(letter(error=f"HTTP 422: rejected {{'TEL': '{PHONE.decode()}'}}"))  # a target's echo
        store.edit(dl_id, PAYLOAD.replace(b"SO-1", b"SO-1b"), "alice", "fix")
        assert store.get(dl_id).error == f"HTTP 422: rejected {{'TEL': '{PHONE.decode()}'}}"
        assert [d.id for d in store.list(text="rejected {'TEL'")] == [dl_id]   # searched after opening
        store.add_trace([TraceEvent(record_id="rec-1", stage="received", detail={"phone": PHONE.decode()})])
        assert store.get(dl_id).value == PAYLOAD.replace(b"SO-1", b"SO-1b")
        [edit] = [a for a in store.audit(dl_id) if a.action == "edit"]
        assert "13812345678" in edit.details["before"]
        assert store.trace("rec-1")[0].detail == {"phone": "13812345678"}
        store.close()
    assert PHONE not in on_disk(db)
    with sqlite3.connect(db) as conn:
        assert bytes(conn.execute("SELECT value FROM dead_letters").fetchone()[0]).startswith(b"SBX1|k1|")


def test_legacy_rows_pass_through_and_a_missing_key_is_an_error_not_a_blank(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    store = Store(sqlite_url(db))
    with crypto.using(crypto.Codec()):
        legacy = store.add(letter())
    with crypto.using(codec(f"k1:{K1}")):
        sealed = store.add(letter())
        assert store.get(legacy).value == PAYLOAD        # written before encryption: read as it is
    with crypto.using(crypto.Codec()), pytest.raises(crypto.MissingDataKey, match=r"data key 'k1'.*not set"):
        store.get(sealed)
    with crypto.using(codec(f"k2:{K2}")), pytest.raises(crypto.MissingDataKey, match="add it to SYNCBUS_DATA_KEYS"):
        store.list()
    with crypto.using(codec(f"k1:{K2}")), pytest.raises(crypto.UndecryptableValue, match="does not decrypt"):
        store.get(sealed)
    store.close()


def test_rotation_reseals_every_row_with_the_first_key(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    store = Store(sqlite_url(db))
    with crypto.using(crypto.Codec()):
        store.add(letter())                                       # legacy plaintext
    with crypto.using(codec(f"k1:{K1}")):
        ids = [store.add(letter()) for _ in range(3)]
        store.edit(ids[0], PAYLOAD, "alice", "fix")
        store.add_trace([TraceEvent(record_id="rec-1", stage="received", detail={"n": 1})])
    rotated = codec(f"k2:{K2},k1:{K1}")
    report = rotate_store(sqlite_url(db), rotated)
    assert report.resealed["dead_letters"] == 4 and report.resealed["dlq_audit"] == 1
    assert report.resealed["trace_events"] == 1
    assert rotate_store(sqlite_url(db), rotated).resealed["dead_letters"] == 0   # idempotent
    with crypto.using(codec(f"k2:{K2}")):                          # the old key can go now
        assert all(d.value == PAYLOAD for d in store.list())
        assert store.trace("rec-1")[0].detail == {"n": 1}
        assert next(a for a in store.audit(ids[0]) if a.action == "edit").details["after_encoding"] == "utf-8"
    store.close()
    assert PHONE not in on_disk(db)


async def test_embedded_bus_values_sealed_with_encrypt_bus(tmp_path: Path) -> None:
    path = tmp_path / "bus.db"
    with crypto.using(codec(f"k1:{K1}", encrypt_bus=True)):
        bus = EmbeddedBus(str(path))
        await bus.start()
        await bus.publish("t", PAYLOAD, "SO-1", {"syncbus-id": "r1"})
        consumer = bus.consumer("g", ["t"])
        await consumer.start()
        [record] = await consumer.fetch(10, 1.0)
        assert record.value == PAYLOAD
        await consumer.stop()
        await bus.stop()
    assert PHONE not in on_disk(path)
    report = RotationReport()
    rotate_bus(path, codec(f"k2:{K2},k1:{K1}"), report, seal_plaintext=False)
    assert report.resealed == {"bus": 1}
    with sqlite3.connect(path) as conn:
        assert bytes(conn.execute("SELECT value FROM log").fetchone()[0]).startswith(b"SBX1|k2|")
