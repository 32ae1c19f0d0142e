"""Promote and rollback as file operations: what is written, what is refused, what is audited."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncbus.changes.history import content_hash, version_of_text
from syncbus.changes.switch import (
    CannotRewrite,
    ChangeError,
    NoShadow,
    NotApproved,
    NothingToDo,
    NotNewer,
    promote,
    promoted_text,
    rollback,
)
from syncbus.state import Store
from syncbus.state.versions import VersionNotFound
from tests.changes.flow import LIVE, SHADOW, live_text, shadow_text, write_flow


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    return write_flow(tmp_path / "config", "http://127.0.0.1:9")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path}/store.db")


def files(cfg: Path) -> list[str]:
    return sorted(p.name for p in (cfg / "mappings").iterdir() if p.is_file())


def test_promote_writes_the_shadow_as_the_live_file_and_removes_the_shadow(cfg: Path, store: Store):
    shadow = shadow_text().replace("shadow_of: crm-order-to-erp\n", "shadow_of: crm-order-to-erp   # candidate\n")
    (cfg / "mappings" / f"{SHADOW}.yaml").write_text(shadow, "utf-8")
    done = promote(store, cfg, LIVE, actor="wang", reason="")
    live = (cfg / "mappings" / f"{LIVE}.yaml").read_text("utf-8")
    # exactly two lines differ from the shadow: the name, and shadow_of is gone; comments stay
    assert live == shadow.replace(f"mapping: {SHADOW}\n", f"mapping: {LIVE}\n").replace(
        "shadow_of: crm-order-to-erp   # candidate\n", "")
    assert "# yaml-language-server" in live and 'north: "3500"' in live
    assert files(cfg) == [f"{LIVE}.yaml"]                       # no temporary file left behind
    assert (done.from_version, done.to_version, done.approved_by) == (4, 5, "liu (sales-ops)")
    [audit] = store.change_audit(LIVE)
    assert (audit.action, audit.actor, audit.approved_by, audit.hash) == ("promote", "wang", "liu (sales-ops)",
                                                                          content_hash(live))
    assert audit.reason == "north moves to sales org 3500"      # the changelog's reason when none is given
    assert audit.details["shadow"] == SHADOW


def test_promote_by_the_shadows_name_and_with_an_approver_given(cfg: Path, store: Store):
    (cfg / "mappings" / f"{SHADOW}.yaml").write_text(shadow_text(approved_by=None), "utf-8")
    with pytest.raises(NotApproved):
        promote(store, cfg, SHADOW, actor="wang")
    assert files(cfg) == sorted([f"{LIVE}.yaml", f"{SHADOW}.yaml"])     # refused: nothing changed
    done = promote(store, cfg, SHADOW, actor="wang", approved_by="chen", reason="go")
    assert done.approved_by == "chen" and store.change_audit(LIVE)[0].reason == "go"


def test_promote_refuses_a_shadow_that_is_not_newer(cfg: Path, store: Store):
    same_version = live_text().replace(f"mapping: {LIVE}\n", f"mapping: {SHADOW}\nshadow_of: {LIVE}\n").replace(
        'north: "3000"', 'north: "3500"')
    (cfg / "mappings" / f"{SHADOW}.yaml").write_text(same_version, "utf-8")
    with pytest.raises(NotNewer, match="version 4, live crm-order-to-erp is version 4"):
        promote(store, cfg, LIVE, actor="wang", approved_by="liu")
    assert store.change_audit() == [] and 'north: "3000"' in (cfg / "mappings" / f"{LIVE}.yaml").read_text()


def test_a_shadow_that_does_not_compile_is_named_in_the_refusal(cfg: Path, store: Store):
    (cfg / "mappings" / f"{SHADOW}.yaml").write_text(shadow_text().replace("owner: sales-ops", "owner: ''"), "utf-8")
    with pytest.raises(NoShadow, match=f"{SHADOW}.yaml"):
        promote(store, cfg, LIVE, actor="wang")


def test_promote_needs_exactly_one_shadow(cfg: Path, store: Store):
    with pytest.raises(NoShadow, match="has no shadow"):
        promote(store, cfg, LIVE, actor="x")
    (cfg / "mappings" / "a.yaml").write_text(shadow_text().replace(SHADOW, "cand-a"), "utf-8")
    (cfg / "mappings" / "b.yaml").write_text(shadow_text().replace(SHADOW, "cand-b"), "utf-8")
    with pytest.raises(NoShadow, match="2 shadows"):
        promote(store, cfg, LIVE, actor="x")


def test_promoted_text_needs_a_plain_mapping_line():
    assert promoted_text("mapping: s  # new\nshadow_of: l\nversion: 2\n", "l") == "mapping: l  # new\nversion: 2\n"
    with pytest.raises(CannotRewrite):
        promoted_text("{mapping: s, shadow_of: l}\n", "l")


def test_rollback_restores_the_recorded_bytes_and_is_audited(cfg: Path, store: Store):
    path = cfg / "mappings" / f"{LIVE}.yaml"
    store.record_version(version_of_text(live_text(), str(path)))
    v5 = shadow_text().replace(f"mapping: {SHADOW}\nshadow_of: {LIVE}\n", f"mapping: {LIVE}\n")
    path.write_text(v5, "utf-8")
    store.record_version(version_of_text(v5, str(path)))
    done = rollback(store, cfg, LIVE, "4", actor="ops", reason="finance not ready")
    assert path.read_text("utf-8") == live_text() and (done.from_version, done.to_version) == (5, 4)
    [audit] = store.change_audit(LIVE)
    assert (audit.action, audit.actor, audit.approved_by, audit.reason) == ("rollback", "ops", None,
                                                                            "finance not ready")
    assert audit.details["from_hash"] == content_hash(v5)
    with pytest.raises(NothingToDo):
        rollback(store, cfg, LIVE, "4", actor="ops")
    with pytest.raises(VersionNotFound):
        rollback(store, cfg, LIVE, "7", actor="ops")
    assert len(store.change_audit(LIVE)) == 1


def test_rollback_repairs_a_broken_edit_but_never_overwrites_another_route(cfg: Path, store: Store):
    path = cfg / "mappings" / f"{LIVE}.yaml"
    store.record_version(version_of_text(live_text(), str(path)))
    path.write_text(live_text().replace("owner: sales-ops", "owner: [broken"), "utf-8")
    rollback(store, cfg, LIVE, "4", actor="ops")
    assert path.read_text("utf-8") == live_text()
    path.write_text(shadow_text().replace(f"shadow_of: {LIVE}\n", ""), "utf-8")   # now another mapping
    with pytest.raises(ChangeError, match="now holds mapping"):
        rollback(store, cfg, LIVE, "4", actor="ops")
