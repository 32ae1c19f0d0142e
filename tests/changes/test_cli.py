"""The change commands as a person types them: diff of files before anything ran, refusals, validation."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from syncbus.state import Store
from tests.changes.flow import LIVE, SHADOW, shadow_text, write_flow
from tests.e2e.harness import SYNCBUS


def run(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SYNCBUS, *args, "--config-dir", str(cfg)], capture_output=True, text=True, timeout=60)


def test_diff_of_the_live_file_and_its_shadow_needs_no_store(tmp_path: Path):
    cfg = write_flow(tmp_path / "config", "http://127.0.0.1:9")
    (cfg / "mappings" / f"{SHADOW}.yaml").write_text(shadow_text(), "utf-8")
    done = run(cfg, "diff", LIVE, "file", "shadow")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"{SHADOW}: version 4 -> 5"
    assert "~ shadow_of: (none) -> crm-order-to-erp" in done.stdout
    data = json.loads(run(cfg, "diff", LIVE, "file", "shadow", "--json").stdout)
    assert [c["path"] for c in data["field_changes"]] == ["IDOC.E1EDK01.VKORG"]
    assert not (cfg / "var").exists()                      # nothing was created


def test_commands_on_a_config_dir_that_never_ran_say_so(tmp_path: Path):
    cfg = write_flow(tmp_path / "config", "http://127.0.0.1:9")
    for args in (("versions", LIVE), ("diff", LIVE, "4", "5"), ("shadow", "report", LIVE), ("rollback", LIVE,
                                                                                            "--to", "4")):
        done = run(cfg, *args)
        assert done.returncode == 1 and "no syncbus state" in done.stderr, (args, done.stderr)


def test_unknown_route_and_no_results(tmp_path: Path):
    cfg = write_flow(tmp_path / "config", "http://127.0.0.1:9")
    store = f"sqlite:///{tmp_path}/store.db"
    Store(store).close()
    done = run(cfg, "versions", "nope", "--store", store)
    assert done.returncode == 1 and "no recorded versions of 'nope'" in done.stderr
    done = run(cfg, "shadow", "report", LIVE, "--store", store)
    assert done.returncode == 1 and "no shadow results" in done.stderr
    done = run(cfg, "promote", LIVE, "--store", store)
    assert done.returncode == 1 and "has no shadow" in done.stderr


def test_a_shadow_of_itself_is_refused_at_validation(tmp_path: Path):
    cfg = write_flow(tmp_path / "config", "http://127.0.0.1:9")
    path = cfg / "mappings" / "self.yaml"
    path.write_text(shadow_text().replace(f"shadow_of: {LIVE}", f"shadow_of: {SHADOW}"), "utf-8")
    done = subprocess.run([SYNCBUS, "validate", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "'shadow_of' names the mapping itself" in done.stdout
