"""``syncbus plugins`` and ``syncbus docs`` (cli/components.py), as the real command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SYNCBUS = str(Path(sys.executable).parent / "syncbus")
ROOT = Path(__file__).resolve().parents[2]


def syncbus(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SYNCBUS, *args], capture_output=True, text=True, timeout=120)


def test_plugins_lists_every_kind_with_options() -> None:
    run = syncbus("plugins")
    assert run.returncode == 0, run.stderr
    out = run.stdout
    for heading in ("sources", "sinks", "codecs", "transforms"):
        assert f"\n{heading}\n" in f"\n{out}"
    assert "  generate [beta]: Emit records" in out
    assert "      auth.api_keys (list of string, default [], secret: env only): Accepted keys" in out
    assert "  decimal(places): Number as text" in out
    codecs = json.loads(syncbus("plugins", "--kind", "codecs", "--json").stdout)
    assert [t["name"] for t in codecs["types"]] == ["csv", "json", "xml"] and codecs["broken"] == []


def test_docs_formats_and_errors() -> None:
    assert syncbus("docs").stdout == (ROOT / "docs" / "reference.md").read_text()
    schema = json.loads(syncbus("docs", "--format", "jsonschema").stdout)
    assert schema == json.loads((ROOT / "schemas" / "connectors.schema.json").read_text())
    [one] = json.loads(syncbus("docs", "transform/mask_phone", "--format", "json").stdout)
    assert one["kind"] == "transform" and one["signature"] == "mask_phone"
    bad = syncbus("docs", "http_ingres")
    assert bad.returncode == 1 and "no type named 'http_ingres' (did you mean 'http_ingress'?" in bad.stderr
    assert "--kind must be source, sink, codec or transform" in syncbus("plugins", "--kind", "route").stderr
