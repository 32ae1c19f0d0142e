"""A third-party package adds a source type and a sink type without touching syncbus.

The package is a real wheel (built here with the standard library, so the
test needs no build backend or network), installed by pip into its own
folder; the real ``syncbus`` command then sees the types through their entry
points once that folder is on PYTHONPATH -- and does not without it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

SYNCBUS = str(Path(sys.executable).parent / "syncbus")

MODULE = '''\
"""ACME's syncbus plugin: an ACME ERP poll source and an ACME archive sink."""

from typing import Any, ClassVar, Literal

from pydantic import Field

from syncbus.plugin import (BaseSink, Delivery, NewRecord, PollBatch, PollSource, PollSourceConfig, SinkConfig,
                            SourceConfig)


class AcmeConfig(PollSourceConfig):
    type: Literal["acme_poll"] = "acme_poll"
    endpoint: str = Field(description="ACME ERP API base URL.")
    api_token: str = Field(description="ACME API token.", json_schema_extra={"secret": True})


class AcmePoll(PollSource):
    """Poll ACME ERP for changed documents.

    Pages through /documents?since=CURSOR.
    """

    Config: ClassVar[type[SourceConfig]] = AcmeConfig
    status: ClassVar[Literal["stable", "beta", "experimental", "deprecated"]] = "beta"
    examples: ClassVar[list[dict[str, Any]]] = [
        {"name": "acme", "type": "acme_poll", "topic": "acme.docs", "endpoint": "https://acme.example",
         "api_token_env": "ACME_TOKEN"}]

    async def poll(self, cursor: Any, *, full: bool, limit: int) -> PollBatch:
        return PollBatch([NewRecord(b"{}")], cursor=(cursor or 0) + 1)


class ArchiveConfig(SinkConfig):
    type: Literal["acme_archive"] = "acme_archive"
    bucket: str = Field(description="Archive bucket.")


class AcmeArchive(BaseSink):
    """Archive every record in ACME's document store."""

    Config = ArchiveConfig

    async def send(self, delivery: Delivery) -> None:
        return None
'''

ENTRY_POINTS = """\
[syncbus.connectors]
acme_poll = syncbus_acme:AcmePoll

[syncbus.sinks]
acme_archive = syncbus_acme:AcmeArchive
"""


def build_wheel(folder: Path) -> Path:
    """``syncbus_acme-1.0-py3-none-any.whl``: the module, its metadata, entry points and RECORD."""
    dist = "syncbus_acme-1.0.dist-info"
    files = {
        "syncbus_acme/__init__.py": MODULE,
        f"{dist}/METADATA": "Metadata-Version: 2.1\nName: syncbus-acme\nVersion: 1.0\nRequires-Dist: syncbus\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: syncbus-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/entry_points.txt": ENTRY_POINTS,
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    wheel = folder / "syncbus_acme-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return wheel


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin installed by pip into a folder of its own."""
    root = tmp_path_factory.mktemp("acme")
    target = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
                    str(target), str(build_wheel(root))], check=True, capture_output=True, timeout=120)
    assert (target / "syncbus_acme-1.0.dist-info" / "entry_points.txt").exists()
    return target


def syncbus(*args: str, site: Path | None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return subprocess.run([SYNCBUS, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def test_the_new_types_are_listed_and_documented(site: Path) -> None:
    run = syncbus("plugins", "--json", site=site)
    assert run.returncode == 0, run.stderr
    types = {(t["kind"], t["name"]): t for t in json.loads(run.stdout)["types"]}
    acme = types[("source", "acme_poll")]
    assert (acme["origin"], acme["status"]) == ("syncbus_acme:AcmePoll", "beta")
    assert acme["summary"] == "Poll ACME ERP for changed documents."
    assert {"name": "api_token", "type": "string", "required": True, "default": None,
            "description": "ACME API token.", "secret": True} in acme["options"]
    assert types[("sink", "acme_archive")]["origin"] == "syncbus_acme:AcmeArchive"

    text = syncbus("plugins", "--kind", "sink", site=site)
    assert "acme_archive [plugin syncbus_acme:AcmeArchive]: Archive every record" in text.stdout
    doc = syncbus("docs", "acme_poll", site=site)
    assert doc.returncode == 0 and doc.stdout.startswith("## `acme_poll` (beta)")
    assert "| `api_token` | string | required | ACME API token. | yes |" in doc.stdout

    without = syncbus("plugins", "--json", site=None)  # syncbus itself was not changed
    assert "acme_poll" not in without.stdout


def test_the_new_types_are_validated(site: Path, tmp_path: Path) -> None:
    good = tmp_path / "acme.yaml"
    good.write_text(textwrap.dedent("""\
        sources:
          - {name: acme, type: acme_poll, topic: acme.docs, endpoint: "https://acme.example",
             api_token_env: ACME_TOKEN, interval: 5m}
        sinks:
          - {name: archive, type: acme_archive, bucket: erp-docs}
        """))
    run = syncbus("validate", str(good), site=site)
    assert (run.returncode, run.stdout.strip()) == (0, "ok: 1 file"), run.stdout + run.stderr
    assert syncbus("validate", str(good), site=None).returncode == 1  # unknown types without the plugin

    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""\
        sources:
          - name: acme
            type: acme_poll
            topic: acme.docs
            endpoint: "https://acme.example"
            api_token: s3cr3t
        sinks:
          - {name: archive, type: acme_archve, buckt: x}
        """))
    run = syncbus("validate", str(bad), site=site)
    assert run.returncode == 1
    assert run.stdout.splitlines() == [
        f"{bad}:6:5: secrets come from the environment only: use api_token_env: VAR",
        f"{bad}:8:21: unknown sink type 'acme_archve' (did you mean 'acme_archive'? known types: acme_archive, "
        "file, http, kafka, sql)",
    ]
    assert "s3cr3t" not in run.stdout + run.stderr
