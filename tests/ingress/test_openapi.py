"""The OpenAPI description and /docs, against a real `syncbus run` (ingress/openapi.py, ingress/app.py).

schemathesis (a dev dependency) generates requests from the published spec
and checks the answers: no 5xx, no status, content type, header or body the
spec does not declare, schema-invalid requests refused. Bounded: 10 examples
per operation, a fixed seed, one worker.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.harness import Node, order, write_config

KEY = "openapi-key-5c1e"  # one key for both realms, so schemathesis can send one header
ST = str(Path(sys.executable).parent / "st")


@dataclass
class SpecNode(Node):
    def env(self) -> dict[str, str]:
        return {**super().env(), "E2E_KEYS": KEY, "SYNCBUS_ADMIN_KEYS": f"ops:{KEY}"}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpecNode]:
    root = tmp_path_factory.mktemp("spec")
    write_config(root, "http://127.0.0.1:9/nowhere", attempts=1)
    n = SpecNode(root, f"embedded://{root}/bus.db", f"sqlite:///{root}/store.db").start()
    yield n
    n.stop()


@pytest.fixture(scope="module")
def spec(node: SpecNode) -> dict[str, Any]:
    r = httpx.get(f"{node.url}/openapi.json", timeout=10)
    assert r.status_code == 200
    return r.json()


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, op in item.items():
            yield method.upper(), path, op


def test_every_operation_declares_its_error_statuses(spec: dict[str, Any]) -> None:
    for method, path, op in _operations(spec):
        declared = set(op["responses"])
        assert {"400", "431", "503"} <= declared, (method, path)
        if path.startswith("/ingress/"):
            assert {"401", "403", "404", "413", "415", "422"} <= declared
        elif path.startswith(("/dlq", "/trace", "/ledger", "/admin")):
            assert {"401", "403", "404"} <= declared, (method, path)
            if method in ("POST", "DELETE") and path.startswith("/dlq"):
                assert {"409", "422"} <= declared, (method, path)
        for status, response in op["responses"].items():
            if status >= "400":  # the one error schema, alone or (readyz's 503) beside another answer
                assert "#/components/responses/" in str(response) or "#/components/schemas/Error" in str(
                    response["content"]["application/json"]["schema"]), (method, path, status)
    assert "HTTPValidationError" not in str(spec)  # FastAPI's 422 shape: never sent


def test_errors_have_one_schema_and_keys_two_schemes(spec: dict[str, Any]) -> None:
    components = spec["components"]
    assert components["schemas"]["Error"]["required"] == ["error", "message", "status"]
    assert components["securitySchemes"] == {
        "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "Bearer": {"type": "http", "scheme": "bearer", "description": "the same key as a bearer token"},
    }
    ingress = spec["paths"]["/ingress/{source}"]["post"]
    assert ingress["security"] == [{}, {"ApiKey": []}, {"Bearer": []}]
    assert spec["paths"]["/dlq"]["get"]["security"] == [{"ApiKey": []}, {"Bearer": []}]


def test_ingress_bodies_and_bounded_parameters(spec: dict[str, Any]) -> None:
    body = spec["paths"]["/ingress/{source}"]["post"]["requestBody"]
    assert set(body["content"]) == {"application/json", "application/xml", "text/csv", "application/x-ndjson"}
    params = {p["name"]: p["schema"] for p in spec["paths"]["/dlq"]["get"]["parameters"]}
    assert (params["limit"]["minimum"], params["limit"]["maximum"]) == (1, 1000)
    assert (params["offset"]["minimum"], params["offset"]["maximum"]) == (0, 10**9)


def test_metrics_is_text_plain_in_the_spec_and_on_the_wire(spec: dict[str, Any], node: SpecNode) -> None:
    assert list(spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    r = httpx.get(f"{node.url}/metrics", timeout=5)
    assert r.headers["content-type"].startswith("text/plain")
    assert "syncbus_records_received_total" in r.text


# -- /docs offline -------------------------------------------------------------------------


def test_docs_reference_no_other_host_and_every_asset_is_served(node: SpecNode) -> None:
    r = httpx.get(f"{node.url}/docs", timeout=5)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert "http://" not in r.text and "https://" not in r.text and "//" not in r.text.replace("<!doctype", "")
    urls = re.findall(r'(?:src|href|data-spec)="([^"]+)"', r.text)
    assert any(u.endswith(".js") for u in urls) and any(u.endswith(".css") for u in urls)
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = httpx.get(f"{node.url}{url}", timeout=10)
        assert asset.status_code == 200, url
        assert len(asset.content) > 0
    assert httpx.get(f"{node.url}/docs/assets/swagger-ui-bundle.js", timeout=10).headers[
        "content-type"].startswith("text/javascript")
    missing = httpx.get(f"{node.url}/docs/assets/../../runtime.py", timeout=5)
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


# -- schemathesis --------------------------------------------------------------------------


def _dead_letter(node: SpecNode) -> tuple[str, str]:
    """A real dead letter (a record the mapping refuses), so the {id} operations reach real data."""
    r = node_post(node, order(1, order_id=None))
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        items = httpx.get(f"{node.url}/dlq", headers={"X-API-Key": KEY}, timeout=5).json()["items"]
        if items:
            return items[0]["id"], r.json()["id"]
        time.sleep(0.1)
    raise AssertionError("no dead letter appeared")


def node_post(node: SpecNode, record: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{node.url}/ingress/crm", json=record, headers={"X-API-Key": KEY}, timeout=10)


def _schemathesis(node: SpecNode, tmp_path: Path, parameters: dict[str, str], *headers: str) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text("[parameters]\n" + "".join(f'"{k}" = "{v}"\n' for k, v in parameters.items()))
    args = [ST, "--config-file", str(config), "--no-color", "run", f"{node.url}/openapi.json",
            "--checks", "all", "--exclude-checks", "positive_data_acceptance",
            "--max-examples", "10", "--workers", "1", "--seed", "7", "--request-timeout", "5", "--no-shrink"]
    for header in headers:
        args += ["-H", header]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert re.search(r"\d+ generated, \d+ passed", proc.stdout), proc.stdout[-2000:]
    assert "Traceback" not in node.tail(10_000)


def test_schemathesis_finds_nothing_with_keys(node: SpecNode, tmp_path: Path) -> None:
    dl_id, record_id = _dead_letter(node)
    _schemathesis(node, tmp_path, {"path.source": "crm", "path.dl_id": dl_id, "path.record_id": record_id},
                  f"X-API-Key: {KEY}")


def test_schemathesis_finds_nothing_without_keys(node: SpecNode, tmp_path: Path) -> None:
    _schemathesis(node, tmp_path, {"path.source": "crm"})
