"""End-to-end harness: real `syncbus run` processes, a real bus, a real HTTP target.

A ``Node`` is a `syncbus run` subprocess on a free port with a generated
config dir whose one route maps orders to JSON and delivers them to a
``TargetServer`` (tests/sinks/target_server.py). Tests talk to it only over
HTTP and the command line, as a user would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

SYNCBUS = str(Path(sys.executable).parent / "syncbus")
API_KEY = "e2e-key"
ADMIN_KEY = "e2e-admin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(root: Path, target_url: str, *, suffix: str = "", attempts: int = 4, initial: str = "20ms",
                 max_delay: str = "100ms", timeout: str = "2s") -> Path:
    """One route ``orders-to-erp<suffix>`` on topic ``e2e.orders<suffix>`` (unique per test on a shared Kafka)."""
    (root / "mappings").mkdir(parents=True, exist_ok=True)
    (root / "connectors").mkdir(exist_ok=True)
    (root / "mappings" / "orders.yaml").write_text(textwrap.dedent("""\
        mapping: orders-to-erp{suffix}
        version: 2
        owner: e2e
        source: {{topic: e2e.orders{suffix}}}
        when: record.status != "DRAFT"
        key: order_id
        target: {{sink: erp, format: json}}
        fields:
          VBELN: {{from: order_id, required: true}}
          SEQ: seq
          NETWR: {{from: amount, transform: "decimal(2)"}}
        """).format(suffix=suffix), encoding="utf-8")
    (root / "connectors" / "e2e.yaml").write_text(textwrap.dedent(f"""\
        sources:
          - name: crm
            type: http_ingress
            topic: e2e.orders{suffix}
            key: order_id
            auth: {{api_keys_env: E2E_KEYS}}
        sinks:
          - name: erp
            type: http
            url: {target_url}
            retry: {{attempts: {attempts}, initial: {initial}, max: {max_delay}}}
            timeout: {timeout}
        """), encoding="utf-8")
    return root


@dataclass
class Node:
    config_dir: Path
    bus: str
    store: str
    port: int = field(default_factory=free_port)
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {**os.environ, "E2E_KEYS": API_KEY, "SYNCBUS_ADMIN_KEYS": ADMIN_KEY, "SYNCBUS_ACTOR": "e2e-test"}

    def start(self, timeout: float = 60.0) -> Node:
        self.log = self.config_dir / f"node-{self.port}.log"
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [SYNCBUS, "run", "--config-dir", str(self.config_dir), "--bus", self.bus, "--store", self.store,
             "--port", str(self.port), "--log-level", "warning", *self.extra_args],
            stdout=out, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"syncbus run exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"syncbus run not ready within {timeout}s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text("utf-8", "replace").splitlines()[-lines:])

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise

    def post(self, client: httpx.Client, order: dict[str, Any], **headers: str) -> httpx.Response:
        return client.post(f"{self.url}/ingress/crm", json=order, headers={"X-API-Key": API_KEY, **headers})

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and line.split(" ")[0] != name:
                continue
            head, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([SYNCBUS, *args, "--config-dir", str(self.config_dir), "--bus", self.bus,
                               "--store", self.store], capture_output=True, text=True, env=self.env(), timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"syncbus {' '.join(args)} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
        return proc


def order(i: int, **extra: Any) -> dict[str, Any]:
    return {"order_id": f"SO-{i:06d}", "status": "APPROVED", "seq": i, "amount": i * 1.5, **extra}


def wait_until(predicate: Any, timeout: float = 30.0, interval: float = 0.05, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
