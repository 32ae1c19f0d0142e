"""Real `syncbus run` processes for the security tests, over HTTP or HTTPS (tests/e2e/harness.py's Node).

``write_secure_config`` lays out one route (``sec.orders`` → an HTTP target) and the sources
the tests need: ``crm`` (API keys), ``restricted`` (``allow_ips``), ``limited``
(``rate_limit``), ``certified`` (``auth: {mtls: true}``, only on TLS nodes).
"""

from __future__ import annotations

import ssl
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.harness import Node

CRM_KEY = "crm-source-key-5d1e"
DEAD_TARGET = "http://127.0.0.1:9/nowhere"   # connection refused: every delivery fails


def write_secure_config(root: Path, *, target_url: str = DEAD_TARGET, attempts: int = 1, mtls: bool = False,
                        rate: str = "3/s", allow: str = "[127.0.0.1]") -> Path:
    (root / "mappings").mkdir(parents=True, exist_ok=True)
    (root / "connectors").mkdir(exist_ok=True)
    (root / "mappings" / "orders.yaml").write_text(textwrap.dedent("""\
        mapping: sec-orders
        version: 1
        owner: security-tests
        source: {topic: sec.orders}
        key: order_id
        target: {sink: erp, format: json}
        fields:
          VBELN: {from: order_id, required: true}
          SEQ: seq
          TEL: customer.phone
        """), encoding="utf-8")
    certified = textwrap.indent(textwrap.dedent("""\
        - name: certified
          type: http_ingress
          topic: sec.orders
          auth: {mtls: true}
        """), "  ") if mtls else ""
    (root / "connectors" / "sec.yaml").write_text(textwrap.dedent(f"""\
        sources:
          - name: crm
            type: http_ingress
            topic: sec.orders
            key: order_id
            auth: {{api_keys_env: SEC_CRM_KEYS}}
          - name: restricted
            type: http_ingress
            topic: sec.orders
            allow_ips: {allow}
          - name: limited
            type: http_ingress
            topic: sec.orders
            rate_limit: {rate}
        """) + certified + textwrap.dedent(f"""\
        sinks:
          - name: erp
            type: http
            url: {target_url}
            retry: {{attempts: {attempts}, initial: 20ms, max: 100ms}}
            timeout: 2s
        """), encoding="utf-8")
    return root


@dataclass
class SecureNode(Node):
    """A node with its own environment, optionally HTTPS (``ca``: the CA clients trust)."""

    extra_env: dict[str, str] = field(default_factory=dict)
    ca: Path | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.ca else 'http'}://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {**super().env(), "SEC_CRM_KEYS": CRM_KEY, **self.extra_env}

    def client(self, cert: tuple[Path, Path] | None = None, **kwargs: Any) -> httpx.Client:
        """A client that trusts the node's CA, presenting ``cert`` (certificate, key) if given."""
        if self.ca is not None:
            kwargs.setdefault("verify", tls_context(self.ca, cert))
        return httpx.Client(base_url=self.url, timeout=10, **kwargs)

    def start(self, timeout: float = 60.0) -> SecureNode:
        import subprocess

        from tests.e2e.harness import SYNCBUS

        self.log = self.config_dir / f"node-{self.port}.log"
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [SYNCBUS, "run", "--config-dir", str(self.config_dir), "--bus", self.bus, "--store", self.store,
             "--port", str(self.port), "--log-level", "warning", *self.extra_args],
            stdout=out, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True)
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"syncbus run exited with {self.proc.returncode}:\n{self.tail()}")
                try:
                    if client.get("/readyz", timeout=1).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        raise RuntimeError(f"syncbus run not ready within {timeout}s:\n{self.tail()}")

    def metric(self, name: str, **labels: str) -> float:
        with self.client() as client:
            text = client.get("/metrics").text
        total = 0.0
        for line in text.splitlines():
            head, _, value = line.rpartition(" ")
            if (head == name or head.startswith(name + "{")) and all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total


def tls_context(ca: Path, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    """A client context trusting only ``ca``, presenting ``cert`` if given."""
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


def from_address(address: str, node: SecureNode, **kwargs: Any) -> httpx.Client:
    """A client whose connections come from ``address`` (any 127.x.y.z works on loopback)."""
    transport = httpx.HTTPTransport(local_address=address,
                                    verify=tls_context(node.ca) if node.ca is not None else True)
    return httpx.Client(base_url=node.url, timeout=10, transport=transport, **kwargs)
