"""The state store's change-management part: versions by content, the change audit, shadow results."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from syncbus.changes.history import compile_text, content_hash, record_now, version_of_text
from syncbus.state import Store
from syncbus.state.versions import AmbiguousVersion, ChangeAuditEntry, ShadowResult, VersionNotFound
from tests.changes.flow import LIVE, live_text, shadow_text

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path}/store.db")


def test_a_content_is_recorded_once_and_found_by_number_or_hash(store: Store):
    v4 = version_of_text(live_text(), "mappings/crm-order-to-erp.yaml", T0)
    store.record_version(v4)
    store.record_version(version_of_text(live_text(), "mappings/crm-order-to-erp.yaml", T0 + timedelta(hours=1)))
    [only] = store.versions(LIVE)
    assert (only.version, only.hash, only.content) == (4, content_hash(live_text()), live_text())
    assert only.loaded_at == T0 and only.last_loaded_at == T0 + timedelta(hours=1)
    assert only.changelog["by"] == "zhang" and only.changelog["approved_by"] == "liu (sales-ops)"
    assert store.version_of(LIVE, "4") == only
    assert store.version_of(LIVE, only.hash[:8]) == only
    with pytest.raises(VersionNotFound, match=r"no version '3'.*known: 4"):
        store.version_of(LIVE, "3")
    with pytest.raises(VersionNotFound):
        store.version_of(LIVE, "abc")          # too short to be a hash prefix


def test_same_number_different_content_are_two_versions_the_newest_loaded_wins(store: Store):
    edited = live_text().replace("description: CRM", "description: The CRM")   # edited without a bump
    store.record_version(version_of_text(live_text(), "a.yaml", T0))
    store.record_version(version_of_text(edited, "a.yaml", T0 + timedelta(minutes=5)))
    assert [v.version for v in store.versions(LIVE)] == [4, 4]
    assert store.version_of(LIVE, "4").content == edited
    store.record_version(version_of_text(live_text(), "a.yaml", T0 + timedelta(minutes=9)))  # loaded again
    assert store.version_of(LIVE, "4").content == live_text()


def test_a_hash_prefix_shared_by_two_contents_is_refused(store: Store):
    v = version_of_text(live_text(), "a.yaml", T0)
    store.record_version(replace(v, hash="abcdef" + "1" * 58))
    store.record_version(replace(v, hash="abcdef" + "2" * 58))
    with pytest.raises(AmbiguousVersion, match="matches 2 versions"):
        store.version_of(LIVE, "abcdef")
    assert store.version_of(LIVE, "abcdef2").hash.endswith("2")


def test_record_now_keeps_only_what_was_compiled(tmp_path: Path, store: Store):
    path = tmp_path / "m.yaml"
    path.write_text(live_text(), "utf-8")
    (tmp_path / "schemas").symlink_to(Path(__file__).resolve().parents[2] / "mappings" / "schemas")
    compiled = compile_text(live_text(), str(path), tmp_path)
    path.write_text(shadow_text(), "utf-8")        # changed on disk after it was compiled
    assert record_now(store, [compiled]) == 0 and store.versions(LIVE) == []
    path.write_text(live_text(), "utf-8")
    assert record_now(store, [compiled]) == 1
    assert store.versions(LIVE)[0].path == str(path)


def test_change_audit_round_trip(store: Store):
    seq = store.add_change_audit(ChangeAuditEntry(route=LIVE, action="promote", actor="wang", reason="north",
                                                  approved_by="liu", from_version=4, to_version=5, hash="ab" * 32,
                                                  details={"shadow": "x"}))
    [entry] = store.change_audit(LIVE)
    assert entry.seq == seq and (entry.actor, entry.approved_by, entry.to_version) == ("wang", "liu", 5)
    assert entry.details == {"shadow": "x"} and store.change_audit("other") == []


def _result(i: int, outcome: str, sv: int = 5, lv: int = 4) -> ShadowResult:
    paths = ("A.B",) if outcome == "different" else ()
    detail = {"values": {"A.B": {"live": i, "shadow": -i}}} if paths else None
    return ShadowResult(shadow="s", live_route="live", shadow_version=sv, live_version=lv, record_id=f"r{i}",
                        key=f"k{i}", outcome=outcome, paths=paths, detail=detail, at=T0 + timedelta(seconds=i))


def test_shadow_results_are_exact_after_a_redelivery_and_samples_are_bounded(store: Store):
    batch = [_result(i, "different" if i % 3 == 0 else "same") for i in range(30)]
    store.add_shadow_results(batch, keep=4)
    store.add_shadow_results(batch[:12], keep=4)            # redelivered after a crash: not counted twice
    store.add_shadow_results([_result(100, "same", lv=5)], keep=4)   # the live route was reloaded
    runs = store.shadow_counts(live_route="live")
    assert [(r["shadow_version"], r["live_version"], r["same"], r["different"]) for r in runs] == [
        (5, 5, 1, 0), (5, 4, 20, 10)]
    assert store.shadow_counts(shadow="s") == runs and store.shadow_counts(live_route="nope") == []
    assert len(store.shadow_results("s", 5, 4)) == 30
    samples = store.shadow_samples("s")
    assert [x.record_id for x in samples] == ["r9", "r6", "r3", "r0"]  # replaced, not duplicated; newest first
    assert samples[0].detail == {"values": {"A.B": {"live": 9, "shadow": -9}}}
